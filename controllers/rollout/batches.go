package rollout

import (
	"sort"

	"k8s.io/apimachinery/pkg/util/intstr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// A run's first batch (spec.rollout.firstBatch) and the approval after it
// (pauseAfterFirstBatch, approvedRun):
//
//	First ──every first-batch node Succeeded, let go, settled──▶ (pause? AwaitingApproval ──approvedRun == run──▶) Rest
//	  └──a first-batch node Failed, no retry left──▶ FirstBatchFailed (Stalled)
//
// The batch's nodes are kept in status.rollout.firstBatch, so that it stays the same set
// through the run however the targets change; a node of it that is no longer a target is
// not waited for.

// batch is where a run stands with its first batch.
type batch struct {
	// names are the first batch's nodes, sorted; nil without rollout.firstBatch.
	names []string
	in    map[string]bool
	// done: every first-batch target succeeded and holds no slot any more.
	done bool
	// failed names the first-batch targets that failed with no retry left.
	failed []string
	// awaitingApproval: done, and the run waits for approvedRun (pauseAfterFirstBatch).
	awaitingApproval bool
	// approved: pauseAfterFirstBatch, and approvedRun names the run.
	approved bool
}

// holds reports whether the batch keeps a node from starting or being claimed now.
func (b *batch) holds(node string) bool {
	switch {
	case b.names == nil:
		return false
	case !b.done:
		return !b.in[node]
	}
	return b.awaitingApproval
}

// rest reports whether every target may start.
func (b *batch) rest() bool { return b.names == nil || (b.done && !b.awaitingApproval) }

// firstBatchNames returns the run's first batch: the stored one while the run goes on, else
// the first targets by name, as many as rollout.firstBatch says (rounded up, at least 1).
func firstBatchNames(task *ntv1.NodeTask, targets map[string]bool, newRun bool) []string {
	want := task.Spec.Rollout.FirstBatch
	if want == nil {
		return nil
	}
	if st := task.Status.Rollout; !newRun && st != nil && len(st.FirstBatch) > 0 {
		return st.FirstBatch
	}
	names := make([]string, 0, len(targets))
	for n := range targets {
		names = append(names, n)
	}
	sort.Strings(names)
	n, _ := intstr.GetScaledValueFromIntOrPercent(want, len(names), true)
	return names[:min(max(n, 1), len(names))]
}

// batchOf works out where the run stands with its first batch, from the pass's entries and
// the nodes that still hold a rollout slot (claimed, restarting, counting minReadySeconds).
func batchOf(task *ntv1.NodeTask, names []string, targets map[string]bool, run int64, entries []ntv1.NodeStatus,
	holding map[string]bool) batch {
	b := batch{names: names, in: make(map[string]bool, len(names)), done: true}
	if names == nil {
		return b
	}
	for _, n := range names {
		b.in[n] = true
	}
	seen := 0
	for i := range entries {
		e := &entries[i]
		if !b.in[e.Name] || !targets[e.Name] {
			continue
		}
		seen++
		switch {
		case e.Run == run && e.Phase == ntv1.NodeFailed:
			b.failed = append(b.failed, e.Name)
			b.done = false
		case e.Run != run || e.Phase != ntv1.NodeSucceeded || holding[e.Name]:
			b.done = false
		}
	}
	// A first-batch target without an entry has not started.
	if seen < countIn(names, targets) {
		b.done = false
	}
	r := &task.Spec.Rollout
	b.approved = r.PauseAfterFirstBatch && r.ApprovedRun == run
	b.awaitingApproval = b.done && r.PauseAfterFirstBatch && !b.approved
	return b
}

// countIn counts the names that are in the set.
func countIn(names []string, set map[string]bool) int {
	n := 0
	for _, name := range names {
		if set[name] {
			n++
		}
	}
	return n
}
