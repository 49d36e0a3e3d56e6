package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
	"github.com/nodetask/nodetask-operator/controllers/schedule"
)

func TestTaskMetrics(t *testing.T) {
	g := NewWithT(t)
	task := newTask(func(t *ntv1.NodeTask) { t.Name, t.Namespace = "metrics-task", "metrics-ns" })
	start := metav1.NewTime(t0)
	finish := metav1.NewTime(t0.Add(90 * 1e9))
	old := ntv1.NodeTaskStatus{Run: 1, Nodes: []ntv1.NodeStatus{
		{Name: "win-a", Phase: ntv1.NodeRunning, Attempts: 1, StartTime: &start},
		{Name: "win-b", Phase: ntv1.NodeFailed, Attempts: 1, Reason: ntv1.NodeReasonError, ExitCode: ptr.To[int32](1)},
	}}
	task.Status = ntv1.NodeTaskStatus{Run: 1, Targets: 3, Pending: 1, Succeeded: 1, Failed: 1,
		Conditions: []metav1.Condition{{Type: ntv1.ConditionReady, Status: metav1.ConditionFalse}},
		Nodes: []ntv1.NodeStatus{
			{Name: "win-a", Phase: ntv1.NodeSucceeded, Attempts: 1, StartTime: &start, FinishTime: &finish},
			old.Nodes[1], // written before: not counted again
			{Name: "win-c", Phase: ntv1.NodePending},
		}}
	registerMetrics()
	recordStatusWrite(task)
	recordResults(task, rollout.NewResults(&old, &task.Status))
	recordStatusWrite(task)
	recordResults(task, rollout.NewResults(&task.Status, &task.Status)) // the same status again counts nothing new

	g.Expect(testutil.ToFloat64(taskNodes.WithLabelValues("metrics-ns", "metrics-task", "Succeeded"))).To(Equal(1.0))
	g.Expect(testutil.ToFloat64(taskNodes.WithLabelValues("metrics-ns", "metrics-task", "Pending"))).To(Equal(1.0))
	g.Expect(testutil.ToFloat64(taskCondition.WithLabelValues("metrics-ns", "metrics-task", "Ready", "False"))).To(Equal(1.0))
	g.Expect(testutil.ToFloat64(taskCondition.WithLabelValues("metrics-ns", "metrics-task", "Ready", "True"))).To(Equal(0.0))
	g.Expect(testutil.ToFloat64(nodeRuns.WithLabelValues("metrics-ns", "metrics-task", "Succeeded", ""))).To(Equal(1.0))
	g.Expect(testutil.ToFloat64(nodeRuns.WithLabelValues("metrics-ns", "metrics-task", "Failed", "Error"))).To(BeZero(),
		"win-b's failure was counted when it was first written")
	// Read this task's histogram alone: other tests of the package write series of their own.
	hist := &dto.Metric{}
	g.Expect(nodeRunDuration.WithLabelValues("metrics-ns", "metrics-task").(prometheus.Metric).Write(hist)).To(Succeed())
	g.Expect(hist.GetHistogram().GetSampleCount()).To(BeEquivalentTo(1))
	g.Expect(hist.GetHistogram().GetSampleSum()).To(Equal(90.0))

	forgetMetrics(types.NamespacedName{Namespace: "metrics-ns", Name: "metrics-task"})
	ours := prometheus.Labels{"namespace": "metrics-ns", "name": "metrics-task"}
	g.Expect(taskNodes.DeletePartialMatch(ours)).To(BeZero(), "a deleted task's series go")
	g.Expect(taskCondition.DeletePartialMatch(ours)).To(BeZero())
	g.Expect(nodeRuns.DeletePartialMatch(ours)).To(BeZero())
	g.Expect(nodeRunDuration.DeletePartialMatch(ours)).To(BeZero())
}

func TestComplianceMetrics(t *testing.T) {
	g := NewWithT(t)
	registerMetrics()
	task := newTask(func(t *ntv1.NodeTask) { t.Name, t.Namespace = "audit", "metrics-ns" })
	task.Status = ntv1.NodeTaskStatus{Run: 1, Targets: 5, Succeeded: 4, Pending: 1,
		Compliance: &ntv1.ComplianceSummary{Compliant: 2, NonCompliant: 2, Unknown: 1}}
	recordStatusWrite(task)
	value := func(c string) float64 {
		return testutil.ToFloat64(taskCompliance.WithLabelValues("metrics-ns", "audit", c))
	}
	g.Expect(value("compliant")).To(Equal(2.0))
	g.Expect(value("noncompliant")).To(Equal(2.0))
	g.Expect(value("unknown")).To(Equal(1.0))

	// A task whose check was taken out has no compliance series.
	task.Status.Compliance = nil
	recordStatusWrite(task)
	ours := prometheus.Labels{"namespace": "metrics-ns", "name": "audit"}
	g.Expect(taskCompliance.DeletePartialMatch(ours)).To(BeZero())

	task.Status.Compliance = &ntv1.ComplianceSummary{Compliant: 1}
	recordStatusWrite(task)
	forgetMetrics(types.NamespacedName{Namespace: "metrics-ns", Name: "audit"})
	g.Expect(taskCompliance.DeletePartialMatch(ours)).To(BeZero(), "a deleted task's series go")
}

func TestScheduleMetrics(t *testing.T) {
	g := NewWithT(t)
	registerMetrics()
	s := &ntv1.NodeTaskSchedule{ObjectMeta: metav1.ObjectMeta{Namespace: "metrics-ns", Name: "metrics-schedule"}}
	next := metav1.NewTime(t0.Add(time.Hour))
	st := &ntv1.NodeTaskScheduleStatus{NextScheduleTime: &next}
	runs := func(result string) float64 {
		return testutil.ToFloat64(scheduleRuns.WithLabelValues("metrics-ns", "metrics-schedule", result))
	}

	// After downtime: two times passed, the latest starts.
	recordRunStarted(s)
	recordSchedulePass(s, &schedule.Plan{Create: "run-a", Missed: &schedule.Missed{Count: 2}}, st)
	g.Expect(runs(scheduleRunStarted)).To(Equal(1.0))
	g.Expect(runs(scheduleRunMissed)).To(Equal(2.0))
	g.Expect(testutil.ToFloat64(scheduleNextRun.WithLabelValues("metrics-ns", "metrics-schedule"))).To(Equal(float64(next.Unix())))

	// A due run waited for an active run (Forbid) beyond its deadline: skipped, not missed.
	s.Status.Active = []ntv1.ScheduleRunReference{{Name: "run-a"}}
	recordSchedulePass(s, &schedule.Plan{Missed: &schedule.Missed{TooLate: true}}, st)
	g.Expect(runs(scheduleRunSkipped)).To(Equal(1.0))
	g.Expect(runs(scheduleRunMissed)).To(Equal(2.0))

	// Under Replace an active run does not hold a due run back: given-up times are missed.
	s.Spec.ConcurrencyPolicy = ntv1.ConcurrencyReplace
	recordSchedulePass(s, &schedule.Plan{Missed: &schedule.Missed{Count: 1, TooLate: true}}, st)
	g.Expect(runs(scheduleRunMissed)).To(Equal(4.0))
	g.Expect(runs(scheduleRunSkipped)).To(Equal(1.0))

	// Suspended: no next run, no series for it.
	recordSchedulePass(s, &schedule.Plan{}, &ntv1.NodeTaskScheduleStatus{})
	ours := prometheus.Labels{"namespace": "metrics-ns", "name": "metrics-schedule"}
	g.Expect(scheduleNextRun.DeletePartialMatch(ours)).To(BeZero())

	recordSchedulePass(s, &schedule.Plan{}, st)
	forgetScheduleMetrics(types.NamespacedName{Namespace: "metrics-ns", Name: "metrics-schedule"})
	g.Expect(scheduleRuns.DeletePartialMatch(ours)).To(BeZero(), "a deleted schedule's series go")
	g.Expect(scheduleNextRun.DeletePartialMatch(ours)).To(BeZero())
}
