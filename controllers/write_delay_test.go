package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// Item 11: status writes are held back while only progress changes, never when a condition
// changes or a run starts.
func TestWriteDelay(t *testing.T) {
	cond := func(typ string, status metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg}
	}
	stored := ntv1.NodeTaskStatus{Run: 1, ObservedGeneration: 1, Conditions: []metav1.Condition{
		cond(ntv1.ConditionReady, metav1.ConditionFalse, ntv1.ReasonProgressing, "1 of 5 nodes succeeded"),
		cond(ntv1.ConditionReconciling, metav1.ConditionTrue, ntv1.ReasonProgressing, "1 of 5 nodes succeeded"),
	}}
	progress := *stored.DeepCopy()
	progress.Conditions[0].Message, progress.Conditions[1].Message = "2 of 5 nodes succeeded", "2 of 5 nodes succeeded"
	progress.Succeeded = 2
	ready := *stored.DeepCopy()
	ready.Conditions[0] = cond(ntv1.ConditionReady, metav1.ConditionTrue, ntv1.ReasonSucceeded, "succeeded on all 5 nodes")
	newRun := *progress.DeepCopy()
	newRun.Run = 2
	newGeneration := *progress.DeepCopy()
	newGeneration.ObservedGeneration = 2

	cases := []struct {
		name      string
		lastWrite time.Duration // ago; 0 for never
		st        ntv1.NodeTaskStatus
		want      time.Duration
	}{
		{"first write", 0, progress, 0},
		{"progress right after a write waits", 300 * time.Millisecond, progress, 700 * time.Millisecond},
		{"progress a second after a write goes", time.Second, progress, 0},
		{"a condition that changes goes at once", 300 * time.Millisecond, ready, 0},
		{"a new run goes at once", 300 * time.Millisecond, newRun, 0},
		{"a new generation goes at once", 300 * time.Millisecond, newGeneration, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			r := &NodeTaskReconciler{}
			task := newTask()
			task.Status = stored
			if tc.lastWrite > 0 {
				storeMark(&r.lastWrite, task, t0.Add(-tc.lastWrite))
			}
			g.Expect(max(r.writeDelay(task, &tc.st, t0), 0)).To(Equal(tc.want))
			// Another incarnation of the task under the same name remembers nothing.
			other := task.DeepCopy()
			other.UID = "other"
			g.Expect(r.writeDelay(other, &tc.st, t0)).To(BeZero())
		})
	}
}
