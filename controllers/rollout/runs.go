package rollout

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	corev1 "k8s.io/api/core/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// What a run is: the hash of the spec that defines what runs (the revision), the run a
// reconcile works on, and the stored entries read back with their runs.

// revisionLength is how many hex digits of the hash a revision keeps: short enough for
// labels and names, long enough that two revisions of one task never collide in practice.
const revisionLength = 10

// Revision returns the hash of the spec fields that define what runs on a node: the payload,
// env, identity, resources, pod metadata, service account, image pull secrets, priority class
// and rerunToken. Selection, rollout, newNodes, suspend, window, timeout, retries, reboot exit
// codes, the maintenance around a run (reboot, cordon, drain) and TTL are left out on purpose: changing them must not re-run nodes that have finished.
func Revision(spec *ntv1.NodeTaskSpec) string {
	in := spec.DeepCopy()
	in.NodeSelector, in.NodeNames, in.Tolerations = nil, nil, nil
	in.Rollout, in.NewNodes, in.Suspend = ntv1.RolloutSpec{}, "", false
	in.TimeoutSeconds, in.Retries, in.PodTTLSecondsAfterFinished = nil, nil, nil
	// How results are read and when nodes may start is not what runs either.
	in.Window, in.RebootExitCodes = nil, nil
	in.Reboot, in.RebootTimeoutSeconds, in.Cordon, in.Drain = "", nil, false, nil
	// A field added with a CRD default hashes as its default left out: the API server fills
	// the default into tasks stored before the field existed, and their revision must not
	// change with the upgrade (every node would run the task again).
	if in.Mode == ntv1.ModeApply {
		in.Mode = ""
	}
	// encoding/json sorts map keys and leaves out empty fields, so equal specs always hash
	// alike, and a field added to the API later does not change existing revisions.
	b, err := json.Marshal(in)
	if err != nil {
		// Every field is plain data; Marshal cannot fail on it.
		panic(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:revisionLength]
}

// CurrentRun returns the run a reconcile works on, and whether it starts now. A run is a
// run, not only a content hash: going back to content that ran before (a GitOps revert, an
// old rerunToken) starts a new run as any other change does.
func CurrentRun(st *ntv1.NodeTaskStatus, revision string) (run int64, isNew bool) {
	if st.Revision != revision || st.Run == 0 {
		return st.Run + 1, true
	}
	return st.Run, false
}

// storedEntries reads status.nodes into a map, filling in the runs that the stored form
// leaves out because they equal status.run. The entry of a node whose Node object was
// created after the entry's attempt started belongs to a machine that is gone (deleted and
// registered again under the same name: a reimage, a reused name) and is left out: the new
// machine starts afresh.
func storedEntries(st *ntv1.NodeTaskStatus, nodes map[string]*corev1.Node) map[string]ntv1.NodeStatus {
	m := make(map[string]ntv1.NodeStatus, len(st.Nodes))
	for _, e := range st.Nodes {
		e.Run = st.RunOf(&e)
		if n := nodes[e.Name]; n != nil && e.StartTime != nil && n.CreationTimestamp.After(e.StartTime.Time) {
			continue
		}
		m[e.Name] = e
	}
	return m
}
