package rollout

import (
	"fmt"
	"sort"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// Tests of rollout.firstBatch, pauseAfterFirstBatch with approvedRun, and minReadySeconds.

func batchTask(first intstr.IntOrString, mutate ...func(*ntv1.NodeTask)) *ntv1.NodeTask {
	return newTask(append([]func(*ntv1.NodeTask){func(t *ntv1.NodeTask) {
		t.Spec.Rollout.FirstBatch = &first
		t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("100%"))
	}}, mutate...)...)
}

// started lists the nodes that have a pod, sorted.
func (w *maintWorld) started() []string {
	seen := map[string]bool{}
	for _, p := range w.pods {
		seen[p.Spec.NodeName] = true
	}
	var out []string
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (w *maintWorld) condition(typ string) *metav1.Condition {
	return apimeta.FindStatusCondition(w.task.Status.Conditions, typ)
}

// pass reconciles, ends every running pod with code, and reconciles again to record it.
func (w *maintWorld) pass(code int32) {
	w.reconcile()
	w.now = w.now.Add(time.Second)
	w.finishRuns(code)
	w.reconcile()
}

func TestFirstBatchGoesFirst(t *testing.T) {
	w := newMaintWorld(t, batchTask(intstr.FromString("20%")), nodeNames(10)...)
	g := w.g
	w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100", "win-101"}), "20% of 10, the first by name")
	g.Expect(w.task.Status.Rollout).To(Equal(&ntv1.RolloutStatus{FirstBatch: []string{"win-100", "win-101"}, Batch: ntv1.BatchFirst}))
	g.Expect(w.condition(ntv1.ConditionReconciling).Reason).To(Equal(ntv1.ReasonFirstBatch))
	g.Expect(w.condition(ntv1.ConditionReconciling).Message).To(ContainSubstring("first batch: win-100, win-101 (the other targets wait for it)"))

	// A node that joins and sorts first is not added to the batch the run chose.
	w.nodes["win-000"] = winNode("win-000")
	w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100", "win-101"}))

	w.pass(0)
	w.reconcile()
	g.Expect(w.started()).To(HaveLen(11), "the first batch succeeded: every target starts")
	g.Expect(w.task.Status.Rollout.Batch).To(Equal(ntv1.BatchRest))
	w.pass(0)
	g.Expect(w.ready()).To(BeTrue())
}

func TestFirstBatchWithRetriesAndFailures(t *testing.T) {
	t.Run("a retry inside the batch: the rest wait for it", func(t *testing.T) {
		w := newMaintWorld(t, batchTask(intstr.FromInt32(1), func(t *ntv1.NodeTask) { t.Spec.Retries = ptr.To[int32](1) }), nodeNames(3)...)
		g := w.g
		w.pass(1) // win-100's first attempt fails: RetryBackoff
		g.Expect(entry(&w.task.Status, "win-100").Reason).To(Equal(ntv1.NodeReasonRetryBackoff))
		w.now = w.now.Add(time.Minute)
		w.reconcile()
		g.Expect(w.started()).To(Equal([]string{"win-100"}), "only the retry starts")
		w.now = w.now.Add(time.Second)
		w.finishRuns(0)
		w.reconcile()
		w.reconcile()
		g.Expect(w.started()).To(Equal([]string{"win-100", "win-101", "win-102"}))
	})
	for _, maxFailures := range []int32{0, 5} {
		t.Run(fmt.Sprintf("a failure inside the batch stops the run, with maxFailures %d", maxFailures), func(t *testing.T) {
			firstBatchFailure(t, maxFailures)
		})
	}
}

// firstBatchFailure: a node of the first batch fails; the run stops with FirstBatchFailed,
// whatever maxFailures allows (the budget's own message would say to raise it, which would
// not help).
func firstBatchFailure(t *testing.T, maxFailures int32) {
	{
		w := newMaintWorld(t, batchTask(intstr.FromInt32(2), func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromInt32(maxFailures))
		}), nodeNames(5)...)
		g := w.g
		w.reconcile()
		w.now = w.now.Add(time.Second)
		exited(0, "ok", w.now)(w.pods[0])
		exited(4, "broke networking", w.now)(w.pods[1])
		w.reconcile()
		w.reconcile()
		g.Expect(w.started()).To(Equal([]string{"win-100", "win-101"}), "the rest never start")
		stalled := w.condition(ntv1.ConditionStalled)
		g.Expect(stalled.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(stalled.Reason).To(Equal(ntv1.ReasonFirstBatchFailed))
		g.Expect(stalled.Message).To(HavePrefix("1 node of the first batch failed (win-101): the other targets do not start."))
	}
}

func TestPauseAfterFirstBatch(t *testing.T) {
	w := newMaintWorld(t, batchTask(intstr.FromInt32(1), func(t *ntv1.NodeTask) { t.Spec.Rollout.PauseAfterFirstBatch = true }),
		nodeNames(3)...)
	g := w.g
	w.pass(0)
	w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100"}))
	rec := w.condition(ntv1.ConditionReconciling)
	g.Expect(rec.Reason).To(Equal(ntv1.ReasonAwaitingApproval))
	g.Expect(rec.Message).To(HaveSuffix("the first batch succeeded (win-100) and the run waits for approval: " +
		"run `kubectl nodetask approve patch -n ops`, or set spec.rollout.approvedRun to 1"))
	g.Expect(w.task.Status.Rollout.Batch).To(Equal(ntv1.BatchFirst))

	// An approval of another run is no approval of this one.
	w.task.Spec.Rollout.ApprovedRun = 7
	w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100"}))

	w.task.Spec.Rollout.ApprovedRun = 1
	w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100", "win-101", "win-102"}))
	g.Expect(w.task.Status.Rollout).To(Equal(&ntv1.RolloutStatus{FirstBatch: []string{"win-100"}, Batch: ntv1.BatchRest, Approved: true}))

	// The next run (a new rerunToken) keeps approvedRun 1: it waits after its own first batch.
	w.pass(0)
	g.Expect(w.ready()).To(BeTrue())
	w.task.Spec.RerunToken = "2"
	w.pass(0)
	w.reconcile()
	g.Expect(w.task.Status.Run).To(Equal(int64(2)))
	g.Expect(w.condition(ntv1.ConditionReconciling).Reason).To(Equal(ntv1.ReasonAwaitingApproval))
	g.Expect(w.condition(ntv1.ConditionReconciling).Message).To(HaveSuffix("spec.rollout.approvedRun to 2"))
}

func TestMinReadySecondsHoldsTheSlot(t *testing.T) {
	w := newMaintWorld(t, newTask(func(t *ntv1.NodeTask) {
		t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
		t.Spec.Rollout.MinReadySeconds = 30
	}), nodeNames(2)...)
	g := w.g
	w.pass(0)
	finished := w.now
	p := w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100"}), "win-100 counts its 30 seconds: its slot is taken")
	g.Expect(p.RequeueAfter).To(BeNumerically("~", 30*time.Second, time.Second))
	g.Expect(entry(&w.task.Status, "win-100").Phase).To(Equal(ntv1.NodeSucceeded))

	// A node that went NotReady and came back counts again from its return.
	back := finished.Add(20 * time.Second)
	w.nodes["win-100"].Status.Conditions[0].LastTransitionTime = metav1.NewTime(back)
	w.now = finished.Add(31 * time.Second)
	w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100"}))
	w.now = back.Add(30 * time.Second)
	w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100", "win-101"}))

	// The task is Ready only once the last node counted its seconds too.
	w.now = w.now.Add(time.Second)
	w.finishRuns(0)
	w.reconcile()
	g.Expect(w.ready()).To(BeFalse())
	g.Expect(w.condition(ntv1.ConditionReconciling).Reason).To(Equal(ntv1.ReasonMinReady))
	g.Expect(w.condition(ntv1.ConditionReconciling).Message).To(ContainSubstring("waiting rollout.minReadySeconds (30s) for win-101"))
	w.now = w.now.Add(30 * time.Second)
	w.reconcile()
	g.Expect(w.ready()).To(BeTrue())
}

// TestMinReadySecondsNodeDownInTheWindow: a node that goes NotReady while it counts its
// seconds keeps its slot until it is back and has been Ready for minReadySeconds; one that
// goes NotReady after it settled holds nothing.
func TestMinReadySecondsNodeDownInTheWindow(t *testing.T) {
	w := newMaintWorld(t, newTask(func(t *ntv1.NodeTask) {
		t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
		t.Spec.Rollout.MinReadySeconds = 30
	}), nodeNames(3)...)
	g := w.g
	w.pass(0)
	finished := w.now
	w.nodes["win-100"].Status.Conditions[0] = corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionFalse,
		LastTransitionTime: metav1.NewTime(finished.Add(10 * time.Second))}
	w.now = finished.Add(10 * time.Minute)
	p := w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100"}), "down within its seconds: it keeps its slot while down")
	g.Expect(p.RequeueAfter).To(BeZero(), "its Ready change wakes the task")
	g.Expect(w.ready()).To(BeFalse())

	back := w.now
	w.nodes["win-100"].Status.Conditions[0] = corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
		LastTransitionTime: metav1.NewTime(back)}
	w.now = back.Add(29 * time.Second)
	w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100"}))
	w.now = back.Add(30 * time.Second)
	w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100", "win-101"}))

	// win-100 goes down again long after it settled: win-101 and win-102 are not held by it.
	w.nodes["win-100"].Status.Conditions[0] = corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionFalse,
		LastTransitionTime: metav1.NewTime(w.now)}
	w.now = w.now.Add(time.Second)
	w.finishRuns(0)
	w.reconcile()
	w.now = w.now.Add(31 * time.Second)
	w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100", "win-101", "win-102"}))
}

// TestMinReadySecondsAfterRestart: a restarted node holds its slot for minReadySeconds after
// it came back with its new boot ID; only then is the next node claimed.
func TestMinReadySecondsAfterRestart(t *testing.T) {
	task := rebootTask(ntv1.RebootAlways, 1)
	task.Spec.Rollout.MinReadySeconds = 60
	w := newMaintWorld(t, task, nodeNames(2)...)
	g := w.g
	var back time.Time
	for i := 0; i < 40 && back.IsZero(); i++ {
		w.reconcile()
		w.now = w.now.Add(time.Second)
		w.finishRuns(0)
		if i%3 == 2 {
			w.bootAll()
		}
		if e := entry(&w.task.Status, "win-100"); e != nil && e.Reason == ntv1.NodeReasonRebooted {
			back = e.FinishTime.Time
		}
	}
	g.Expect(back).NotTo(BeZero())
	for w.now.Before(back.Add(59 * time.Second)) {
		w.reconcile()
		g.Expect(ReadClaim(w.nodes["win-101"])).To(BeNil(), "at %s the restarted node still counts its minute", w.now.Sub(back))
		w.now = w.now.Add(5 * time.Second)
	}
	w.now = back.Add(61 * time.Second)
	w.reconcile()
	g.Expect(ReadClaim(w.nodes["win-101"])).NotTo(BeNil())
	g.Expect(w.nodes["win-100"].Spec.Unschedulable).To(BeFalse())
}
