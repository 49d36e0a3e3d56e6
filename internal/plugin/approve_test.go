package plugin

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// pausedTask is a task of 10 targets whose run 2 ran its first batch (win-a, win-b) and waits
// for approval.
func pausedTask() *ntv1.NodeTask {
	msg := "2 of 10 nodes succeeded, 0 failed, 0 running, 8 pending; the first batch succeeded (win-a, win-b) and the run waits " +
		"for approval: run `kubectl nodetask approve install-agent -n ops`, or set spec.rollout.approvedRun to 2"
	return &ntv1.NodeTask{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "install-agent", UID: "task-uid", Generation: 3,
			CreationTimestamp: *ago(2 * time.Hour)},
		Spec: ntv1.NodeTaskSpec{Script: &ntv1.ScriptSpec{Inline: ptr.To("Install-Agent")},
			Rollout: ntv1.RolloutSpec{FirstBatch: ptr.To(intstr.FromInt32(2)), PauseAfterFirstBatch: true}},
		Status: ntv1.NodeTaskStatus{
			ObservedGeneration: 3, Revision: "7c9d0e1f2a", Run: 2, StartTime: ago(5 * time.Minute),
			Targets: 10, Succeeded: 2, Pending: 8,
			Rollout: &ntv1.RolloutStatus{FirstBatch: []string{"win-a", "win-b"}, Batch: ntv1.BatchFirst},
			Conditions: []metav1.Condition{
				{Type: ntv1.ConditionReady, Status: metav1.ConditionFalse, Reason: ntv1.ReasonAwaitingApproval, Message: msg},
				{Type: ntv1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: ntv1.ReasonAwaitingApproval, Message: msg},
				{Type: ntv1.ConditionStalled, Status: metav1.ConditionFalse, Reason: ntv1.ReasonProgressing},
			},
			Nodes: []ntv1.NodeStatus{
				{Name: "win-a", Phase: ntv1.NodeSucceeded, Attempts: 1, StartTime: ago(5 * time.Minute), FinishTime: ago(4 * time.Minute)},
				{Name: "win-b", Phase: ntv1.NodeSucceeded, Attempts: 1, StartTime: ago(5 * time.Minute), FinishTime: ago(4 * time.Minute)},
			},
		},
	}
}

// fakeAPI is a fake API server holding the objects, with server-side apply.
func fakeAPI(objs ...client.Object) client.WithWatch {
	return fake.NewClientBuilder().WithScheme(newScheme()).WithObjects(objs...).WithStatusSubresource(&ntv1.NodeTask{}).
		WithReturnManagedFields().Build()
}

// runCommand runs the command made by newCmd with args against c, with stdin, and returns
// what it wrote to standard output and standard error.
func runCommand(t *testing.T, c client.WithWatch, newCmd func(*options) *cobra.Command, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	o := &options{config: genericclioptions.NewConfigFlags(false), now: func() time.Time { return now }, client: c,
		streams: genericiooptions.IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut}}
	o.config.Namespace = ptr.To("ops")
	cmd := newCmd(o)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// stored reads the task back from the fake API server.
func stored(t *testing.T, c client.Client, task *ntv1.NodeTask) *ntv1.NodeTask {
	t.Helper()
	got := &ntv1.NodeTask{}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(task), got); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestApprove(t *testing.T) {
	task := pausedTask()
	c := fakeAPI(task)
	out, errOut, err := runCommand(t, c, newApproveCommand, "", "install-agent", "--yes")
	if err != nil {
		t.Fatalf("%v\n%s%s", err, out, errOut)
	}
	got := stored(t, c, task)
	if got.Spec.Rollout.ApprovedRun != 2 {
		t.Errorf("approvedRun %d, want 2", got.Spec.Rollout.ApprovedRun)
	}
	if !got.Spec.Rollout.PauseAfterFirstBatch || got.Spec.Script == nil || got.Spec.Rollout.FirstBatch == nil {
		t.Errorf("the apply changed more than approvedRun: %+v", got.Spec)
	}
	if !slices.ContainsFunc(got.ManagedFields, func(f metav1.ManagedFieldsEntry) bool {
		return f.Manager == ApproveFieldManager && f.Operation == metav1.ManagedFieldsOperationApply &&
			f.FieldsV1 != nil && strings.Contains(string(f.FieldsV1.Raw), "approvedRun")
	}) {
		t.Errorf("approvedRun is not owned by %s: %+v", ApproveFieldManager, got.ManagedFields)
	}
	for _, want := range []string{
		"NodeTask ops/install-agent, run 2: the first batch (win-a, win-b) succeeded and the run waits for approval; approving lets the other 8 nodes start.",
		"spec.rollout.approvedRun set to 2: the other 8 nodes start, rollout.maxConcurrent at a time. Follow it with: kubectl nodetask wait install-agent -n ops",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if errOut != "" {
		t.Errorf("a warning for a run that waits for approval: %s", errOut)
	}
}

// TestApproveRefuses: nothing to approve is an error that changes nothing; a run already
// approved is left as it is, and that is no error.
func TestApproveRefuses(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*ntv1.NodeTask)
		err    string
		out    string
	}{
		{name: "no pause", mutate: func(t *ntv1.NodeTask) { t.Spec.Rollout.PauseAfterFirstBatch = false },
			err: "NodeTask ops/install-agent does not pause after its first batch (spec.rollout.pauseAfterFirstBatch is not set): there is nothing to approve; nothing changed"},
		{name: "no run yet", mutate: func(t *ntv1.NodeTask) { t.Status = ntv1.NodeTaskStatus{} },
			err: "NodeTask ops/install-agent has no run yet (status.run is 0): there is nothing to approve; nothing changed"},
		{name: "already approved", mutate: func(t *ntv1.NodeTask) { t.Spec.Rollout.ApprovedRun = 2 },
			out: "NodeTask ops/install-agent: run 2 is already approved (spec.rollout.approvedRun is 2); nothing changed.\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			task := pausedTask()
			tt.mutate(task)
			c := fakeAPI(task)
			before := stored(t, c, task)
			out, _, err := runCommand(t, c, newApproveCommand, "", "install-agent", "--yes")
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("got %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("got %v, want %q", err, tt.err)
			case tt.out != "" && out != tt.out:
				t.Errorf("output %q, want %q", out, tt.out)
			}
			if after := stored(t, c, task); after.ResourceVersion != before.ResourceVersion {
				t.Errorf("the task changed: %+v", after.Spec.Rollout)
			}
		})
	}
}

// TestApproveAhead: a run whose first batch still runs can be approved, after a warning and
// the question; without a yes nothing changes.
func TestApproveAhead(t *testing.T) {
	task := pausedTask()
	task.Status.Succeeded, task.Status.Running = 1, 1
	task.Status.Nodes[1] = ntv1.NodeStatus{Name: "win-b", Phase: ntv1.NodeRunning, Attempts: 1, StartTime: ago(time.Minute)}
	for _, typ := range []string{ntv1.ConditionReady, ntv1.ConditionReconciling} {
		cond := &task.Status.Conditions[slices.IndexFunc(task.Status.Conditions, func(c metav1.Condition) bool { return c.Type == typ })]
		cond.Reason, cond.Message = ntv1.ReasonFirstBatch, "1 of 10 nodes succeeded, 0 failed, 1 running, 8 pending; first batch: win-a, win-b (the other targets wait for it)"
	}
	c := fakeAPI(task)
	const warning = "Warning: run 2 does not wait for approval yet: its first batch has not finished (Reconciling: FirstBatch). " +
		"Approving ahead lets the other 8 nodes start as soon as the first batch (win-a, win-b) succeeded, with no pause\n"

	out, errOut, err := runCommand(t, c, newApproveCommand, "n\n", "install-agent")
	if err == nil || !strings.Contains(err.Error(), "not confirmed; nothing changed") {
		t.Fatalf("got %v\n%s", err, out)
	}
	if errOut != warning {
		t.Errorf("warning %q, want %q", errOut, warning)
	}
	if !strings.Contains(out, "Approve run 2? [y/N]") {
		t.Errorf("no question in:\n%s", out)
	}
	if got := stored(t, c, task).Spec.Rollout.ApprovedRun; got != 0 {
		t.Fatalf("approvedRun %d without a yes", got)
	}

	out, _, err = runCommand(t, c, newApproveCommand, "y\n", "install-agent")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got := stored(t, c, task).Spec.Rollout.ApprovedRun; got != 2 {
		t.Errorf("approvedRun %d, want 2", got)
	}
	if want := "spec.rollout.approvedRun set to 2: the other 8 nodes start as soon as the first batch (win-a, win-b) succeeded"; !strings.Contains(out, want) {
		t.Errorf("no %q in:\n%s", want, out)
	}
}

// TestApproveStalled: a run whose first batch failed can be approved, but the plugin says
// that nothing starts.
func TestApproveStalled(t *testing.T) {
	task := pausedTask()
	task.Status.Conditions = []metav1.Condition{
		{Type: ntv1.ConditionStalled, Status: metav1.ConditionTrue, Reason: ntv1.ReasonFirstBatchFailed,
			Message: "1 node of the first batch failed (win-b): the other targets do not start"},
	}
	c := fakeAPI(task)
	out, errOut, err := runCommand(t, c, newApproveCommand, "", "install-agent", "-y")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(errOut, "Warning: run 2 is Stalled (FirstBatchFailed): 1 node of the first batch failed (win-b)") {
		t.Errorf("warning %q", errOut)
	}
	if !strings.Contains(out, "spec.rollout.approvedRun set to 2: nothing starts: the first batch (win-a, win-b) failed") {
		t.Errorf("output:\n%s", out)
	}
}

// TestApproveAndRerunKeepEachOther: approve and rerun each apply one field, and a
// server-side apply removes what its field manager applied before and leaves out now: an
// approval must not take back the token of a rerun (a new revision: every node would run
// again), nor a rerun the approval.
func TestApproveAndRerunKeepEachOther(t *testing.T) {
	task := pausedTask()
	c := fakeAPI(task)
	if _, _, err := runCommand(t, c, newRerunCommand, "", "install-agent", "--yes"); err != nil {
		t.Fatal(err)
	}
	token := stored(t, c, task).Spec.RerunToken
	if token == "" {
		t.Fatal("rerun set no token")
	}
	if _, _, err := runCommand(t, c, newApproveCommand, "", "install-agent", "--yes"); err != nil {
		t.Fatal(err)
	}
	got := stored(t, c, task)
	if got.Spec.RerunToken != token || got.Spec.Rollout.ApprovedRun != 2 {
		t.Fatalf("after approve: rerunToken %q (want %q), approvedRun %d", got.Spec.RerunToken, token, got.Spec.Rollout.ApprovedRun)
	}
	// A rerun at another time: a new token, the approval of run 2 stays (and does not carry over).
	cmd := &cobra.Command{}
	cmd.SetContext(context.Background())
	if err := applyRerunToken(cmd, c, task, "rerun-2", false); err != nil {
		t.Fatal(err)
	}
	got = stored(t, c, task)
	if got.Spec.RerunToken != "rerun-2" || got.Spec.Rollout.ApprovedRun != 2 {
		t.Fatalf("after a second rerun: rerunToken %q, approvedRun %d", got.Spec.RerunToken, got.Spec.Rollout.ApprovedRun)
	}
}

// TestApproveConflict: when the manifests own approvedRun (a GitOps tool applied it), the
// plugin says so and changes nothing, unless told to take the field over.
func TestApproveConflict(t *testing.T) {
	task := pausedTask()
	c := fakeAPI(task)
	gitops := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": ntv1.GroupVersion.String(), "kind": "NodeTask",
		"metadata": map[string]any{"name": task.Name, "namespace": task.Namespace},
		"spec":     map[string]any{"rollout": map[string]any{"approvedRun": int64(1)}},
	}}
	if err := c.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(gitops), client.FieldOwner("argocd-controller")); err != nil {
		t.Fatal(err)
	}
	_, _, err := runCommand(t, c, newApproveCommand, "", "install-agent", "--yes")
	if err == nil || !strings.Contains(err.Error(), "another field manager owns spec.rollout.approvedRun of NodeTask ops/install-agent") {
		t.Fatalf("got %v", err)
	}
	if got := stored(t, c, task).Spec.Rollout.ApprovedRun; got != 1 {
		t.Fatalf("approvedRun %d after a conflict", got)
	}
	if _, _, err := runCommand(t, c, newApproveCommand, "", "install-agent", "--yes", "--force-conflicts"); err != nil {
		t.Fatal(err)
	}
	if got := stored(t, c, task).Spec.Rollout.ApprovedRun; got != 2 {
		t.Errorf("approvedRun %d with --force-conflicts", got)
	}
}

// TestStatusRolloutBatch: the header shows the first batch, and whether the run waits for
// approval or was approved.
func TestStatusRolloutBatch(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*ntv1.NodeTask)
	}{
		{"status-awaiting-approval", func(*ntv1.NodeTask) {}},
		{"status-approved", func(t *ntv1.NodeTask) {
			t.Spec.Rollout.ApprovedRun = 2
			t.Status.Rollout.Batch, t.Status.Rollout.Approved = ntv1.BatchRest, true
			t.Status.Succeeded, t.Status.Running, t.Status.Pending = 4, 2, 4
			msg := "4 of 10 nodes succeeded, 0 failed, 2 running, 4 pending (rollout.maxConcurrent 2)"
			t.Status.Conditions = []metav1.Condition{
				{Type: ntv1.ConditionReady, Status: metav1.ConditionFalse, Reason: ntv1.ReasonProgressing, Message: msg},
				{Type: ntv1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: ntv1.ReasonProgressing, Message: msg},
				{Type: ntv1.ConditionStalled, Status: metav1.ConditionFalse, Reason: ntv1.ReasonProgressing},
			}
			t.Status.Nodes = append(t.Status.Nodes,
				ntv1.NodeStatus{Name: "win-c", Phase: ntv1.NodeSucceeded, Attempts: 1, StartTime: ago(2 * time.Minute), FinishTime: ago(time.Minute)},
				ntv1.NodeStatus{Name: "win-d", Phase: ntv1.NodeSucceeded, Attempts: 1, StartTime: ago(2 * time.Minute), FinishTime: ago(time.Minute)},
				ntv1.NodeStatus{Name: "win-e", Phase: ntv1.NodeRunning, Attempts: 1, StartTime: ago(30 * time.Second)},
				ntv1.NodeStatus{Name: "win-f", Phase: ntv1.NodeRunning, Attempts: 1, StartTime: ago(30 * time.Second)})
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			task := pausedTask()
			tt.mutate(task)
			statusGolden(t, tt.name, task, statusFlags{})
		})
	}
}

// TestWaitAwaitingApproval: wait prints the AwaitingApproval message, which says how to go
// on, once under its progress line, and goes on waiting; the approval's progress follows.
func TestWaitAwaitingApproval(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out)
	task := pausedTask()
	firstBatch := task.DeepCopy()
	firstBatch.Status.Succeeded, firstBatch.Status.Running = 1, 1
	for i := range firstBatch.Status.Conditions[:2] {
		firstBatch.Status.Conditions[i].Reason = ntv1.ReasonFirstBatch
	}
	p.update(firstBatch, now)
	p.update(task, now.Add(2*time.Second))
	p.update(task, now.Add(3*time.Second)) // unchanged: no line, the message not again
	approved := task.DeepCopy()
	approved.Status.Running, approved.Status.Pending = 2, 6
	for i := range approved.Status.Conditions[:2] {
		approved.Status.Conditions[i].Reason = ntv1.ReasonProgressing
	}
	p.update(approved, now.Add(5*time.Second))
	p.stop()
	golden(t, "wait-approval", out.Bytes())
}

// TestWaitTimeoutAwaitingApproval: a wait that times out while the run waits for approval
// says how to approve it.
func TestWaitTimeoutAwaitingApproval(t *testing.T) {
	_, _, err := runCommand(t, fakeAPI(pausedTask()), newWaitCommand, "", "install-agent", "--timeout", "0s")
	if ExitCode(err) != ExitTimedOut {
		t.Fatalf("exit code %d: %v", ExitCode(err), err)
	}
	want := "timed out after 0s waiting for NodeTask ops/install-agent: 2/10 (20%), Reconciling: AwaitingApproval: " +
		"the run waits for approval after its first batch (kubectl nodetask approve install-agent -n ops)"
	if err.Error() != want {
		t.Errorf("got  %s\nwant %s", err, want)
	}
}
