package rollout

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

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
