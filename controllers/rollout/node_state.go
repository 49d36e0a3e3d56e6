package rollout

import (
	"time"

	corev1 "k8s.io/api/core/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// The values one node's step is made of (node_step.go): where the node stands with the
// rollout's slots, why it does not start, and the one action it asks of the rollout.

// nodeStep is what one node's step decided.
type nodeStep struct {
	entry ntv1.NodeStatus
	// listed says whether the entry belongs in status.nodes: a target, a node holding a
	// slot, or one that ran the current run and still has a machine or pods.
	listed bool
	// slot is how the node stands with the rollout's slots (rollout.maxConcurrent).
	slot slotUse
	// action is the one thing the node asks the rollout to do in this pass.
	action nodeAction
	// deletes are pods of the node that may go: housekeeping beside the action.
	deletes []PodDeletion
	// pods counts the node's unfinished pods that still need a run's script ConfigMap.
	pods podCensus
	// requeue is when this node's step changes by itself; 0 for never.
	requeue time.Duration
}

func (s *nodeStep) after(wait time.Duration) {
	s.requeue = Soonest(s.requeue, max(wait, time.Millisecond))
}

// neverStarted reports whether the node has not started the given run and holds nothing:
// its entry would only say "Pending".
func (s *nodeStep) neverStarted(run int64) bool {
	return s.entry.Run == run && s.entry.Phase == ntv1.NodePending && s.entry.Attempts == 0 && s.slot == slotNone
}

// slotUse is how a node stands with the rollout's slots.
type slotUse int

const (
	// slotNone: the node holds no slot.
	slotNone slotUse = iota
	// slotPod: an unfinished pod of the node (of any run) holds a slot.
	slotPod
	// slotClaim: the task holds the node's claim, and the node's work (cordon, drain, run,
	// restart) is not done: from claim to release the node holds a slot, whatever it does.
	slotClaim
	// slotReleasing: the task still holds the node's claim, and the node's work is done;
	// the task is not Ready until it is let go.
	slotReleasing
	// slotSettling: the node's run succeeded and it counts rollout.minReadySeconds; the
	// next node waits for it.
	slotSettling
)

// podCensus counts what the node's unfinished pods still need.
type podCensus struct {
	// unstarted counts the node's pods of the current run that have not started: they
	// still need the run's script ConfigMap.
	unstarted int
	// otherRun: a pod of another run has not finished (it may need that run's ConfigMap).
	otherRun bool
}

// actionKind says what a node's action does.
type actionKind int

const (
	// actNone: the node asks for nothing (running, done, waiting, or held back).
	actNone actionKind = iota
	// actStart starts the node's next attempt, if a rollout slot is free.
	actStart
	// actClaim takes the node's claim (and cordons it), if a rollout slot is free; the
	// attempt starts in a later pass, which sees the claim.
	actClaim
	// actCordon cordons a node the task has claimed.
	actCordon
	// actDrain evicts pods from a node the task has claimed.
	actDrain
	// actStartClaimed starts the node's next attempt within the slot its claim holds.
	actStartClaimed
	// actRestart creates the pod that restarts the node after its run succeeded.
	actRestart
	// actReclaim takes back the claim of a node that must restart and lost its claim; it
	// needs no free slot, since the node never gave up its own.
	actReclaim
	// actRelease uncordons the node (if this claim cordoned it) and removes the claim.
	actRelease
)

// nodeAction is the one thing a node asks the rollout to do in one pass. Which field is
// set follows kind.
type nodeAction struct {
	kind actionKind
	// start is the attempt to start (actStart, actStartClaimed).
	start PodRequest
	// op is the change of the node's claim or schedulability (actClaim, actCordon,
	// actReclaim, actRelease).
	op NodeOp
	// evict are the pods to evict (actDrain).
	evict []*corev1.Pod
	// restart asks for the restart pod (actRestart).
	restart RebootRequest
}

// holdsClaimed reports whether the action is a claimed node's way to its run (cordon,
// drain, start): such a node is let go when the rollout stops before its run starts.
func (a nodeAction) holdsClaimed() bool {
	return a.kind == actCordon || a.kind == actDrain || a.kind == actStartClaimed
}

// startHold says why a node does not start its next attempt now.
type startHold int

const (
	// mayStart: nothing on the node holds the attempt back (the rollout's slots and gate
	// still decide).
	mayStart startHold = iota
	// holdNotTarget: the node is not a target of the current run.
	holdNotTarget
	// holdGone: the Node object is gone.
	holdGone
	// holdBusy: a pod of the task on the node has not finished: a node runs one at a time.
	holdBusy
	// holdBlocked: the node cannot run a pod now (tainted, unschedulable, not Ready); the
	// entry's reason says which.
	holdBlocked
	// holdDone: the current run's attempt is running, finished, or being restarted.
	holdDone
	// holdBackoff: the node waits for its retry's backoff to end.
	holdBackoff
	// For a task that cordons, drains or restarts its nodes, in the order they are met:
	// holdUnchecked: the task checks a node (spec.check) before it claims it, and this
	// node's check has no answer in this run yet: the check runs first, alone, in attempt 0.
	holdUnchecked
	// holdUnclaimed: the node is not claimed yet; the claim comes first.
	holdUnclaimed
	// holdClaimedElsewhere: another task holds the node's claim (NodeBusy).
	holdClaimedElsewhere
	// holdUncordoned: the task cordons its nodes and this one is still schedulable.
	holdUncordoned
	// holdUndrained: pods are left to evict before the run's first attempt.
	holdUndrained
)

// startVerdict answers "should this node start its next attempt now?".
type startVerdict struct {
	hold startHold
	// request is the attempt the node would start: set for mayStart and for the holds of
	// the maintenance before it (holdUnchecked, whose request is the check's attempt 0,
	// holdUnclaimed, holdUncordoned, holdUndrained).
	request PodRequest
	// wait is how long until the backoff ends (holdBackoff).
	wait time.Duration
}

// nodeInput is everything one node's decision looks at.
type nodeInput struct {
	name string
	// node is nil when the Node object is gone.
	node   *corev1.Node
	target bool
	// stored is the node's entry in the stored status (with its run filled in), or nil.
	stored *ntv1.NodeStatus
	// pods are the task's pods bound to this node name.
	pods []*corev1.Pod
	// drain is what the node's drain sees, when the task drains and the node is draining.
	drain *DrainObservation
	// staleClaim: the node's claim names a task that no longer exists.
	staleClaim bool
}
