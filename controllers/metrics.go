package controllers

import (
	"encoding/json"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
	"github.com/nodetask/nodetask-operator/controllers/schedule"
)

// Metrics, served with controller-runtime's on /metrics. Series are per task, never per
// node: at 5000 nodes a per-node label would make 5000 series per task.
var (
	statusWrites = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nodetask_status_writes_total",
		Help: "Status writes of NodeTasks that the API server accepted.",
	})
	statusWriteBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nodetask_status_write_bytes_total",
		Help: "Bytes of the NodeTasks whose status writes the API server accepted (each write sends the whole object to etcd and to every watcher).",
	})
	sliceWrites = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nodetask_result_slice_writes_total",
		Help: "Writes of NodeResultSlices (the per-node results of NodeTasks with more nodes than their status holds) that the API server accepted.",
	})
	sliceWriteBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nodetask_result_slice_write_bytes_total",
		Help: "Bytes of the NodeResultSlices whose writes the API server accepted.",
	})
	taskNodes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodetask_nodes",
		Help: "Target nodes of a NodeTask's current run, by phase (Rebooting counts as Running), as last written to its status.",
	}, []string{"namespace", "name", "phase"})
	taskCondition = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodetask_condition",
		Help: "A NodeTask's conditions: 1 for the status each condition type has, 0 for the others.",
	}, []string{"namespace", "name", "type", "status"})
	nodeRuns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodetask_node_runs_total",
		Help: "Finished node results of NodeTasks, by result (Succeeded, Failed) and reason, counted when written to status.",
	}, []string{"namespace", "name", "result", "reason"})
	nodeRunDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "nodetask_node_run_duration_seconds",
		Help:    "From a node's last attempt's start to its final result (a restart included), for results written to status.",
		Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200},
	}, []string{"namespace", "name"})
	taskCompliance = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodetask_compliance_nodes",
		Help: "Target nodes of a NodeTask with spec.check, by what its current run's check found (compliant, with remediated " +
			"ones included; noncompliant; unknown: not checked yet or the check failed), as last written to its status.",
	}, []string{"namespace", "name", "compliance"})
	scheduleRuns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodetask_schedule_runs_total",
		Help: "Scheduled times of a NodeTaskSchedule by what became of them: started (this manager created the run), " +
			"skipped (given up while a run of the schedule was active, concurrencyPolicy Forbid) or missed (given up after " +
			"downtime or suspension, or later than startingDeadlineSeconds). Manual runs (kubectl nodetask run-now) are not counted.",
	}, []string{"namespace", "name", "result"})
	scheduleNextRun = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodetask_schedule_next_run_timestamp_seconds",
		Help: "Unix time of a NodeTaskSchedule's next run (status.nextScheduleTime); no series while it has none (suspended, invalid).",
	}, []string{"namespace", "name"})
	registerOnce sync.Once
)

// Results of nodetask_schedule_runs_total.
const (
	scheduleRunStarted = "started"
	scheduleRunSkipped = "skipped"
	scheduleRunMissed  = "missed"
)

func registerMetrics() {
	registerOnce.Do(func() {
		metrics.Registry.MustRegister(statusWrites, statusWriteBytes, sliceWrites, sliceWriteBytes, taskNodes, taskCondition, taskCompliance, nodeRuns,
			nodeRunDuration, scheduleRuns, scheduleNextRun)
	})
}

// recordStatusWrite updates the metrics for one accepted status write: the write itself,
// the task's phase counts and conditions, and the node results it newly stored (rollout.NewResults).
func recordStatusWrite(task *ntv1.NodeTask) {
	st := &task.Status
	statusWrites.Inc()
	statusWriteBytes.Add(float64(rollout.ObjectSize(task, st)))
	ns, name := task.Namespace, task.Name
	for phase, n := range map[string]int32{
		string(ntv1.NodePending): st.Pending, string(ntv1.NodeRunning): st.Running,
		string(ntv1.NodeSucceeded): st.Succeeded, string(ntv1.NodeFailed): st.Failed,
	} {
		taskNodes.WithLabelValues(ns, name, phase).Set(float64(n))
	}
	if c := st.Compliance; c != nil {
		taskCompliance.WithLabelValues(ns, name, "compliant").Set(float64(c.Compliant))
		taskCompliance.WithLabelValues(ns, name, "noncompliant").Set(float64(c.NonCompliant))
		taskCompliance.WithLabelValues(ns, name, "unknown").Set(float64(c.Unknown))
	} else {
		taskCompliance.DeletePartialMatch(prometheus.Labels{"namespace": ns, "name": name})
	}
	for _, c := range st.Conditions {
		for _, s := range []metav1.ConditionStatus{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown} {
			v := 0.0
			if c.Status == s {
				v = 1
			}
			taskCondition.WithLabelValues(ns, name, c.Type, string(s)).Set(v)
		}
	}
}

// recordSliceWrite counts one accepted write of a NodeResultSlice and its bytes.
func recordSliceWrite(s *ntv1.NodeResultSlice) {
	sliceWrites.Inc()
	if b, err := json.Marshal(s); err == nil {
		sliceWriteBytes.Add(float64(len(b)))
	}
}

// recordResults counts the node results a pass newly stored (rollout.NewResults), in the
// task object or its slices.
func recordResults(task *ntv1.NodeTask, results []ntv1.NodeStatus) {
	ns, name := task.Namespace, task.Name
	for _, e := range results {
		nodeRuns.WithLabelValues(ns, name, string(e.Phase), e.Reason).Inc()
		if e.StartTime != nil && e.FinishTime != nil {
			nodeRunDuration.WithLabelValues(ns, name).Observe(e.FinishTime.Sub(e.StartTime.Time).Seconds())
		}
	}
}

// forgetMetrics deletes the series of a task that is gone.
func forgetMetrics(key types.NamespacedName) {
	labels := prometheus.Labels{"namespace": key.Namespace, "name": key.Name}
	taskNodes.DeletePartialMatch(labels)
	taskCondition.DeletePartialMatch(labels)
	taskCompliance.DeletePartialMatch(labels)
	nodeRuns.DeletePartialMatch(labels)
	nodeRunDuration.DeletePartialMatch(labels)
}

// recordRunStarted counts a run the controller has just created. It is counted at the
// create, not with the status write: a pass whose status write fails is repeated, and the
// repeat finds the run there already (AlreadyExists), so it would never be counted.
func recordRunStarted(s *ntv1.NodeTaskSchedule) {
	scheduleRuns.WithLabelValues(s.Namespace, s.Name, scheduleRunStarted).Inc()
}

// recordSchedulePass updates a schedule's missed and skipped times and its next run after a
// pass whose status write the API server accepted (or that had nothing to write): like the
// events, what a pass reports is then in the status, so the next pass does not report it
// again, while a pass whose write failed is repeated and reports it then.
//
// old is the schedule as the pass read it, st the status it wrote. Given-up times count as
// skipped when a run of the schedule was active under Forbid (the due run waited for it),
// else as missed.
func recordSchedulePass(old *ntv1.NodeTaskSchedule, plan *schedule.Plan, st *ntv1.NodeTaskScheduleStatus) {
	ns, name := old.Namespace, old.Name
	if m := plan.Missed; m != nil {
		n := m.Count
		if m.TooLate {
			n++
		}
		result := scheduleRunMissed
		if len(old.Status.Active) > 0 && old.Spec.ConcurrencyPolicy != ntv1.ConcurrencyReplace {
			result = scheduleRunSkipped
		}
		scheduleRuns.WithLabelValues(ns, name, result).Add(float64(n))
	}
	if st.NextScheduleTime != nil {
		scheduleNextRun.WithLabelValues(ns, name).Set(float64(st.NextScheduleTime.Unix()))
	} else {
		scheduleNextRun.DeleteLabelValues(ns, name)
	}
}

// forgetScheduleMetrics deletes the series of a schedule that is gone.
func forgetScheduleMetrics(key types.NamespacedName) {
	labels := prometheus.Labels{"namespace": key.Namespace, "name": key.Name}
	scheduleRuns.DeletePartialMatch(labels)
	scheduleNextRun.DeletePartialMatch(labels)
}
