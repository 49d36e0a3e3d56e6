package rollout

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// midRollout is the observed state of a task halfway through: a quarter of the nodes
// succeeded, a quarter running, half pending, with stored status from the last reconcile.
func midRollout(n int) *Observed {
	task := newTask(func(t *ntv1.NodeTask) { t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("25%")) })
	rev := Revision(&task.Spec)
	obs := &Observed{Task: task, Revision: rev, Nodes: make(map[string]*corev1.Node, n), Now: t0, Admission: admitted}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("akswin%06d", i)
		obs.Nodes[name] = winNode(name)
		switch {
		case i < n/4:
			obs.Pods = append(obs.Pods, taskPod(task, name, 1, 1, exited(0, "configured KeepAliveTime = 300000", t0.Add(-time.Minute))))
		case i < n/2:
			obs.Pods = append(obs.Pods, taskPod(task, name, 1, 1))
		}
	}
	task.Status = ComputeStatus(obs, ComputePlan(obs), Outcome{})
	return obs
}

// BenchmarkReconcileDecision measures one reconcile's pure work: the plan, the new status,
// and the comparison that decides whether to write it.
func BenchmarkReconcileDecision(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			obs := midRollout(n)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				p := ComputePlan(obs)
				st := ComputeStatus(obs, p, Outcome{})
				if StatusChanged(&obs.Task.Status, &st) {
					b.Fatal("a settled status changed")
				}
			}
		})
	}
}

// BenchmarkStatusFit measures fitting 4 KiB outputs of every node into the size budget.
func BenchmarkStatusFit(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			task := newTask()
			rev := Revision(&task.Spec)
			obs := &Observed{Task: task, Revision: rev, Nodes: map[string]*corev1.Node{}, Now: t0, Admission: admitted}
			for i := 0; i < n; i++ {
				name := fmt.Sprintf("akswin%06d", i)
				obs.Nodes[name] = winNode(name)
				obs.Pods = append(obs.Pods, taskPod(task, name, 1, 1, exited(1, failureMessage, t0)))
			}
			p := ComputePlan(obs)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				_ = ComputeStatus(obs, p, Outcome{})
			}
		})
	}
}
