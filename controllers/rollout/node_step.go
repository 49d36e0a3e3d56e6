package rollout

import (
	"time"

	corev1 "k8s.io/api/core/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// One node's step in one pass: from what was observed of the node (nodeInput) to its next
// status entry, where it stands with the rollout's slots, and the one thing it asks the
// rollout to do. step is the only place a node's entry is made: its helpers (runEntry,
// retryState, drainStep, rebootStep) return the entry, and write no other. The plan
// (plan.go) then sorts the nodes' actions by what they need: a free slot, an open gate,
// admission.

// stepper runs the nodes' steps of one reconcile: the run's lifecycle (node_lifecycle.go)
// and, for a task that cordons, drains or restarts, the maintenance around it
// (maintenance.go).
type stepper struct {
	*lifecycle
	maint maintenance
	// minReady is rollout.minReadySeconds.
	minReady time.Duration
}

func newStepper(task *ntv1.NodeTask, run int64, revision string, now time.Time) *stepper {
	st := &stepper{lifecycle: newLifecycle(task, run, revision, now), maint: newMaintenance(task),
		minReady: time.Duration(task.Spec.Rollout.MinReadySeconds) * time.Second}
	if c := st.check; c != nil {
		c.first = st.maint.claims && !c.audit
	}
	return st
}

// shouldStart is the one place that decides whether a node may start its next attempt,
// and if not, why. What is outside the node (free slots, suspend, the failure budget, the
// window, admission) is the plan's to decide, once for every node.
func (st *stepper) shouldStart(in nodeInput, busy bool, blocked string, claim claimState, e *ntv1.NodeStatus) startVerdict {
	lc := st.lifecycle
	switch {
	case !in.target:
		return startVerdict{hold: holdNotTarget}
	case in.node == nil:
		return startVerdict{hold: holdGone}
	case busy:
		return startVerdict{hold: holdBusy}
	case blocked != "":
		return startVerdict{hold: holdBlocked}
	}
	req := PodRequest{Node: in.name, NodeUID: in.node.UID, Attempt: 1}
	if e.Run == lc.run {
		if e.Phase != ntv1.NodePending {
			return startVerdict{hold: holdDone}
		}
		if e.Reason == ntv1.NodeReasonRetryBackoff && e.FinishTime != nil {
			if wait := e.FinishTime.Add(retryDelay(e.Attempts)).Sub(lc.now); wait > 0 {
				return startVerdict{hold: holdBackoff, wait: wait}
			}
		}
		req.Attempt = e.Attempts + 1
	}
	m := &st.maint
	switch {
	case !m.claims:
	case claim == claimForeign:
		return startVerdict{hold: holdClaimedElsewhere, request: req}
	case lc.check != nil && lc.check.first && req.Attempt == 1 && (e.Run != lc.run || e.Compliance != ntv1.NonCompliant):
		// Checked before the claim, so that a compliant node is never cordoned, drained or
		// restarted; a node found non-compliant goes on to its claim with attempt 1.
		req.Attempt = 0
		return startVerdict{hold: holdUnchecked, request: req}
	case claim == claimFree:
		return startVerdict{hold: holdUnclaimed, request: req}
	case m.cordon && !in.node.Spec.Unschedulable:
		return startVerdict{hold: holdUncordoned, request: req}
	case m.drain && req.Attempt == 1 && (in.drain == nil || len(in.drain.Pods) > 0):
		// Before the first attempt of every run (a retry finds the node drained).
		return startVerdict{hold: holdUndrained, request: req}
	}
	return startVerdict{request: req}
}

// step runs one node's lifecycle one step.
func (st *stepper) step(in nodeInput) nodeStep {
	lc := st.lifecycle
	var s nodeStep
	pods := lc.sortPods(in, &s)
	gone := in.node == nil
	ready := !gone && NodeReady(in.node)

	blocked := "" // why the node cannot run a pod now
	if !gone {
		blocked = nodeBlocked(in.node, lc.tolerations)
	}
	e, wait := lc.runEntry(in, pods.current, pods.attempts, gone, ready)
	if wait > 0 {
		s.after(wait)
	}
	current := e.Run == lc.run
	if current && !gone {
		e = lc.retryState(e)
	}
	if current && e.Phase == ntv1.NodePending && e.Reason != ntv1.NodeReasonRetryBackoff {
		e.Reason = blocked
	}
	s.listed = in.target || s.slot != slotNone || (current && e.Attempts > 0 && (!gone || len(pods.attempts) > 0))
	deletes, wait := lc.deletions(in, pods.mine, ready)
	s.deletes = append(s.deletes, deletes...)
	if wait > 0 {
		s.after(wait)
	}

	var claim claimState
	var held *NodeClaim
	if st.maint.claims {
		claim, held = st.maint.claimOf(in.node, in.staleClaim)
	}
	v := st.shouldStart(in, pods.busy, blocked, claim, &e)
	if v.hold == holdBackoff {
		s.after(v.wait)
	}
	if !st.maint.claims {
		if v.hold == mayStart {
			s.action = nodeAction{kind: actStart, start: v.request}
		}
		s.entry = e
		st.settle(in, &s)
		return s
	}

	if claim == claimOurs {
		s.slot = slotClaim
	}
	e, s.action, wait = st.maint.next(lc, maintainInput{nodeInput: in, busy: pods.busy, restartPod: pods.restart,
		claim: claim, held: held, verdict: v, storedFinal: in.stored != nil && in.stored.Run == lc.run && isFinal(in.stored)}, e)
	if wait > 0 {
		s.after(wait)
	}
	if claim == claimOurs && (e.Phase == ntv1.NodeSucceeded || e.Phase == ntv1.NodeFailed) {
		s.slot = slotReleasing
	}
	s.entry = e
	st.settle(in, &s)
	s.listed = s.listed || s.slot != slotNone
	return s
}

// settle keeps the slot of a node whose run succeeded while it counts
// rollout.minReadySeconds, and wakes the task when it is done.
func (st *stepper) settle(in nodeInput, s *nodeStep) {
	e := &s.entry
	if st.minReady == 0 || s.slot != slotNone || in.node == nil || e.Run != st.run || e.Phase != ntv1.NodeSucceeded {
		return
	}
	if hold, wait := settling(in.node, e, st.minReady, st.now); hold {
		s.slot = slotSettling
		if wait > 0 {
			s.after(wait)
		}
	}
}

// nodePods is a node's pods, sorted for its step.
type nodePods struct {
	// mine are the pods made for the node's current machine.
	mine []*corev1.Pod
	// attempts are mine without the restart pods.
	attempts []*corev1.Pod
	// current is the latest attempt of the current run; restart the current run's restart pod.
	current, restart *corev1.Pod
	// busy: a pod of the node has not finished: the node starts nothing else.
	busy bool
}

// sortPods sorts the node's pods for its step, and records on s the slot its unfinished
// pods hold, what they need, and the deletion of pods made for a machine that was replaced.
func (lc *lifecycle) sortPods(in nodeInput, s *nodeStep) nodePods {
	var np nodePods
	gone := in.node == nil
	ready := !gone && NodeReady(in.node)
	for _, pod := range in.pods {
		// Pods made for another machine under this name are the old machine's: they never count.
		if !gone && in.node.UID != "" && ntv1.PodNodeUID(pod) != "" && ntv1.PodNodeUID(pod) != string(in.node.UID) {
			if pod.DeletionTimestamp == nil {
				s.deletes = append(s.deletes, PodDeletion{Pod: pod, Force: true, Why: "its machine was replaced"})
			}
			continue
		}
		np.mine = append(np.mine, pod)
	}
	for _, pod := range np.mine {
		if ntv1.IsRebootPod(pod) && !PodFinished(pod) && lc.recorded(in.stored, pod) {
			// The node came back and its result is stored: a restart pod the kubelet never
			// reported finished no longer holds the node (its deadline deletes it).
			continue
		}
		if !PodFinished(pod) {
			np.busy = true
			if lc.holdsSlot(pod, gone, ready) {
				s.slot = slotPod
			}
			if !lc.isCurrent(pod) {
				s.pods.otherRun = true
			} else if podUnstarted(pod) && !ntv1.IsRebootPod(pod) {
				s.pods.unstarted++
			}
		}
		if ntv1.IsRebootPod(pod) {
			if lc.isCurrent(pod) {
				np.restart = pod
			}
			continue
		}
		np.attempts = append(np.attempts, pod)
		if lc.isCurrent(pod) && (np.current == nil || ntv1.PodAttempt(pod) > ntv1.PodAttempt(np.current)) {
			np.current = pod
		}
	}
	return np
}
