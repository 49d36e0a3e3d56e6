package plugin

import (
	"bytes"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// healthTask is a task of 10 targets whose check kube-proxy-windows stopped holding 3 minutes
// ago, with 2 nodes still running: they finish, no other node starts.
func healthTask() *ntv1.NodeTask {
	msg := "4 of 10 nodes succeeded, 0 failed, 2 running, 4 pending; health check kube-proxy-windows does not hold " +
		"(the expression is false for 1 of the 2 objects selected), since 2026-11-28T11:57:00Z: no node starts until it does"
	return &ntv1.NodeTask{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "install-agent", UID: "task-uid", Generation: 1,
			CreationTimestamp: *ago(2 * time.Hour)},
		Spec: ntv1.NodeTaskSpec{Script: &ntv1.ScriptSpec{Inline: ptr.To("Install-Agent")},
			Rollout: ntv1.RolloutSpec{MaxConcurrent: ptr.To(intstr.FromInt32(2)), HealthChecks: []ntv1.HealthCheck{
				{Name: "ingress-available", Object: ntv1.HealthCheckObject{APIVersion: "apps/v1", Kind: "Deployment", Name: "ingress"},
					Expression: "object.status.availableReplicas >= 1"},
				{Name: "kube-proxy-windows", Object: ntv1.HealthCheckObject{APIVersion: "apps/v1", Kind: "DaemonSet",
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-proxy-windows"}}},
					Expression: "object.status.numberUnavailable == 0", FailAfterSeconds: ptr.To[int32](600)},
			}}},
		Status: ntv1.NodeTaskStatus{
			ObservedGeneration: 1, Revision: "7c9d0e1f2a", Run: 1, StartTime: ago(12 * time.Minute),
			Targets: 10, Succeeded: 4, Running: 2, Pending: 4,
			Rollout: &ntv1.RolloutStatus{HealthChecks: []ntv1.HealthCheckStatus{
				{Name: "ingress-available", Healthy: true, Since: ago(12 * time.Minute)},
				{Name: "kube-proxy-windows", Since: ago(3 * time.Minute), Message: "the expression is false for 1 of the 2 objects selected"},
			}},
			Conditions: []metav1.Condition{
				{Type: ntv1.ConditionReady, Status: metav1.ConditionFalse, Reason: ntv1.ReasonHealthCheckFailing, Message: msg},
				{Type: ntv1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: ntv1.ReasonHealthCheckFailing, Message: msg},
				{Type: ntv1.ConditionStalled, Status: metav1.ConditionFalse, Reason: ntv1.ReasonProgressing},
			},
			Nodes: []ntv1.NodeStatus{
				{Name: "win-a", Phase: ntv1.NodeSucceeded, Attempts: 1, StartTime: ago(12 * time.Minute), FinishTime: ago(10 * time.Minute)},
				{Name: "win-b", Phase: ntv1.NodeSucceeded, Attempts: 1, StartTime: ago(12 * time.Minute), FinishTime: ago(10 * time.Minute)},
				{Name: "win-c", Phase: ntv1.NodeSucceeded, Attempts: 1, StartTime: ago(10 * time.Minute), FinishTime: ago(8 * time.Minute)},
				{Name: "win-d", Phase: ntv1.NodeSucceeded, Attempts: 1, StartTime: ago(10 * time.Minute), FinishTime: ago(8 * time.Minute)},
				{Name: "win-e", Phase: ntv1.NodeRunning, Attempts: 1, StartTime: ago(4 * time.Minute)},
				{Name: "win-f", Phase: ntv1.NodeRunning, Attempts: 1, StartTime: ago(4 * time.Minute)},
			},
		},
	}
}

// TestStatusHealthChecks: the header shows each health check, whether it held and for how
// long, why not, and when a failing one stalls the run; a task without checks shows none
// (status.golden).
func TestStatusHealthChecks(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*ntv1.NodeTask)
	}{
		{"status-health-check-failing", func(*ntv1.NodeTask) {}},
		{"status-health-check-stalled", func(t *ntv1.NodeTask) {
			t.Status.Rollout.HealthChecks[1].Since = ago(11 * time.Minute)
			t.Status.Succeeded, t.Status.Running = 6, 0
			for i := 4; i < 6; i++ {
				t.Status.Nodes[i].Phase, t.Status.Nodes[i].FinishTime = ntv1.NodeSucceeded, ago(2*time.Minute)
			}
			msg := "health check kube-proxy-windows does not hold (the expression is false for 1 of the 2 objects selected) " +
				"past its failAfterSeconds, since 2026-11-28T11:49:00Z: no further node starts. The rollout goes on by itself " +
				"once the check holds again: look at what it checks"
			t.Status.Conditions = []metav1.Condition{
				{Type: ntv1.ConditionReady, Status: metav1.ConditionFalse, Reason: ntv1.ReasonHealthCheckFailing, Message: msg},
				{Type: ntv1.ConditionReconciling, Status: metav1.ConditionFalse, Reason: ntv1.ReasonHealthCheckFailing,
					Message: "stalled: 6 of 10 nodes succeeded, 0 failed, 0 running, 4 pending"},
				{Type: ntv1.ConditionStalled, Status: metav1.ConditionTrue, Reason: ntv1.ReasonHealthCheckFailing, Message: msg},
			}
		}},
		{"status-health-checks-hold", func(t *ntv1.NodeTask) {
			t.Status.Rollout.HealthChecks[1] = ntv1.HealthCheckStatus{Name: "kube-proxy-windows", Healthy: true, Since: ago(30 * time.Second)}
			t.Status.Running, t.Status.Pending = 2, 4
			msg := "4 of 10 nodes succeeded, 0 failed, 2 running, 4 pending (rollout.maxConcurrent 2)"
			for i := range t.Status.Conditions[:2] {
				t.Status.Conditions[i].Reason, t.Status.Conditions[i].Message = ntv1.ReasonProgressing, msg
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			task := healthTask()
			tt.mutate(task)
			statusGolden(t, tt.name, task, statusFlags{})
		})
	}
}

// TestWaitHealthCheckFailing: wait prints the HealthCheckFailing message without its counts
// once, again only when the checks that fail change, and nothing more once they hold.
func TestWaitHealthCheckFailing(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out)
	task := healthTask()
	before := task.DeepCopy()
	before.Status.Succeeded, before.Status.Running = 3, 2
	before.Status.Pending = 5
	before.Status.Rollout.HealthChecks[1] = ntv1.HealthCheckStatus{Name: "kube-proxy-windows", Healthy: true, Since: ago(12 * time.Minute)}
	for i := range before.Status.Conditions[:2] {
		before.Status.Conditions[i].Reason = ntv1.ReasonProgressing
		before.Status.Conditions[i].Message = "3 of 10 nodes succeeded, 0 failed, 2 running, 5 pending (rollout.maxConcurrent 2)"
	}
	p.update(before, now)
	p.update(task, now.Add(2*time.Second))
	// The running nodes finish: a new progress line, the same checks fail: no notice again.
	finished := task.DeepCopy()
	finished.Status.Succeeded, finished.Status.Running = 6, 0
	for i := range finished.Status.Conditions[:2] {
		finished.Status.Conditions[i].Message = "6 of 10 nodes succeeded, 0 failed, 0 running, 4 pending; health check kube-proxy-windows " +
			"does not hold (the expression is false for 1 of the 2 objects selected), since 2026-11-28T11:57:00Z: no node starts until it does"
	}
	p.update(finished, now.Add(4*time.Second))
	p.update(finished, now.Add(5*time.Second))
	holds := finished.DeepCopy()
	holds.Status.Running, holds.Status.Pending = 2, 2
	for i := range holds.Status.Conditions[:2] {
		holds.Status.Conditions[i].Reason = ntv1.ReasonProgressing
		holds.Status.Conditions[i].Message = "6 of 10 nodes succeeded, 0 failed, 2 running, 2 pending (rollout.maxConcurrent 2)"
	}
	p.update(holds, now.Add(15*time.Second))
	p.stop()
	golden(t, "wait-health-check", out.Bytes())
}

// TestWaitTimeoutHealthCheckFailing: a wait that times out while a health check holds the
// rollout back names the check and where to look.
func TestWaitTimeoutHealthCheckFailing(t *testing.T) {
	_, _, err := runCommand(t, fakeAPI(healthTask()), newWaitCommand, "", "install-agent", "--timeout", "0s")
	if ExitCode(err) != ExitTimedOut {
		t.Fatalf("exit code %d: %v", ExitCode(err), err)
	}
	want := "timed out after 0s waiting for NodeTask ops/install-agent: 4/10 (40%), Reconciling: HealthCheckFailing: " +
		"no node starts while health check kube-proxy-windows does not hold; the rollout goes on by itself once it holds " +
		"(kubectl nodetask status install-agent -n ops shows each check)"
	if err.Error() != want {
		t.Errorf("got  %s\nwant %s", err, want)
	}
}

// TestWaitStalledHealthCheck: past its failAfterSeconds the task is Stalled: wait exits 1
// with the reason and the message.
func TestWaitStalledHealthCheck(t *testing.T) {
	task := healthTask()
	msg := "health check kube-proxy-windows does not hold (the expression is false) past its failAfterSeconds, since 2026-11-28T11:49:00Z: no further node starts"
	task.Status.Conditions = []metav1.Condition{
		{Type: ntv1.ConditionReady, Status: metav1.ConditionFalse, Reason: ntv1.ReasonHealthCheckFailing, Message: msg},
		{Type: ntv1.ConditionReconciling, Status: metav1.ConditionFalse, Reason: ntv1.ReasonHealthCheckFailing},
		{Type: ntv1.ConditionStalled, Status: metav1.ConditionTrue, Reason: ntv1.ReasonHealthCheckFailing, Message: msg},
	}
	out, _, err := runCommand(t, fakeAPI(task), newWaitCommand, "", "install-agent", "--timeout", "0s")
	if ExitCode(err) != ExitStalled {
		t.Fatalf("exit code %d: %v", ExitCode(err), err)
	}
	if want := "NodeTask ops/install-agent is Stalled (HealthCheckFailing): " + msg + "\n"; !bytes.Contains([]byte(out), []byte(want)) {
		t.Errorf("output %q lacks %q", out, want)
	}
}
