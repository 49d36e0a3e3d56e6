package rollout

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// Tests of rollout.healthChecks as a gate: the results come from the reconciler
// (controllers/healthcheck evaluates them); here they hold starts back and stall the run.

func healthTask(failAfter *int32) *ntv1.NodeTask {
	return newTask(func(t *ntv1.NodeTask) {
		t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
		t.Spec.Rollout.HealthChecks = []ntv1.HealthCheck{{Name: "ingress", Expression: "true", FailAfterSeconds: failAfter,
			Object: ntv1.HealthCheckObject{APIVersion: "apps/v1", Kind: "Deployment", Name: "ingress"}}}
	})
}

// healthWorld is a maintWorld whose reconciles see the given health check result.
type healthWorld struct {
	*maintWorld
	healthy bool
}

func (w *healthWorld) reconcile() *Plan {
	obs := &Observed{Task: w.task, Revision: Revision(&w.task.Spec), Nodes: w.nodes, Pods: w.pods, Now: w.now, Admission: w.admission,
		Health: []HealthResult{{Name: "ingress", Healthy: w.healthy, Message: map[bool]string{false: "the expression is false"}[w.healthy]}}}
	p := ComputePlan(obs)
	for _, r := range p.Create {
		w.pods = append(w.pods, taskPod(w.task, r.Node, p.Run, r.Attempt, createdAt(w.now)))
	}
	settleWith(obs, p)
	return p
}

func TestHealthCheckHoldsStartsAndResumes(t *testing.T) {
	w := &healthWorld{maintWorld: newMaintWorld(t, healthTask(nil), nodeNames(3)...), healthy: true}
	g := w.g
	w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100"}))
	g.Expect(w.task.Status.Rollout.HealthChecks).To(Equal([]ntv1.HealthCheckStatus{{Name: "ingress", Healthy: true, Since: &metav1.Time{Time: t0}}}))

	// The check stops holding while win-100 runs: win-100 finishes, nothing else starts.
	w.healthy = false
	w.now = t0.Add(5 * time.Second)
	w.reconcile()
	g.Expect(w.pods[0].DeletionTimestamp).To(BeNil(), "a running node is left to finish")
	w.now = t0.Add(6 * time.Second)
	w.finishRuns(0)
	p := w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100"}))
	g.Expect(p.RequeueAfter).To(Equal(healthRecheck), "looked at again while nodes wait")
	rec := w.condition(ntv1.ConditionReconciling)
	g.Expect(rec.Reason).To(Equal(ntv1.ReasonHealthCheckFailing))
	g.Expect(rec.Message).To(Equal("1 of 3 nodes succeeded, 0 failed, 0 running, 2 pending; health check ingress does not hold " +
		"(the expression is false), since " + t0.Add(5*time.Second).UTC().Format(time.RFC3339) + ": no node starts until it does"))
	g.Expect(w.condition(ntv1.ConditionStalled).Status).To(Equal(metav1.ConditionFalse), "without failAfterSeconds it waits as long as it takes")

	// Hours later it still waits, counting from when it stopped holding.
	w.now = t0.Add(3 * time.Hour)
	w.reconcile()
	g.Expect(w.task.Status.Rollout.HealthChecks[0].Since.Time).To(Equal(t0.Add(5 * time.Second)))
	g.Expect(w.started()).To(Equal([]string{"win-100"}))

	// It holds again: the rollout goes on.
	w.healthy = true
	w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100", "win-101"}))
	g.Expect(w.task.Status.Rollout.HealthChecks[0].Healthy).To(BeTrue())
}

func TestHealthCheckFailAfterSecondsStalls(t *testing.T) {
	w := &healthWorld{maintWorld: newMaintWorld(t, healthTask(ptr.To[int32](60)), nodeNames(2)...), healthy: false}
	g := w.g
	p := w.reconcile()
	g.Expect(w.started()).To(BeEmpty())
	g.Expect(p.RequeueAfter).To(Equal(healthRecheck))
	w.now = t0.Add(55 * time.Second)
	p = w.reconcile()
	g.Expect(p.RequeueAfter).To(Equal(5*time.Second), "woken when failAfterSeconds runs out")
	g.Expect(w.condition(ntv1.ConditionStalled).Status).To(Equal(metav1.ConditionFalse))

	w.now = t0.Add(60 * time.Second)
	w.reconcile()
	stalled := w.condition(ntv1.ConditionStalled)
	g.Expect(stalled.Status).To(Equal(metav1.ConditionTrue))
	g.Expect(stalled.Reason).To(Equal(ntv1.ReasonHealthCheckFailing))
	g.Expect(stalled.Message).To(HavePrefix("health check ingress does not hold (the expression is false) past its failAfterSeconds, since " +
		t0.UTC().Format(time.RFC3339) + ": no further node starts."))

	// Stalled only while it does not hold.
	w.healthy = true
	w.reconcile()
	g.Expect(w.condition(ntv1.ConditionStalled).Status).To(Equal(metav1.ConditionFalse))
	g.Expect(w.started()).To(Equal([]string{"win-100"}))
}

func TestHealthCheckGates(t *testing.T) {
	g := NewWithT(t)
	task := healthTask(nil)
	obs := observe(task, nodes("win-a"))
	obs.Health = nil
	p := ComputePlan(obs)
	g.Expect(p.Create).To(BeEmpty(), "a check not evaluated yet does not hold")
	g.Expect(p.health.checks[0].Message).To(Equal("not evaluated yet"))

	obs.HealthError = "spec.rollout.healthChecks[ingress].expression does not compile: ERROR: <input>:1:1: Syntax error"
	p = ComputePlan(obs)
	st := ComputeStatus(obs, p, Outcome{})
	c := findCondition(&st, ntv1.ConditionStalled)
	g.Expect(c.Reason).To(Equal(ntv1.ReasonInvalidSpec))
	g.Expect(c.Message).To(Equal(obs.HealthError))
}

// TestHealthCheckFlipsDuringFirstBatch: a check that stops holding while the first batch runs
// holds the rest back even once the batch is done, and lets it go when it holds again.
func TestHealthCheckFlipsDuringFirstBatch(t *testing.T) {
	task := healthTask(nil)
	task.Spec.Rollout.FirstBatch = ptr.To(intstr.FromInt32(1))
	task.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("100%"))
	w := &healthWorld{maintWorld: newMaintWorld(t, task, nodeNames(3)...), healthy: true}
	g := w.g
	w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100"}))
	w.healthy = false
	w.now = w.now.Add(time.Second)
	w.finishRuns(0)
	w.reconcile()
	w.reconcile()
	g.Expect(w.task.Status.Rollout.Batch).To(Equal(ntv1.BatchRest), "the batch is done")
	g.Expect(w.started()).To(Equal([]string{"win-100"}), "but the check holds the rest")
	w.healthy = true
	w.reconcile()
	g.Expect(w.started()).To(Equal([]string{"win-100", "win-101", "win-102"}))
}

// TestHealthCheckDoesNotHoldAFinishedRun: a check past its failAfterSeconds while the last
// nodes run stalls nothing once they finished: no node is left to hold back, so the run is
// done (Ready), not Stalled for good.
func TestHealthCheckDoesNotHoldAFinishedRun(t *testing.T) {
	task := healthTask(ptr.To[int32](30))
	task.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("100%"))
	w := &healthWorld{maintWorld: newMaintWorld(t, task, nodeNames(2)...), healthy: true}
	g := w.g
	w.reconcile()
	g.Expect(w.started()).To(HaveLen(2))
	w.healthy = false
	w.reconcile()
	w.now = w.now.Add(time.Minute)
	w.reconcile()
	g.Expect(w.condition(ntv1.ConditionStalled).Status).To(Equal(metav1.ConditionFalse), "nothing waits to start: nothing to stall")
	w.finishRuns(0)
	w.reconcile()
	g.Expect(w.ready()).To(BeTrue(), "%+v", w.task.Status.Conditions)
	g.Expect(w.condition(ntv1.ConditionStalled).Status).To(Equal(metav1.ConditionFalse))
}
