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

// Retry backoff: 10s after the first failure, doubling, at most 5 minutes.
const (
	retryBaseDelay = 10 * time.Second
	retryMaxDelay  = 5 * time.Minute
)

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
	// check is spec.check's rule, or nil for a task without a check.
	check *checkRule
}

// checkRule is how a task with spec.check reads and orders its checks.
type checkRule struct {
	// nonCompliant is the exit code by which the check says "fix me".
	nonCompliant int32
	// audit: mode Audit, the check alone, nothing changed.
	audit bool
	// first: the task claims its nodes, so a node's check runs alone (attempt 0) before the
	// claim, and the fix (attempts 1 and on) only on a node found non-compliant. The
	// stepper sets it (it knows the maintenance).
	first bool
}

// newCheckRule returns the task's check rule, or nil without spec.check.
func newCheckRule(task *ntv1.NodeTask) *checkRule {
	c := task.Spec.Check
	if c == nil {
		return nil
	}
	r := &checkRule{nonCompliant: ntv1.DefaultNonCompliantExitCode, audit: task.Spec.Mode == ntv1.ModeAudit}
	if c.NonCompliantExitCode != nil {
		r.nonCompliant = *c.NonCompliantExitCode
	}
	return r
}

func newLifecycle(task *ntv1.NodeTask, run int64, revision string, now time.Time) *lifecycle {
	lc := &lifecycle{run: run, revision: revision, timeout: ntv1.DefaultTimeoutSeconds * time.Second, tolerations: task.Spec.Tolerations, now: now,
		rebootCodes: task.Spec.RebootExitCodes, check: newCheckRule(task)}
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

// runEntry works out the node's entry from its stored entry and the current run's latest pod.
// The duration returned is when the entry changes by itself (a running attempt's deadline); 0 for never.
func (lc *lifecycle) runEntry(in nodeInput, cur *corev1.Pod, attempts []*corev1.Pod, gone, ready bool) (ntv1.NodeStatus, time.Duration) {
	prev := in.stored
	prevCurrent := prev != nil && prev.Run == lc.run
	switch {
	case prevCurrent && isFinal(prev) && (cur == nil || ntv1.PodAttempt(cur) <= prev.Attempts):
		// A stored final result is never rewritten, and an older pod never replaces it.
		return *prev, 0
	case cur != nil && (!prevCurrent || ntv1.PodAttempt(cur) >= prev.Attempts):
		e := lc.result(cur, gone)
		e.Run = lc.run
		if e.Phase == ntv1.NodeRunning && cur.DeletionTimestamp == nil {
			deadline := lc.deadline(cur)
			if !lc.now.Before(deadline) {
				return lc.timedOut(e, deadline, ready), 0
			}
			return e, deadline.Sub(lc.now)
		}
		return e, 0
	case prevCurrent && prev.Phase == ntv1.NodeRunning:
		// The pod of a running attempt is gone, and no one recorded how it ended.
		return lostAttempt(*prev, gone, lc.now), 0
	case prev != nil:
		// This run's pending entry, or an earlier run's result shown until the node starts
		// this run; that run's pod may still be running.
		e := *prev
		if !isFinal(prev) {
			switch pod := findPod(attempts, prev.Run, prev.Attempts); {
			case pod != nil:
				e = lc.result(pod, gone)
				e.Run = prev.Run
			case prev.Phase == ntv1.NodeRunning:
				e = lostAttempt(e, gone, lc.now)
			}
		}
		return e, 0
	default:
		return ntv1.NodeStatus{Name: in.name, Phase: ntv1.NodePending, Run: lc.run}, 0
	}
}

// result reads an attempt's entry from its pod; an exit code of spec.rebootExitCodes is a
// success that needs a reboot.
func (lc *lifecycle) result(pod *corev1.Pod, gone bool) ntv1.NodeStatus {
	e := podResult(pod, gone, lc.now)
	if lc.check != nil && PodFinished(pod) {
		if steps, ok := podSteps(pod); ok {
			return lc.judge(e, steps)
		}
	}
	if e.Phase == ntv1.NodeFailed && e.Reason == ntv1.NodeReasonError && e.ExitCode != nil && slices.Contains(lc.rebootCodes, *e.ExitCode) {
		e.Phase, e.Reason = ntv1.NodeSucceeded, ntv1.NodeReasonRebootRequired
	}
	return e
}

// judge turns the steps a check pod reported into the node's entry:
//
//	check 0                                  Succeeded, Compliant (nothing ran)
//	check nonCompliant, no fix (Check mode)  Audit: Succeeded, NonCompliant
//	                                         attempt 0: Pending, NonCompliant (claim, then fix)
//	  fix failed (not 0, not a reboot code)  Failed (Error, the fix's code), NonCompliant
//	  recheck 0                              Succeeded, Remediated (RebootRequired on 3010)
//	  recheck nonCompliant                   Failed (StillNonCompliant), NonCompliant
//	  recheck other                          Failed (CheckFailed), NonCompliant
//	check other                              Failed (CheckFailed), compliance unknown
func (lc *lifecycle) judge(e ntv1.NodeStatus, s checkSteps) ntv1.NodeStatus {
	fail := func(reason string, code int32, c ntv1.Compliance) ntv1.NodeStatus {
		e.Phase, e.Reason, e.ExitCode, e.Compliance = ntv1.NodeFailed, reason, ptrInt32(code), c
		return e
	}
	e.Phase, e.Reason, e.ExitCode = ntv1.NodeSucceeded, "", nil
	switch check := *s.check; {
	case check == 0:
		e.Compliance = ntv1.Compliant
	case check != lc.check.nonCompliant:
		return fail(ntv1.NodeReasonCheckFailed, check, "")
	case s.fix == nil:
		e.Compliance = ntv1.NonCompliant
		if !lc.check.audit {
			// The check before the claim: the fix comes once the node is claimed.
			e.Phase = ntv1.NodePending
		}
	case *s.fix != 0 && !slices.Contains(lc.rebootCodes, *s.fix):
		return fail(ntv1.NodeReasonError, *s.fix, ntv1.NonCompliant)
	case s.recheck == nil:
		// The wrapper always re-checks after a fix that succeeded: a message without the
		// re-check is not the wrapper's.
		return fail(ntv1.NodeReasonInterrupted, *s.fix, ntv1.NonCompliant)
	case *s.recheck == lc.check.nonCompliant:
		return fail(ntv1.NodeReasonStillNonCompliant, *s.recheck, ntv1.NonCompliant)
	case *s.recheck != 0:
		return fail(ntv1.NodeReasonCheckFailed, *s.recheck, ntv1.NonCompliant)
	default:
		e.Compliance = ntv1.Remediated
		if *s.fix != 0 {
			e.Reason, e.ExitCode = ntv1.NodeReasonRebootRequired, ptrInt32(*s.fix)
		}
	}
	return e
}

// started is the entry of an attempt whose pod apply created (or found to exist).
// A fix keeps the compliance its node's check found before it.
func (lc *lifecycle) started(a StartedAttempt, before ntv1.NodeStatus) ntv1.NodeStatus {
	e := ntv1.NodeStatus{Name: a.Node, Phase: ntv1.NodeRunning, Run: lc.run, Attempts: a.Attempt, StartTime: &metav1.Time{Time: a.At}}
	if before.Run == lc.run {
		e.Compliance = before.Compliance
	}
	return e
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
	case e.Phase == ntv1.NodeFailed && e.Attempts >= 1 && e.Attempts <= lc.retries && !maintenanceFailures[e.Reason]:
		// Attempt 0, the check before a claim, is not retried: a check that cannot run
		// needs a person.
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

// deletions returns the node's pods that may go, and when the next one may (a TTL runs
// out); 0 for never.
func (lc *lifecycle) deletions(in nodeInput, mine []*corev1.Pod, ready bool) (dels []PodDeletion, next time.Duration) {
	for _, pod := range mine {
		finished := PodFinished(pod)
		if pod.DeletionTimestamp != nil {
			// A graceful deletion that no kubelet confirms (an unreachable node) is finished at once.
			if !finished && !ready && lc.now.After(pod.DeletionTimestamp.Add(deletionGrace)) {
				dels = append(dels, PodDeletion{Pod: pod, Force: true, Why: "its node did not confirm the deletion"})
			}
			continue
		}
		if !finished && !lc.isCurrent(pod) && podUnstarted(pod) {
			// Superseded before it started: it has no result to keep, and it would hold a
			// rollout slot until its timeout (an image that never pulls).
			dels = append(dels, PodDeletion{Pod: pod, Force: !ready, Why: "superseded by a new run before it started"})
			continue
		}
		if !lc.recorded(in.stored, pod) {
			continue // never delete a pod before its result is safe in the stored status
		}
		switch {
		case in.node == nil:
			dels = append(dels, PodDeletion{Pod: pod, Force: true, Why: "its node was deleted"})
		case !finished && !lc.now.Before(lc.deadline(pod)):
			dels = append(dels, PodDeletion{Pod: pod, Force: !ready, Why: "it ran past its deadline"})
		case finished && lc.ttl != nil:
			if wait := podFinishTime(pod).Add(*lc.ttl).Sub(lc.now); wait > 0 {
				next = Soonest(next, wait)
			} else {
				dels = append(dels, PodDeletion{Pod: pod, Why: "podTTLSecondsAfterFinished ran out"})
			}
		}
	}
	return dels, next
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

func findPod(pods []*corev1.Pod, run int64, attempt int32) *corev1.Pod {
	for _, pod := range pods {
		if ntv1.PodRun(pod) == run && ntv1.PodAttempt(pod) == attempt {
			return pod
		}
	}
	return nil
}

// retryDelay is the backoff before the attempt after the given one.
func retryDelay(attempts int32) time.Duration {
	d := retryBaseDelay
	for i := int32(1); i < attempts && d < retryMaxDelay; i++ {
		d *= 2
	}
	return min(d, retryMaxDelay)
}

// settling reports whether a node whose run succeeded still counts rollout.minReadySeconds,
// and how long until it is done (0 while it is down: its Ready change wakes the task). It
// counts from the result (for a restarted node, when it came back Ready with its new boot
// ID), or from when it last became Ready after that; a node that went down before it was
// done keeps counting once it is back. A node that went down after it was done is done.
func settling(node *corev1.Node, e *ntv1.NodeStatus, minReady time.Duration, now time.Time) (bool, time.Duration) {
	if e.FinishTime == nil {
		return false, 0
	}
	since := e.FinishTime.Time
	for _, c := range node.Status.Conditions {
		if c.Type != corev1.NodeReady || !c.LastTransitionTime.After(since) {
			continue
		}
		if c.Status != corev1.ConditionTrue {
			// Down since: within its seconds it holds on until it is back.
			return c.LastTransitionTime.Time.Before(since.Add(minReady)), 0
		}
		since = c.LastTransitionTime.Time
	}
	wait := since.Add(minReady).Sub(now)
	return wait > 0, max(wait, 0)
}
