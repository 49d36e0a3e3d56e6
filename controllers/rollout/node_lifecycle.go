package rollout

import (
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// The lifecycle of one node in one run, decided from the node, its stored entry and its pods:
//
//	Pending ──start──▶ Running ──exit 0──────────────▶ Succeeded
//	   ▲                  │──exit ≠ 0, Timeout, lost──▶ Failed
//	   └──backoff ends── Pending(RetryBackoff) ◀──retries left──┘
//
// Rules that keep "exactly once per node" true:
//   - A final result stored for an attempt (Succeeded, Failed, or a failure waiting for its
//     retry) is never rewritten, and a pod of an earlier attempt never replaces it.
//   - A pod counts only for the run (number and revision) and the machine (Node UID) it was
//     made for.
//   - A pod is deleted only once its result is stored, except a superseded pod that never
//     started (it has no result) and the pods of a machine that is gone.
//   - A node runs at most one pod at a time.

const (
	// deadlineGrace is how long past timeoutSeconds the operator waits for the kubelet to
	// stop a pod before it records a Timeout itself and deletes the pod: a kubelet that
	// cannot be reached enforces nothing.
	deadlineGrace = time.Minute
	// deletionGrace is how long a pod being deleted may hold its rollout slot past its
	// deletion deadline; after that its node is taken to be unreachable, and the pod is
	// deleted at once.
	deletionGrace = time.Minute
)

// lifecycle holds what the per-node decisions share in one reconcile.
type lifecycle struct {
	rebootCodes []int32
	run         int64
	revision    string
	retries     int32
	timeout     time.Duration
	ttl         *time.Duration
	tolerations []corev1.Toleration
	now         time.Time
	maint       maintenance
}

func newLifecycle(task *ntv1.NodeTask, run int64, revision string, now time.Time) *lifecycle {
	lc := &lifecycle{run: run, revision: revision, timeout: ntv1.DefaultTimeoutSeconds * time.Second, tolerations: task.Spec.Tolerations, now: now,
		rebootCodes: task.Spec.RebootExitCodes, maint: newMaintenance(task)}
	if task.Spec.Retries != nil {
		lc.retries = *task.Spec.Retries
	}
	if task.Spec.TimeoutSeconds != nil {
		lc.timeout = time.Duration(*task.Spec.TimeoutSeconds) * time.Second
	}
	if task.Spec.PodTTLSecondsAfterFinished != nil {
		ttl := time.Duration(*task.Spec.PodTTLSecondsAfterFinished) * time.Second
		lc.ttl = &ttl
	}
	return lc
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

// nodeDecision is what the lifecycle decided for one node.
type nodeDecision struct {
	entry ntv1.NodeStatus
	// keep says whether the entry belongs in status.nodes.
	keep bool
	// inFlight: a pod of the node holds a rollout slot.
	inFlight bool
	// ask is what the node asks of the rollout in this pass; request is the attempt it
	// would start.
	ask     slotAsk
	request PodRequest
	deletes []PodDeletion
	// unstarted counts the node's pods of the current run that have not started.
	unstarted int
	// otherRunInFlight: a pod of another run has not finished.
	otherRunInFlight bool
	// requeue is when this node's decision changes by itself; 0 for never.
	requeue time.Duration

	// For a task that claims its nodes (maintenance.go):
	// ops change the node's claim or schedulability.
	ops []NodeOp
	// evict are the node's pods its drain evicts.
	evict []*corev1.Pod
	// reboot asks for the pod that restarts the node.
	reboot *RebootRequest
	// releasing: the node's work is done, and this task still holds its claim.
	releasing bool
}

// slotAsk is what one node asks of the rollout's slots in one pass.
type slotAsk int

const (
	// askNothing: the node starts nothing now (running, done, waiting, or held back).
	askNothing slotAsk = iota
	// askStart: the node may start its attempt now, if a rollout slot is free.
	askStart
	// askClaim: the node asks for its claim (a task that cordons, drains or restarts),
	// which takes a rollout slot if one is free; it starts in a later pass.
	askClaim
	// askStartClaimed: the node starts its attempt now, within the slot its claim holds.
	askStartClaimed
)

// starting reports whether the node starts an attempt in this pass.
func (a slotAsk) starting() bool { return a == askStart || a == askStartClaimed }

// holding reports whether the node holds its claim while waiting to start an attempt
// (cordoned, draining, or about to start): such a node is let go when the rollout stops.
func (d *nodeDecision) holding() bool {
	return d.ask == askStartClaimed || len(d.evict) > 0 || slices.ContainsFunc(d.ops, func(op NodeOp) bool { return op.Kind == OpCordon })
}

// neverStarted reports whether the node has not started the given run and holds nothing:
// its entry would only say "Pending".
func (d *nodeDecision) neverStarted(run int64) bool {
	return d.entry.Run == run && d.entry.Phase == ntv1.NodePending && d.entry.Attempts == 0 && !d.inFlight
}

func (d *nodeDecision) after(wait time.Duration) {
	d.requeue = Soonest(d.requeue, max(wait, time.Millisecond))
}

// decide runs one node's lifecycle one step.
func (lc *lifecycle) decide(in nodeInput) nodeDecision {
	var d nodeDecision
	gone := in.node == nil
	ready := !gone && NodeReady(in.node)

	// Pods made for another machine under this name are the old machine's: they never count.
	var mine []*corev1.Pod
	for _, pod := range in.pods {
		if !gone && in.node.UID != "" && ntv1.PodNodeUID(pod) != "" && ntv1.PodNodeUID(pod) != string(in.node.UID) {
			if pod.DeletionTimestamp == nil {
				d.deletes = append(d.deletes, PodDeletion{Pod: pod, Force: true, Why: "its machine was replaced"})
			}
			continue
		}
		mine = append(mine, pod)
	}

	var cur *corev1.Pod    // the latest attempt of the current run
	var reboot *corev1.Pod // the current run's restart pod
	busy := false          // a pod of the node has not finished: the node starts nothing else
	attempts := mine[:0:0] // the run pods, without the restart pods
	for _, pod := range mine {
		if ntv1.IsRebootPod(pod) && !PodFinished(pod) && lc.recorded(in.stored, pod) {
			// The node came back and its result is stored: a restart pod the kubelet never
			// reported finished no longer holds the node (its deadline deletes it).
			continue
		}
		if !PodFinished(pod) {
			busy = true
			if lc.holdsSlot(pod, gone, ready) {
				d.inFlight = true
			}
			if !lc.isCurrent(pod) {
				d.otherRunInFlight = true
			} else if podUnstarted(pod) && !ntv1.IsRebootPod(pod) {
				d.unstarted++
			}
		}
		if ntv1.IsRebootPod(pod) {
			if lc.isCurrent(pod) {
				reboot = pod
			}
			continue
		}
		attempts = append(attempts, pod)
		if lc.isCurrent(pod) && (cur == nil || ntv1.PodAttempt(pod) > ntv1.PodAttempt(cur)) {
			cur = pod
		}
	}

	blocked := "" // why the node cannot start an attempt now
	if !gone {
		blocked = nodeBlocked(in.node, lc.tolerations)
	}
	in.pods = attempts
	e := lc.entry(in, cur, gone, ready, &d)
	current := e.Run == lc.run
	if current && !gone {
		e = lc.retryState(e)
	}
	if current && e.Phase == ntv1.NodePending && e.Reason != ntv1.NodeReasonRetryBackoff {
		e.Reason = blocked
	}
	d.entry = e
	d.keep = in.target || d.inFlight || (current && e.Attempts > 0 && (!gone || len(in.pods) > 0))

	lc.deletions(in, mine, ready, &d)
	lc.startable(in, busy, gone, blocked, &d)
	if lc.maint.claims {
		lc.maint.maintain(lc, maintainInput{nodeInput: in, busy: busy, reboot: reboot,
			storedFinal: in.stored != nil && in.stored.Run == lc.run && isFinal(in.stored)}, &d)
		d.keep = d.keep || d.inFlight
	}
	return d
}

// startable decides whether the node may start its next attempt now, if a slot is free.
func (lc *lifecycle) startable(in nodeInput, busy, gone bool, blocked string, d *nodeDecision) {
	if !in.target || busy || gone || blocked != "" {
		return
	}
	e := &d.entry
	req := PodRequest{Node: in.name, NodeUID: in.node.UID, Attempt: 1}
	if e.Run != lc.run {
		d.ask, d.request = askStart, req
		return
	}
	if e.Phase != ntv1.NodePending {
		return
	}
	if e.Reason == ntv1.NodeReasonRetryBackoff && e.FinishTime != nil {
		if wait := e.FinishTime.Add(retryDelay(e.Attempts)).Sub(lc.now); wait > 0 {
			d.after(wait)
			return
		}
	}
	req.Attempt = e.Attempts + 1
	d.ask, d.request = askStart, req
}

// entry works out the node's entry from its stored entry and the current run's latest pod.
func (lc *lifecycle) entry(in nodeInput, cur *corev1.Pod, gone, ready bool, d *nodeDecision) ntv1.NodeStatus {
	prev := in.stored
	prevCurrent := prev != nil && prev.Run == lc.run
	switch {
	case prevCurrent && isFinal(prev) && (cur == nil || ntv1.PodAttempt(cur) <= prev.Attempts):
		// A stored final result is never rewritten, and an older pod never replaces it.
		return *prev
	case cur != nil && (!prevCurrent || ntv1.PodAttempt(cur) >= prev.Attempts):
		e := lc.result(cur, gone)
		e.Run = lc.run
		if e.Phase == ntv1.NodeRunning && cur.DeletionTimestamp == nil {
			deadline := lc.deadline(cur)
			if !lc.now.Before(deadline) {
				return lc.timedOut(e, deadline, ready)
			}
			d.after(deadline.Sub(lc.now))
		}
		return e
	case prevCurrent && prev.Phase == ntv1.NodeRunning:
		// The pod of a running attempt is gone, and no one recorded how it ended.
		return lostAttempt(*prev, gone, lc.now)
	case prev != nil:
		// This run's pending entry, or an earlier run's result shown until the node starts
		// this run; that run's pod may still be running.
		e := *prev
		if !isFinal(prev) {
			switch pod := findPod(in.pods, prev.Run, prev.Attempts); {
			case pod != nil:
				e = lc.result(pod, gone)
				e.Run = prev.Run
			case prev.Phase == ntv1.NodeRunning:
				e = lostAttempt(e, gone, lc.now)
			}
		}
		return e
	default:
		return ntv1.NodeStatus{Name: in.name, Phase: ntv1.NodePending, Run: lc.run}
	}
}

// result reads an attempt's entry from its pod; an exit code of spec.rebootExitCodes is a
// success that needs a reboot.
func (lc *lifecycle) result(pod *corev1.Pod, gone bool) ntv1.NodeStatus {
	e := podResult(pod, gone, lc.now)
	if e.Phase == ntv1.NodeFailed && e.Reason == ntv1.NodeReasonError && e.ExitCode != nil && slices.Contains(lc.rebootCodes, *e.ExitCode) {
		e.Phase, e.Reason = ntv1.NodeSucceeded, ntv1.NodeReasonRebootRequired
	}
	return e
}

// started is the entry of an attempt whose pod apply created (or found to exist).
func (lc *lifecycle) started(a StartedAttempt) ntv1.NodeStatus {
	return ntv1.NodeStatus{Name: a.Node, Phase: ntv1.NodeRunning, Run: lc.run, Attempts: a.Attempt, StartTime: &metav1.Time{Time: a.At}}
}

// rejected is the entry of an attempt whose pod the API server refused: a failed attempt,
// retried like any other.
func (lc *lifecycle) rejected(a RejectedAttempt) ntv1.NodeStatus {
	return lc.retryState(ntv1.NodeStatus{
		Name: a.Node, Phase: ntv1.NodeFailed, Reason: ntv1.NodeReasonPodRejected, Run: lc.run,
		Attempts: a.Attempt, Output: tailOutput(a.Message, maxOutputBytes), FinishTime: &metav1.Time{Time: lc.now},
	})
}

// retryState turns a failure with retries left into a wait for the retry, and a wait for a
// retry that is no longer allowed (retries was lowered) back into the failure.
func (lc *lifecycle) retryState(e ntv1.NodeStatus) ntv1.NodeStatus {
	switch {
	case e.Phase == ntv1.NodeFailed && e.Attempts <= lc.retries && !maintenanceFailures[e.Reason]:
		e.Phase, e.Reason = ntv1.NodePending, ntv1.NodeReasonRetryBackoff
	case e.Phase == ntv1.NodePending && e.Reason == ntv1.NodeReasonRetryBackoff && e.Attempts > lc.retries:
		// The failure's own reason was replaced by RetryBackoff when it was stored; its
		// exit code and output are still there.
		e.Phase, e.Reason = ntv1.NodeFailed, ntv1.NodeReasonError
	}
	return e
}

// maintenanceFailures are failures of the work around a run, not of the run: running the
// script again would not help.
var maintenanceFailures = map[string]bool{
	ntv1.NodeReasonDrainTimeout:  true,
	ntv1.NodeReasonRebootTimeout: true,
	ntv1.NodeReasonRebootFailed:  true,
}

// deadline is when the operator stops waiting for the kubelet to end an attempt.
func (lc *lifecycle) deadline(pod *corev1.Pod) time.Time {
	start := pod.CreationTimestamp.Time
	if pod.Status.StartTime != nil && pod.Status.StartTime.After(start) {
		start = pod.Status.StartTime.Time
	}
	return start.Add(lc.timeout + deadlineGrace)
}

// timedOut records an attempt the kubelet did not stop at its deadline.
func (lc *lifecycle) timedOut(e ntv1.NodeStatus, at time.Time, ready bool) ntv1.NodeStatus {
	why := "the kubelet did not stop it"
	if !ready {
		why = "its node is not Ready, so the kubelet could not stop it"
	}
	e.Phase, e.Reason, e.ExitCode = ntv1.NodeFailed, ntv1.NodeReasonTimeout, nil
	e.FinishTime = &metav1.Time{Time: at}
	e.Output = fmt.Sprintf("the attempt ran past timeoutSeconds (%ds) and %s; the operator recorded a timeout and deleted the pod",
		int(lc.timeout/time.Second), why)
	return e
}

// deletions queues the node's pods that may go.
func (lc *lifecycle) deletions(in nodeInput, mine []*corev1.Pod, ready bool, d *nodeDecision) {
	for _, pod := range mine {
		finished := PodFinished(pod)
		if pod.DeletionTimestamp != nil {
			// A graceful deletion that no kubelet confirms (an unreachable node) is finished at once.
			if !finished && !ready && lc.now.After(pod.DeletionTimestamp.Add(deletionGrace)) {
				d.deletes = append(d.deletes, PodDeletion{Pod: pod, Force: true, Why: "its node did not confirm the deletion"})
			}
			continue
		}
		if !finished && !lc.isCurrent(pod) && podUnstarted(pod) {
			// Superseded before it started: it has no result to keep, and it would hold a
			// rollout slot until its timeout (an image that never pulls).
			d.deletes = append(d.deletes, PodDeletion{Pod: pod, Force: !ready, Why: "superseded by a new run before it started"})
			continue
		}
		if !lc.recorded(in.stored, pod) {
			continue // never delete a pod before its result is safe in the stored status
		}
		switch {
		case in.node == nil:
			d.deletes = append(d.deletes, PodDeletion{Pod: pod, Force: true, Why: "its node was deleted"})
		case !finished && !lc.now.Before(lc.deadline(pod)):
			d.deletes = append(d.deletes, PodDeletion{Pod: pod, Force: !ready, Why: "it ran past its deadline"})
		case finished && lc.ttl != nil:
			if wait := podFinishTime(pod).Add(*lc.ttl).Sub(lc.now); wait > 0 {
				d.after(wait)
			} else {
				d.deletes = append(d.deletes, PodDeletion{Pod: pod, Why: "podTTLSecondsAfterFinished ran out"})
			}
		}
	}
}

// recorded reports whether the stored entry already accounts for the pod: it holds that
// attempt's final result or a later attempt, or the pod belongs to another run whose result
// the entry does not wait for.
func (lc *lifecycle) recorded(stored *ntv1.NodeStatus, pod *corev1.Pod) bool {
	run, attempt := ntv1.PodRun(pod), ntv1.PodAttempt(pod)
	if run == lc.run && !lc.isCurrent(pod) {
		return true // made for this run number with other content, by a write that was lost
	}
	if stored == nil || stored.Run != run {
		return run != lc.run
	}
	return stored.Attempts > attempt || (stored.Attempts == attempt && isFinal(stored))
}

// holdsSlot reports whether an unfinished pod counts against rollout.maxConcurrent. A pod
// of a deleted node, whose deletion no kubelet confirms, or that ran past the operator's
// deadline on a node that is not Ready, does not: an unreachable node must not stall the rollout.
func (lc *lifecycle) holdsSlot(pod *corev1.Pod, gone, ready bool) bool {
	if gone || (!ready && !lc.now.Before(lc.deadline(pod))) {
		return false
	}
	if pod.DeletionTimestamp != nil {
		return ready && lc.now.Before(pod.DeletionTimestamp.Add(deletionGrace))
	}
	return true
}

// isCurrent reports whether the pod was made for the current run: its number and its content.
func (lc *lifecycle) isCurrent(pod *corev1.Pod) bool {
	return ntv1.PodRun(pod) == lc.run && ntv1.PodRevision(pod) == lc.revision
}

// isFinal reports whether a stored entry holds the final result of its attempt.
func isFinal(e *ntv1.NodeStatus) bool {
	return e.Phase == ntv1.NodeSucceeded || e.Phase == ntv1.NodeFailed ||
		(e.Phase == ntv1.NodePending && e.Reason == ntv1.NodeReasonRetryBackoff)
}

// lostAttempt records an attempt whose pod disappeared before it finished.
func lostAttempt(e ntv1.NodeStatus, nodeGone bool, at time.Time) ntv1.NodeStatus {
	e.Phase, e.Reason, e.ExitCode = ntv1.NodeFailed, ntv1.NodeReasonPodDeleted, nil
	if nodeGone {
		e.Reason = ntv1.NodeReasonNodeLost
	}
	e.FinishTime = &metav1.Time{Time: at}
	return e
}

func findPod(pods []*corev1.Pod, run int64, attempt int32) *corev1.Pod {
	for _, pod := range pods {
		if ntv1.PodRun(pod) == run && ntv1.PodAttempt(pod) == attempt {
			return pod
		}
	}
	return nil
}

func PodFinished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// podUnstarted reports whether the pod's process has not started: it is still pending
// (waiting for the kubelet, an image or a volume).
func podUnstarted(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodPending || pod.Status.Phase == ""
}
