package plugin

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
	"github.com/nodetask/nodetask-operator/internal/testutil"
)

// now is the fixed clock of every table test.
var now = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(-d)); return &t }

// golden compares got with testdata/name.golden (go test ./internal/plugin -update rewrites it).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	testutil.Golden(t, filepath.Join("testdata", name+".golden"), got)
}

// halfwayTask is a task halfway through its second run, with a node in every phase.
func halfwayTask() *ntv1.NodeTask {
	return &ntv1.NodeTask{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "install-agent", UID: "task-uid", Generation: 2,
			CreationTimestamp: *ago(2 * time.Hour)},
		Status: ntv1.NodeTaskStatus{
			ObservedGeneration: 2, Revision: "7c9d0e1f2a", Run: 2, StartTime: ago(10 * time.Minute),
			Targets: 6, Pending: 1, Running: 2, Succeeded: 1, Failed: 2,
			Conditions: []metav1.Condition{
				{Type: ntv1.ConditionReady, Status: metav1.ConditionFalse, Reason: "Progressing", Message: "run 2: 3 of 6 nodes finished (2 failed)"},
				{Type: ntv1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: "Progressing", Message: "run 2: 3 of 6 nodes finished (2 failed)"},
				{Type: ntv1.ConditionStalled, Status: metav1.ConditionFalse, Reason: "Progressing", Message: "within the failure budget (2 of 3)"},
			},
			Nodes: []ntv1.NodeStatus{
				{Name: "win-a", Phase: ntv1.NodeSucceeded, Run: 2, Attempts: 1, ExitCode: ptr.To[int32](0),
					Output: "Installed agent 1.2.3\nService started\n", StartTime: ago(10 * time.Minute), FinishTime: ago(9*time.Minute + 48*time.Second)},
				{Name: "win-b", Phase: ntv1.NodeFailed, Run: 2, Attempts: 3, ExitCode: ptr.To[int32](1), Reason: "Error",
					Output:    "Downloading agent\nError: access to C:\\ProgramData\\agent is denied; the service account needs write access there\n",
					StartTime: ago(8 * time.Minute), FinishTime: ago(7 * time.Minute)},
				{Name: "win-c", Phase: ntv1.NodeRunning, Run: 2, Attempts: 1, StartTime: ago(2 * time.Minute)},
				{Name: "win-d", Phase: ntv1.NodePending, Run: 1, Reason: "NodeNotReady"},
				{Name: "win-e", Phase: ntv1.NodeRebooting, Run: 2, Attempts: 1, ExitCode: ptr.To[int32](3010), Reason: "RebootRequested",
					StartTime: ago(4 * time.Minute), BootIDBefore: "boot-1"},
				{Name: "win-f", Phase: ntv1.NodeFailed, Run: 2, Attempts: 1, Reason: "Timeout", StartTime: ago(9 * time.Minute), FinishTime: ago(time.Minute)},
			},
		},
	}
}

func TestStatusTables(t *testing.T) {
	for _, tt := range []struct {
		name  string
		flags statusFlags
	}{
		{"status", statusFlags{}},
		{"status-failed", statusFlags{failed: true}},
		{"status-node", statusFlags{node: "win-b"}},
		{"status-node-json", statusFlags{node: "win-e", output: "json"}},
	} {
		t.Run(tt.name, func(t *testing.T) { statusGolden(t, tt.name, halfwayTask(), tt.flags) })
	}
}

// statusGolden compares what `status` prints for the task with testdata/name.golden.
func statusGolden(t *testing.T, name string, task *ntv1.NodeTask, flags statusFlags) {
	t.Helper()
	var out bytes.Buffer
	if err := printStatus(&out, task, flags, now); err != nil {
		t.Fatal(err)
	}
	golden(t, name, out.Bytes())
}

func TestStatusUnknownNode(t *testing.T) {
	err := printStatus(&bytes.Buffer{}, halfwayTask(), statusFlags{node: "win-z"}, now)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte(`no entry for node "win-z"`)) {
		t.Fatalf("got %v", err)
	}
}

func TestStatusCompliance(t *testing.T) {
	task := halfwayTask()
	task.Spec.Check = &ntv1.CheckSpec{Inline: ptr.To("exit 0")}
	task.Status = ntv1.NodeTaskStatus{ObservedGeneration: 2, Revision: "7c9d0e1f2a", Run: 2, Targets: 3, Succeeded: 2, Failed: 1,
		StartTime: ago(10 * time.Minute), CompletionTime: ago(7 * time.Minute),
		Compliance: &ntv1.ComplianceSummary{Compliant: 2, NonCompliant: 1},
		Conditions: []metav1.Condition{{Type: ntv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Succeeded",
			Message: "2 of 3 nodes succeeded; 1 failed (win-c), within rollout.maxFailures (1); 2 compliant (1 remediated), 1 node out of compliance (win-c)"}},
		Nodes: []ntv1.NodeStatus{
			{Name: "win-a", Phase: ntv1.NodeSucceeded, Compliance: ntv1.Compliant, StartTime: ago(10 * time.Minute), FinishTime: ago(9 * time.Minute)},
			{Name: "win-b", Phase: ntv1.NodeSucceeded, Compliance: ntv1.Remediated, Attempts: 1, ExitCode: ptr.To[int32](3010), Reason: "Rebooted",
				Output: "== check ==\nfirewall off\n== fix ==\nenabled\n== recheck ==\nfirewall on", StartTime: ago(9 * time.Minute), FinishTime: ago(7 * time.Minute)},
			{Name: "win-c", Phase: ntv1.NodeFailed, Compliance: ntv1.NonCompliant, Attempts: 1, ExitCode: ptr.To[int32](1), Reason: "StillNonCompliant",
				Output: "== check ==\nfirewall off\n== fix ==\nenabled\n== recheck ==\nfirewall off", StartTime: ago(9 * time.Minute), FinishTime: ago(8 * time.Minute)},
		},
	}
	statusGolden(t, "status-compliance", task, statusFlags{})
	statusGolden(t, "status-node-compliance", task, statusFlags{node: "win-c"})
}

func TestStatusReady(t *testing.T) {
	task := halfwayTask()
	task.Status = ntv1.NodeTaskStatus{ObservedGeneration: 2, Revision: "7c9d0e1f2a", Run: 2, Targets: 1, Succeeded: 1,
		StartTime: ago(10 * time.Minute), CompletionTime: ago(7 * time.Minute),
		Conditions: []metav1.Condition{{Type: ntv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Succeeded", Message: "run 2 succeeded on 1 node"}},
		Nodes:      []ntv1.NodeStatus{{Name: "win-a", Phase: ntv1.NodeSucceeded, Attempts: 1, ExitCode: ptr.To[int32](0), StartTime: ago(10 * time.Minute), FinishTime: ago(7 * time.Minute)}},
	}
	statusGolden(t, "status-ready", task, statusFlags{})
}

func TestTaskList(t *testing.T) {
	ready := halfwayTask()
	ready.Namespace, ready.Name = "apps", "rotate-certs"
	ready.Status = ntv1.NodeTaskStatus{ObservedGeneration: 2, Run: 1, Targets: 40, Succeeded: 40,
		Conditions: []metav1.Condition{{Type: ntv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Succeeded"}}}
	stalled := halfwayTask()
	stalled.Name = "set-registry"
	stalled.Status = ntv1.NodeTaskStatus{ObservedGeneration: 2, Run: 3, Targets: 10, Succeeded: 4, Failed: 3,
		Conditions: []metav1.Condition{{Type: ntv1.ConditionStalled, Status: metav1.ConditionTrue, Reason: "FailureBudgetExceeded"}}}
	fresh := halfwayTask()
	fresh.Name, fresh.Generation, fresh.Status = "new-task", 1, ntv1.NodeTaskStatus{}
	var out bytes.Buffer
	if err := printTaskList(&out, []ntv1.NodeTask{*halfwayTask(), *ready, *stalled, *fresh}, true, now); err != nil {
		t.Fatal(err)
	}
	golden(t, "list-all-namespaces", out.Bytes())
}

func TestTargetsTable(t *testing.T) {
	node := func(name, os string, mutate ...func(*corev1.Node)) corev1.Node {
		n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelOSStable: os, "pool": "win"}},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
		for _, m := range mutate {
			m(&n)
		}
		return n
	}
	nodes := []corev1.Node{
		node("win-b", "windows", func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse }),
		node("win-a", "windows"),
		node("win-c", "windows", func(n *corev1.Node) {
			n.Spec.Taints = []corev1.Taint{{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}}
		}),
		node("win-d", "windows", func(n *corev1.Node) { n.Labels["pool"] = "other" }),
		node("linux-a", "linux"),
	}
	task := &ntv1.NodeTask{Spec: ntv1.NodeTaskSpec{NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pool": "win"}}}}
	decisions, err := rollout.ExplainTargets(task, nodes)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := printTargets(&out, decisions); err != nil {
		t.Fatal(err)
	}
	golden(t, "targets", out.Bytes())
}

func TestWaitOutcome(t *testing.T) {
	cond := func(typ string, s metav1.ConditionStatus) metav1.Condition {
		return metav1.Condition{Type: typ, Status: s}
	}
	for _, tt := range []struct {
		name     string
		observed int64
		conds    []metav1.Condition
		settled  bool
		code     int
	}{
		{"ready", 2, []metav1.Condition{cond(ntv1.ConditionReady, metav1.ConditionTrue)}, true, ExitReady},
		{"stalled", 2, []metav1.Condition{cond(ntv1.ConditionReady, metav1.ConditionFalse), cond(ntv1.ConditionStalled, metav1.ConditionTrue)}, true, ExitStalled},
		{"reconciling", 2, []metav1.Condition{cond(ntv1.ConditionReady, metav1.ConditionFalse), cond(ntv1.ConditionReconciling, metav1.ConditionTrue)}, false, 0},
		// Ready for the previous spec is not Ready: the controller has not seen the new one.
		{"ready for an older generation", 1, []metav1.Condition{cond(ntv1.ConditionReady, metav1.ConditionTrue)}, false, 0},
		{"no status yet", 0, nil, false, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			task := &ntv1.NodeTask{ObjectMeta: metav1.ObjectMeta{Generation: 2},
				Status: ntv1.NodeTaskStatus{ObservedGeneration: tt.observed, Conditions: tt.conds}}
			settled, code := outcome(task)
			if settled != tt.settled || code != tt.code {
				t.Errorf("outcome = %v, %d; want %v, %d", settled, code, tt.settled, tt.code)
			}
		})
	}
}

// TestWaitPlainLines: where the output is not a terminal, wait prints a line for each change
// of progress and none while nothing changes.
func TestWaitPlainLines(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out)
	task := halfwayTask()
	p.update(task, now)
	p.update(task, now.Add(time.Second)) // unchanged: no line
	task.Status.Running, task.Status.Succeeded = 1, 2
	p.update(task, now.Add(2*time.Second))
	p.stop()
	golden(t, "wait-plain", out.Bytes())
}

func TestExitCode(t *testing.T) {
	if got := ExitCode(nil); got != 0 {
		t.Errorf("nil: %d", got)
	}
	if got := ExitCode(errors.New("x")); got != 1 {
		t.Errorf("plain error: %d", got)
	}
	wrapped := errors.Join(errors.New("context"), &ExitError{Code: ExitTimedOut, Err: errors.New("timed out")})
	if got := ExitCode(wrapped); got != ExitTimedOut {
		t.Errorf("timeout: %d", got)
	}
}

func TestPickPod(t *testing.T) {
	task := halfwayTask()
	owner := []metav1.OwnerReference{*metav1.NewControllerRef(task, ntv1.GroupVersion.WithKind("NodeTask"))}
	pod := func(name, node, run, attempt string, mutate ...func(*corev1.Pod)) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, OwnerReferences: owner,
			Labels: map[string]string{ntv1.LabelRun: run, ntv1.LabelAttempt: attempt}}, Spec: corev1.PodSpec{NodeName: node}}
		for _, m := range mutate {
			m(&p)
		}
		return p
	}
	pods := []corev1.Pod{
		pod("a1", "win-b", "2", "1"),
		pod("a3", "win-b", "2", "3"),
		pod("a2", "win-b", "2", "2"),
		pod("old-run", "win-b", "1", "9"),
		pod("other-node", "win-c", "2", "4"),
		pod("restart", "win-b", "2", "5", func(p *corev1.Pod) { p.Labels[ntv1.LabelRole] = ntv1.RoleReboot }),
		pod("foreign", "win-b", "2", "7", func(p *corev1.Pod) { p.OwnerReferences = nil }),
		// A pod of the machine that had this node's name before it was deleted and created again.
		pod("old-machine", "win-b", "2", "6", func(p *corev1.Pod) { p.Labels[ntv1.LabelNodeUID] = "old-uid" }),
	}
	for i := range pods[:3] {
		pods[i].Labels[ntv1.LabelNodeUID] = "node-uid"
	}
	for _, tt := range []struct {
		machine types.UID
		attempt int32
		want    string
	}{
		{"node-uid", 0, "a3"}, {"node-uid", 1, "a1"}, {"node-uid", 2, "a2"}, {"node-uid", 7, ""}, {"node-uid", 6, ""},
		// The node is gone: no machine to tell them apart by, the last attempt wins.
		{"", 0, "old-machine"},
	} {
		got := pickPod(task, pods, "win-b", tt.machine, 2, tt.attempt)
		name := ""
		if got != nil {
			name = got.Name
		}
		if name != tt.want {
			t.Errorf("machine %q, attempt %d: got %q, want %q", tt.machine, tt.attempt, name, tt.want)
		}
	}
}
