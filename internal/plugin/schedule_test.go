package plugin

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/schedule"
)

// weeklySchedule is a schedule with a run going, a manual run and a failed run in its history.
func weeklySchedule() *ntv1.NodeTaskSchedule {
	sat := time.Date(2026, 11, 28, 2, 0, 0, 0, time.UTC) // 10 hours before now
	at := func(t time.Time) *metav1.Time { m := metav1.NewTime(t); return &m }
	manual := sat.Add(-30 * time.Hour).Add(17 * time.Second)
	return &ntv1.NodeTaskSchedule{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "weekly-patch", UID: "schedule-uid", Generation: 3},
		Spec: ntv1.NodeTaskScheduleSpec{Schedule: "0 3 * * 6", TimeZone: ptr.To("Europe/Berlin"), ConcurrencyPolicy: ntv1.ConcurrencyForbid,
			Template: ntv1.NodeTaskTemplate{
				Metadata: ntv1.NodeTaskTemplateMetadata{Labels: map[string]string{"team": "windows"}},
				Spec:     ntv1.NodeTaskSpec{Script: &ntv1.ScriptSpec{Inline: ptr.To("Install-WindowsUpdate")}},
			}},
		Status: ntv1.NodeTaskScheduleStatus{
			ObservedGeneration: 3,
			LastScheduleTime:   at(sat),
			NextScheduleTime:   at(sat.Add(7 * 24 * time.Hour)),
			Active:             []ntv1.ScheduleRunReference{{Name: schedule.RunName("weekly-patch", sat), ScheduledTime: *at(sat)}},
			Conditions: []metav1.Condition{
				{Type: ntv1.ConditionReady, Status: metav1.ConditionFalse, Reason: ntv1.ReasonRunActive, Message: "running weekly-patch-29930520 (3 of 4 nodes succeeded, 0 failed)"},
				{Type: ntv1.ConditionStalled, Status: metav1.ConditionFalse, Reason: ntv1.ReasonScheduled},
			},
			History: []ntv1.ScheduleRun{
				{Name: schedule.RunName("weekly-patch", sat), ScheduledTime: *at(sat), StartTime: at(sat.Add(time.Second)),
					Targets: 4, Succeeded: 3, Outcome: ntv1.RunRunning},
				{Name: schedule.ManualRunName("weekly-patch", manual), ScheduledTime: *at(manual), StartTime: at(manual.Add(time.Second)),
					CompletionTime: at(manual.Add(20 * time.Minute)), Targets: 4, Succeeded: 4, Outcome: ntv1.RunSucceeded},
				{Name: schedule.RunName("weekly-patch", sat.Add(-7*24*time.Hour)), ScheduledTime: *at(sat.Add(-7 * 24 * time.Hour)),
					StartTime: at(sat.Add(-7*24*time.Hour + time.Second)), CompletionTime: at(sat.Add(-7*24*time.Hour + 45*time.Minute)),
					Targets: 4, Succeeded: 2, Failed: 2, Outcome: ntv1.RunFailed, Reason: ntv1.ReasonFailureBudgetExceeded},
			},
		},
	}
}

func TestHistoryTable(t *testing.T) {
	var out bytes.Buffer
	if err := printHistory(&out, weeklySchedule(), now); err != nil {
		t.Fatal(err)
	}
	golden(t, "history", out.Bytes())
}

func TestHistorySuspendedWithoutRuns(t *testing.T) {
	s := weeklySchedule()
	s.Spec.Suspend = true
	s.Status = ntv1.NodeTaskScheduleStatus{ObservedGeneration: 2}
	var out bytes.Buffer
	if err := printHistory(&out, s, now); err != nil {
		t.Fatal(err)
	}
	golden(t, "history-suspended", out.Bytes())
}

// TestManualRun: the NodeTask run-now creates is one the schedule controller takes for its
// own (label and controller owner, as observeRuns lists them) but not for a scheduled time.
func TestManualRun(t *testing.T) {
	s := weeklySchedule()
	run := manualRun(s, now.Add(1500*time.Millisecond))
	if run.Name != "weekly-patch-manual-1795867201" || run.Namespace != "ops" {
		t.Errorf("name %s/%s", run.Namespace, run.Name)
	}
	if run.Labels[ntv1.LabelSchedule] != "weekly-patch" || run.Labels["team"] != "windows" {
		t.Errorf("labels %v", run.Labels)
	}
	if got := run.Annotations[ntv1.AnnotationScheduledTime]; got != "2026-11-28T12:00:01Z" {
		t.Errorf("scheduled time %q", got)
	}
	ref := metav1.GetControllerOf(run)
	if ref == nil || ref.UID != s.UID || ref.Kind != "NodeTaskSchedule" || ref.BlockOwnerDeletion != nil {
		t.Errorf("controller reference %+v", ref)
	}
	if run.Spec.Script == nil || *run.Spec.Script.Inline != "Install-WindowsUpdate" {
		t.Errorf("spec not copied from the template: %+v", run.Spec)
	}
	entry := schedule.ObserveRun(run)
	if schedule.IsScheduled(s.Name, entry) {
		t.Errorf("a manual run taken for a scheduled one: %+v", entry)
	}
}

func TestScheduleArg(t *testing.T) {
	for arg, want := range map[string]string{
		"nodetaskschedule/weekly": "weekly", "nts/weekly": "weekly", "NodeTaskSchedules.nodetask.io/weekly": "weekly",
		"weekly": "", "nodetask/weekly": "", "pod/weekly": "",
	} {
		got, ok := scheduleArg(arg)
		if got != want || ok != (want != "") {
			t.Errorf("%s: got %q, %v", arg, got, ok)
		}
	}
}

// runNow runs `run-now weekly-patch --yes` against a fake API server holding the schedule
// and one Windows node, and returns the NodeTasks there afterwards.
func runNow(t *testing.T, s *ntv1.NodeTaskSchedule) ([]ntv1.NodeTask, string, error) {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "win-a", Labels: map[string]string{corev1.LabelOSStable: "windows"}},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
	c := fake.NewClientBuilder().WithScheme(newScheme()).WithObjects(s, node).Build()
	var out bytes.Buffer
	o := &options{config: genericclioptions.NewConfigFlags(false), now: func() time.Time { return now }, client: c,
		streams: genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: &out, ErrOut: &out}}
	o.config.Namespace = ptr.To(s.Namespace)
	cmd := newRunNowCommand(o)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	cmd.SetArgs([]string{"nodetaskschedule/" + s.Name, "--yes"})
	cmd.SetOut(&out)
	err := cmd.ExecuteContext(context.Background())
	var list ntv1.NodeTaskList
	if lerr := c.List(context.Background(), &list); lerr != nil {
		t.Fatal(lerr)
	}
	return list.Items, out.String(), err
}

func TestRunNow(t *testing.T) {
	s := weeklySchedule()
	s.Status.Active = nil
	tasks, out, err := runNow(t, s)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(tasks) != 1 || tasks[0].Name != schedule.ManualRunName("weekly-patch", now) {
		t.Fatalf("tasks %+v", tasks)
	}
	if ref := metav1.GetControllerOf(&tasks[0]); ref == nil || ref.UID != s.UID {
		t.Errorf("not owned by the schedule: %+v", tasks[0].OwnerReferences)
	}
	if !strings.Contains(out, "run on 1 nodes") || !strings.Contains(out, "created. Follow it with: kubectl nodetask wait "+tasks[0].Name+" -n ops") {
		t.Errorf("output:\n%s", out)
	}
}

// TestRunNowRefusesWhileActive: two runs of one schedule at once would race for the nodes.
func TestRunNowRefusesWhileActive(t *testing.T) {
	tasks, out, err := runNow(t, weeklySchedule())
	if err == nil || !strings.Contains(err.Error(), "has an active run (weekly-patch-29930520)") {
		t.Fatalf("got %v\n%s", err, out)
	}
	if len(tasks) != 0 {
		t.Errorf("created %d NodeTasks", len(tasks))
	}
}

// runTargets runs `targets ARGS...` against a fake API server holding the objects and three
// Windows nodes (win-a and win-b in pool "patch", win-c in pool "other") and a Linux node,
// with stdin for -f -, and returns what it printed.
func runTargets(t *testing.T, stdin string, objs []client.Object, args ...string) (string, error) {
	t.Helper()
	node := func(name, os, pool string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelOSStable: os, "pool": pool}},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
	}
	objs = append(objs, node("win-a", "windows", "patch"), node("win-b", "windows", "patch"), node("win-c", "windows", "other"),
		node("linux-a", "linux", "patch"))
	c := fake.NewClientBuilder().WithScheme(newScheme()).WithObjects(objs...).Build()
	var out bytes.Buffer
	o := &options{config: genericclioptions.NewConfigFlags(false), now: func() time.Time { return now }, client: c,
		streams: genericiooptions.IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &out}}
	o.config.Namespace = ptr.To("ops")
	cmd := newTargetsCommand(o)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// TestTargetsOfASchedule: `targets nts/NAME` judges the schedule's template, not its last
// run, and says so; a schedule manifest with -f gives the same decisions.
func TestTargetsOfASchedule(t *testing.T) {
	s := weeklySchedule()
	s.Spec.Template.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"pool": "patch"}}
	for _, arg := range []string{"nodetaskschedule/weekly-patch", "nts/weekly-patch"} {
		out, err := runTargets(t, "", []client.Object{s}, arg)
		if err != nil {
			t.Fatalf("%s: %v\n%s", arg, err, out)
		}
		golden(t, "targets-schedule", []byte(out))
	}

	manifest := `apiVersion: nodetask.io/v1alpha1
kind: NodeTaskSchedule
metadata: {name: weekly-patch}
spec:
  schedule: "0 3 * * 6"
  template:
    spec:
      script: {inline: Install-WindowsUpdate}
      nodeSelector: {matchLabels: {pool: patch}}
`
	out, err := runTargets(t, manifest, nil, "-f", "-", "-o", "json")
	if err != nil {
		t.Fatalf("-f: %v\n%s", err, out)
	}
	for _, want := range []string{`"node": "win-a"`, `"target": true`, `"node": "win-c"`, "spec.nodeSelector does not match"} {
		if !strings.Contains(out, want) {
			t.Errorf("-f schedule manifest: no %q in\n%s", want, out)
		}
	}
	if strings.Count(out, `"target": true`) != 2 {
		t.Errorf("want win-a and win-b as the only targets:\n%s", out)
	}
}

// TestTargetsOfAMissingSchedule: a schedule that is not there is an error naming it, not
// the targets of a task of that name.
func TestTargetsOfAMissingSchedule(t *testing.T) {
	task := &ntv1.NodeTask{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "weekly-patch"}}
	_, err := runTargets(t, "", []client.Object{task}, "nts/weekly-patch")
	if err == nil || !strings.Contains(err.Error(), "NodeTaskSchedule ops/weekly-patch") {
		t.Fatalf("got %v", err)
	}
}
