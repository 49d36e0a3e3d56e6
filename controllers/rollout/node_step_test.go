package rollout

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// TestShouldStart: one node's answer to "should it start its next attempt now?", with the
// reason it does not, for every hold in the order shouldStart meets them.
func TestShouldStart(t *testing.T) {
	plain := newTask()
	cordons := newTask(func(t *ntv1.NodeTask) { t.Spec.Cordon = true })
	drains := newTask(func(t *ntv1.NodeTask) { t.Spec.Drain = &ntv1.DrainSpec{} })
	restarts := newTask(func(t *ntv1.NodeTask) { t.Spec.Reboot = ntv1.RebootAlways })
	claimedBy := func(task *ntv1.NodeTask) nodeOpt {
		return func(n *corev1.Node) {
			n.Annotations = map[string]string{AnnotationClaim: ClaimValue(task, t0.Add(-time.Minute), false)}
		}
	}
	other := newTask(func(t *ntv1.NodeTask) { t.Name, t.UID = "other", "other-uid" })
	cordoned := func(n *corev1.Node) { n.Spec.Unschedulable = true }
	const run = 2
	entry := func(phase ntv1.NodePhase, reason string, attempts int32, finished time.Duration) *ntv1.NodeStatus {
		e := &ntv1.NodeStatus{Name: "w1", Phase: phase, Reason: reason, Run: run, Attempts: attempts}
		if finished != 0 {
			e.FinishTime = &metav1.Time{Time: t0.Add(-finished)}
		}
		return e
	}
	lastRun := &ntv1.NodeStatus{Name: "w1", Phase: ntv1.NodeSucceeded, Run: run - 1, Attempts: 1}
	drained := &DrainObservation{}
	draining := &DrainObservation{Pods: []*corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "apps"}}}}

	cases := []struct {
		name     string
		task     *ntv1.NodeTask
		node     *corev1.Node // nil: the Node object is gone
		notTgt   bool
		busy     bool
		stale    bool
		stored   *ntv1.NodeStatus
		drain    *DrainObservation
		want     startHold
		attempt  int32 // of the request, where there is one
		wantWait time.Duration
	}{
		{name: "a target that never ran starts its first attempt", task: plain, node: winNode("w1"), want: mayStart, attempt: 1},
		{name: "a new run starts at attempt 1 over the last run's result", task: plain, node: winNode("w1"), stored: lastRun, want: mayStart, attempt: 1},
		{name: "not a target", task: plain, node: winNode("w1"), notTgt: true, want: holdNotTarget},
		{name: "the Node object is gone", task: plain, node: nil, want: holdGone},
		{name: "a pod of the node has not finished", task: plain, node: winNode("w1"), busy: true, want: holdBusy},
		{name: "not Ready", task: plain, node: winNode("w1", notReady), want: holdBlocked},
		{name: "under memory pressure", task: plain, node: winNode("w1", taint(corev1.TaintNodeMemoryPressure, "", corev1.TaintEffectNoSchedule)), want: holdBlocked},
		{name: "this run's attempt is running", task: plain, node: winNode("w1"), stored: entry(ntv1.NodeRunning, "", 1, 0), want: holdDone},
		{name: "this run succeeded", task: plain, node: winNode("w1"), stored: entry(ntv1.NodeSucceeded, "", 1, time.Minute), want: holdDone},
		{name: "this run failed for good", task: plain, node: winNode("w1"), stored: entry(ntv1.NodeFailed, ntv1.NodeReasonError, 1, time.Minute), want: holdDone},
		{name: "the retry's backoff runs (10s after the first failure)", task: plain, node: winNode("w1"),
			stored: entry(ntv1.NodePending, ntv1.NodeReasonRetryBackoff, 1, 4*time.Second), want: holdBackoff, wantWait: 6 * time.Second},
		{name: "the backoff ended: the next attempt", task: plain, node: winNode("w1"),
			stored: entry(ntv1.NodePending, ntv1.NodeReasonRetryBackoff, 1, 10*time.Second), want: mayStart, attempt: 2},
		{name: "a task that cordons: the claim comes first", task: cordons, node: winNode("w1"), want: holdUnclaimed, attempt: 1},
		{name: "a task that restarts claims too", task: restarts, node: winNode("w1"), want: holdUnclaimed, attempt: 1},
		{name: "another task's claim", task: cordons, node: winNode("w1", claimedBy(other)), want: holdClaimedElsewhere, attempt: 1},
		{name: "the claim of a task that no longer exists holds nobody back", task: cordons, node: winNode("w1", claimedBy(other)), stale: true,
			want: holdUnclaimed, attempt: 1},
		{name: "claimed, not cordoned yet", task: cordons, node: winNode("w1", claimedBy(cordons)), want: holdUncordoned, attempt: 1},
		{name: "claimed and cordoned", task: cordons, node: winNode("w1", claimedBy(cordons), cordoned), want: mayStart, attempt: 1},
		{name: "claimed by a task that only restarts: no cordon", task: restarts, node: winNode("w1", claimedBy(restarts)), want: mayStart, attempt: 1},
		{name: "a drain not looked at in this pass", task: drains, node: winNode("w1", claimedBy(drains), cordoned), want: holdUndrained, attempt: 1},
		{name: "pods left to evict", task: drains, node: winNode("w1", claimedBy(drains), cordoned), drain: draining, want: holdUndrained, attempt: 1},
		{name: "drained", task: drains, node: winNode("w1", claimedBy(drains), cordoned), drain: drained, want: mayStart, attempt: 1},
		{name: "a retry finds the node drained: no second drain", task: drains, node: winNode("w1", claimedBy(drains), cordoned), drain: draining,
			stored: entry(ntv1.NodePending, ntv1.NodeReasonRetryBackoff, 1, time.Minute), want: mayStart, attempt: 2},
		{name: "a node blocked before its claim is not claimed", task: cordons, node: winNode("w1", notReady), want: holdBlocked},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			task := tc.task.DeepCopy()
			task.Spec.Retries = ptr.To[int32](3)
			st := newStepper(task, run, "rev", t0)
			in := nodeInput{name: "w1", node: tc.node, target: !tc.notTgt, stored: tc.stored, drain: tc.drain, staleClaim: tc.stale}
			e := ntv1.NodeStatus{Name: "w1", Phase: ntv1.NodePending, Run: run}
			if tc.stored != nil {
				e = *tc.stored
			}
			blocked, claim := "", claimFree
			if tc.node != nil {
				blocked = nodeBlocked(tc.node, task.Spec.Tolerations)
				claim, _ = st.maint.claimOf(tc.node, tc.stale)
			}
			v := st.shouldStart(in, tc.busy, blocked, claim, &e)
			if v.hold != tc.want {
				t.Fatalf("hold = %d, want %d", v.hold, tc.want)
			}
			if v.request.Attempt != tc.attempt {
				t.Errorf("request's attempt = %d, want %d", v.request.Attempt, tc.attempt)
			}
			if v.wait != tc.wantWait {
				t.Errorf("wait = %v, want %v", v.wait, tc.wantWait)
			}
		})
	}
}

// TestStepActions: what each node's step asks the rollout for, one typed action per node,
// and how it stands with the rollout's slots.
func TestStepActions(t *testing.T) {
	task := newTask(func(t *ntv1.NodeTask) { t.Spec.Drain = &ntv1.DrainSpec{} })
	mine := func(cordonedByClaim bool) nodeOpt {
		return func(n *corev1.Node) {
			n.Annotations = map[string]string{AnnotationClaim: ClaimValue(task, t0.Add(-time.Minute), cordonedByClaim)}
		}
	}
	cordoned := func(n *corev1.Node) { n.Spec.Unschedulable = true }
	evictable := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "apps"}}
	run := int64(1)
	rev := Revision(&task.Spec)
	done := &ntv1.NodeStatus{Name: "w1", Phase: ntv1.NodeSucceeded, Run: run, Attempts: 1}

	cases := []struct {
		name     string
		node     *corev1.Node
		stored   *ntv1.NodeStatus
		drain    *DrainObservation
		target   bool
		want     actionKind
		wantSlot slotUse
	}{
		{name: "unclaimed: claim", node: winNode("w1"), target: true, want: actClaim, wantSlot: slotNone},
		{name: "claimed: cordon", node: winNode("w1", mine(false)), target: true, want: actCordon, wantSlot: slotClaim},
		{name: "cordoned, pods to evict: drain", node: winNode("w1", mine(true), cordoned), target: true,
			drain: &DrainObservation{Pods: []*corev1.Pod{evictable}, Evictable: []*corev1.Pod{evictable}}, want: actDrain, wantSlot: slotClaim},
		{name: "cordoned, pods only terminating: wait", node: winNode("w1", mine(true), cordoned), target: true,
			drain: &DrainObservation{Pods: []*corev1.Pod{evictable}}, want: actNone, wantSlot: slotClaim},
		{name: "drained: start within the claim", node: winNode("w1", mine(true), cordoned), target: true,
			drain: &DrainObservation{}, want: actStartClaimed, wantSlot: slotClaim},
		{name: "result stored: release", node: winNode("w1", mine(true), cordoned), stored: done, target: true, want: actRelease, wantSlot: slotReleasing},
		{name: "no longer a target: release", node: winNode("w1", mine(true), cordoned), want: actRelease, wantSlot: slotClaim},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := newStepper(task, run, rev, t0)
			s := st.step(nodeInput{name: "w1", node: tc.node, target: tc.target, stored: tc.stored, drain: tc.drain})
			if s.action.kind != tc.want {
				t.Errorf("action = %d, want %d", s.action.kind, tc.want)
			}
			if s.slot != tc.wantSlot {
				t.Errorf("slot = %d, want %d", s.slot, tc.wantSlot)
			}
			if tc.want == actStartClaimed && s.action.start.Attempt != 1 {
				t.Errorf("start = %+v, want attempt 1", s.action.start)
			}
		})
	}
}
