package rollout

import (
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// Tests of spec.check and mode Audit: how the wrapper's steps are read, each node's
// compliance state, and the order of check, claim, drain, fix, re-check and restart.

// hostState is what one simulated host's check, fix and re-check exit with.
type hostState struct{ check, fix, recheck int32 }

// compliant is a host that is already right; drifted one that the fix repairs.
var (
	compliant = hostState{check: 0}
	drifted   = hostState{check: 1, fix: 0, recheck: 0}
)

// podEnv returns the value of a pod's environment variable.
func podEnv(p *corev1.Pod, name string) string {
	for _, e := range p.Spec.Containers[0].Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// wrapperEnds plays the end of a check pod as the wrapper (wrapper/run.ps1) reports it, for a
// host in state h: the steps its NODETASK_MODE runs, one line each, then the pod's exit code.
// It must agree with the simulated kubelet's stage (test/kwok/windows-kubelet.yaml).
func wrapperEnds(h hostState, at time.Time) podOpt {
	return func(p *corev1.Pod) {
		mode := podEnv(p, "NODETASK_MODE")
		nc := podEnv(p, "NODETASK_NONCOMPLIANT_EXIT_CODE")
		msg := fmt.Sprintf("checked\n"+stepMarker, "check", h.check)
		code := h.check
		if fmt.Sprint(h.check) == nc {
			code = 0
			if mode == "CheckFix" {
				msg += fmt.Sprintf("\n"+stepMarker, "fix", h.fix)
				code = h.fix
				if h.fix == 0 || h.fix == 3010 {
					msg += fmt.Sprintf("\n"+stepMarker, "recheck", h.recheck)
					if h.recheck != 0 {
						code = h.recheck
					}
				}
			}
		}
		exited(code, msg, at)(p)
	}
}

func TestSplitSteps(t *testing.T) {
	for _, tc := range []struct {
		msg, rest           string
		check, fix, recheck *int32
	}{
		{msg: "plain output", rest: "plain output"},
		{msg: "out\nnodetask: check exit code 0", rest: "out", check: ptr.To[int32](0)},
		{msg: "== check ==\nx\n== fix ==\ny\nnodetask: check exit code 1\nnodetask: fix exit code 3010\nnodetask: recheck exit code 0",
			rest: "== check ==\nx\n== fix ==\ny", check: ptr.To[int32](1), fix: ptr.To[int32](3010), recheck: ptr.To[int32](0)},
		{msg: "nodetask: check exit code -1073741510", rest: "", check: ptr.To[int32](-1073741510)},
		// A step line the script itself printed earlier is output, not a step.
		{msg: "nodetask: fix exit code 0\nlater output", rest: "nodetask: fix exit code 0\nlater output"},
		{msg: "x\nnodetask: check exit code one", rest: "x\nnodetask: check exit code one"},
		{msg: "x\nnodetask: check exit code 1\nnodetask: check exit code 1", rest: "x\nnodetask: check exit code 1", check: ptr.To[int32](1)},
	} {
		g := NewWithT(t)
		rest, s := splitSteps(tc.msg)
		g.Expect(rest).To(Equal(tc.rest), tc.msg)
		g.Expect(s.check).To(Equal(tc.check), tc.msg)
		g.Expect(s.fix).To(Equal(tc.fix), tc.msg)
		g.Expect(s.recheck).To(Equal(tc.recheck), tc.msg)
	}
}

// TestCheckPodEntry pins each per-node state a check pod can end in.
func TestCheckPodEntry(t *testing.T) {
	type want struct {
		phase      ntv1.NodePhase
		reason     string
		exitCode   *int32
		compliance ntv1.Compliance
	}
	for _, tc := range []struct {
		name    string
		audit   bool
		attempt int32
		host    hostState
		want    want
	}{
		{"compliant: nothing runs", false, 1, compliant, want{ntv1.NodeSucceeded, "", nil, ntv1.Compliant}},
		{"remediated", false, 1, drifted, want{ntv1.NodeSucceeded, "", nil, ntv1.Remediated}},
		{"remediated, restart pending", false, 1, hostState{1, 3010, 0},
			want{ntv1.NodeSucceeded, ntv1.NodeReasonRebootRequired, ptr.To[int32](3010), ntv1.Remediated}},
		{"still non-compliant", false, 1, hostState{1, 0, 1},
			want{ntv1.NodeFailed, ntv1.NodeReasonStillNonCompliant, ptr.To[int32](1), ntv1.NonCompliant}},
		{"the fix failed: no re-check", false, 1, hostState{1, 5, 0},
			want{ntv1.NodeFailed, ntv1.NodeReasonError, ptr.To[int32](5), ntv1.NonCompliant}},
		{"the re-check failed", false, 1, hostState{1, 0, 7},
			want{ntv1.NodeFailed, ntv1.NodeReasonCheckFailed, ptr.To[int32](7), ntv1.NonCompliant}},
		{"the check failed", false, 1, hostState{check: 2},
			want{ntv1.NodeFailed, ntv1.NodeReasonCheckFailed, ptr.To[int32](2), ""}},
		{"audit: compliant", true, 1, compliant, want{ntv1.NodeSucceeded, "", nil, ntv1.Compliant}},
		{"audit: non-compliant is an answer, not a failure", true, 1, drifted, want{ntv1.NodeSucceeded, "", nil, ntv1.NonCompliant}},
		{"audit: the check failed", true, 1, hostState{check: 9}, want{ntv1.NodeFailed, ntv1.NodeReasonCheckFailed, ptr.To[int32](9), ""}},
		{"before the claim: non-compliant waits for its claim and fix", false, 0, drifted, want{ntv1.NodePending, "", nil, ntv1.NonCompliant}},
		{"before the claim: compliant", false, 0, compliant, want{ntv1.NodeSucceeded, "", nil, ntv1.Compliant}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			task := checkTask(tc.audit)
			task.Spec.RebootExitCodes = []int32{3010}
			lc := newLifecycle(task, 1, Revision(&task.Spec), t0)
			pod := taskPod(task, "win-a", 1, tc.attempt, wrapperEnds(tc.host, t0))
			e := lc.result(pod, false)
			g.Expect(e.Phase).To(Equal(tc.want.phase))
			g.Expect(e.Reason).To(Equal(tc.want.reason))
			g.Expect(e.ExitCode).To(Equal(tc.want.exitCode))
			g.Expect(e.Compliance).To(Equal(tc.want.compliance))
			g.Expect(e.Output).NotTo(ContainSubstring("nodetask:"), "the step lines are the operator's, not output")
		})
	}

	t.Run("no marker: interrupted, whatever the steps say", func(t *testing.T) {
		g := NewWithT(t)
		task := checkTask(false)
		lc := newLifecycle(task, 1, Revision(&task.Spec), t0)
		pod := taskPod(task, "win-a", 1, 1, exitedRaw(0, "nodetask: check exit code 0", t0))
		g.Expect(lc.result(pod, false).Reason).To(Equal(ntv1.NodeReasonInterrupted))
	})
}

// checkTask is a task with a check: Audit, or Apply with a fix.
func checkTask(audit bool, mutate ...func(*ntv1.NodeTask)) *ntv1.NodeTask {
	return newTask(append([]func(*ntv1.NodeTask){func(t *ntv1.NodeTask) {
		t.Spec.Check = &ntv1.CheckSpec{Inline: ptr.To("if (Test-Path C:\\ok) { exit 0 } else { exit 1 }"),
			Interpreter: ntv1.InterpreterPowerShell, NonCompliantExitCode: ptr.To[int32](1)}
		t.Spec.Mode = ntv1.ModeApply
		if audit {
			t.Spec.Mode, t.Spec.Script = ntv1.ModeAudit, nil
		}
	}}, mutate...)...)
}

// TestCheckPodsTellTheWrapperWhatToRun pins the environment of check pods: the check
// alone for Audit and for the check before a claim (attempt 0), else check, fix, re-check.
func TestCheckPodsTellTheWrapperWhatToRun(t *testing.T) {
	g := NewWithT(t)
	task := checkTask(false, func(t *ntv1.NodeTask) {
		t.Spec.RebootExitCodes = []int32{3010, 1641}
		t.Spec.Check.NonCompliantExitCode = ptr.To[int32](4)
		t.Spec.Check.Interpreter = ntv1.InterpreterCmd
	})
	b := PodBuilder{}
	fix := b.Pod(task, 1, "r", PodRequest{Node: "win-a", Attempt: 1})
	g.Expect(podEnv(fix, "NODETASK_MODE")).To(Equal("CheckFix"))
	g.Expect(podEnv(fix, "NODETASK_CHECK_INTERPRETER")).To(Equal("Cmd"))
	g.Expect(podEnv(fix, "NODETASK_NONCOMPLIANT_EXIT_CODE")).To(Equal("4"))
	g.Expect(podEnv(fix, "NODETASK_SUCCESS_EXIT_CODES")).To(Equal("0,3010,1641"))
	g.Expect(podEnv(b.Pod(task, 1, "r", PodRequest{Node: "win-a", Attempt: 0}), "NODETASK_MODE")).To(Equal("Check"))

	audit := checkTask(true)
	pod := b.Pod(audit, 1, "r", PodRequest{Node: "win-a", Attempt: 1})
	g.Expect(podEnv(pod, "NODETASK_MODE")).To(Equal("Check"))
	g.Expect(pod.Spec.Containers[0].Image).To(Equal(ntv1.DefaultScriptImage), "an Audit task has no spec.script, and runs in the script image")
	g.Expect(isScriptPod(pod)).To(BeTrue(), "its completion is marked by the wrapper")

	cm := ScriptConfigMap(task, 1, "r", ScriptTexts{Script: "fix", Check: "@echo off\nexit /b 0"})
	g.Expect(cm.Data).To(HaveKeyWithValue("check.cmd", "@echo off\r\nexit /b 0"))
	g.Expect(cm.Data).To(HaveKeyWithValue("script.ps1", UTF8BOM+"fix"))
	cm = ScriptConfigMap(audit, 1, "r", ScriptTexts{Check: "exit 0"})
	g.Expect(cm.Data).To(HaveKey("check.ps1"))
	g.Expect(cm.Data).NotTo(HaveKey("script.ps1"), "Audit has no script")

	plain := b.Pod(newTask(), 1, "r", PodRequest{Node: "win-a", Attempt: 1})
	g.Expect(podEnv(plain, "NODETASK_MODE")).To(BeEmpty(), "a task without a check runs its script as before")
}

// TestWrapperRunsCheckFixAndRecheck checks the wrapper's text for what it must do on a real
// node (PowerShell does not run here): the steps, their markers and the exit code rules.
func TestWrapperRunsCheckFixAndRecheck(t *testing.T) {
	g := NewWithT(t)
	for _, s := range []string{
		`'Check' {`, `'CheckFix' {`,
		`$r = Invoke-Step 'check' $env:NODETASK_CHECK_INTERPRETER 'check'`,
		`$fix = Invoke-Step 'fix' $env:NODETASK_INTERPRETER 'script'`,
		`$re = Invoke-Step 'recheck' $env:NODETASK_CHECK_INTERPRETER 'check'`,
		`if ($code -eq [int]$env:NODETASK_NONCOMPLIANT_EXIT_CODE) {`,
		`if ($ok -contains $fix.Code) {`,
		`if ($re.Code -ne 0) { $code = $re.Code }`,
		`$env:NODETASK_STEP = $step`,
		"$text = \"$text`nnodetask: $($s.Name) exit code $($s.Result.Code)\"",
	} {
		g.Expect(wrapperScript).To(ContainSubstring(s))
	}
	g.Expect(fmt.Sprintf(stepMarker, "check", 1)).To(Equal("nodetask: check exit code 1"), "the line the wrapper writes")
	// Inside a function, Write-Output would become the function's return value.
	g.Expect(wrapperScript).NotTo(ContainSubstring("Write-Output"))
}

// checkWorld runs a maintenance world whose hosts play the given states.
type checkWorld struct {
	*maintWorld
	hosts map[string]hostState
	// fixes counts, per node, the pods that ran the fix (mode CheckFix) and got to it.
	fixes map[string]int
	// checksBeforeClaim counts, per node, check pods started while the node was unclaimed.
	checksBeforeClaim map[string]int
}

func newCheckWorld(t *testing.T, task *ntv1.NodeTask, hosts map[string]hostState) *checkWorld {
	var names []string
	for n := range hosts {
		names = append(names, n)
	}
	return &checkWorld{maintWorld: newMaintWorld(t, task, names...), hosts: hosts, fixes: map[string]int{}, checksBeforeClaim: map[string]int{}}
}

// pass reconciles (losing the status write if lose), then ends the pods, then brings
// restarted nodes back, as patchPool does.
func (w *checkWorld) pass(i int, lose bool) {
	if lose {
		w.loseWrites = 1
	}
	before := len(w.pods)
	w.reconcile()
	for _, p := range w.pods[before:] {
		if ClaimsNodes(w.task) && !ntv1.IsRebootPod(p) && ReadClaim(w.nodes[p.Spec.NodeName]) == nil {
			w.checksBeforeClaim[p.Spec.NodeName]++
			w.g.Expect(podEnv(p, "NODETASK_MODE")).To(Equal("Check"), "an unclaimed node of a claiming task runs the check alone")
		}
	}
	w.now = w.now.Add(time.Second)
	switch i % 3 {
	case 1:
		w.finishPods(func(p *corev1.Pod) {
			h := w.hosts[p.Spec.NodeName]
			fixes := podEnv(p, "NODETASK_MODE") == "CheckFix" && h.check == 1
			if fixes {
				w.fixes[p.Spec.NodeName]++
			}
			wrapperEnds(h, w.now)(p)
			if fixes && (h.fix == 0 || h.fix == 3010) {
				// The fix changed the host: its next check says what the re-check said.
				w.hosts[p.Spec.NodeName] = hostState{check: h.recheck, fix: h.fix, recheck: h.recheck}
			}
		})
	case 2:
		w.bootAll()
	}
}

func (w *checkWorld) run(lose func(pass int) bool) {
	for i := 0; i < 300 && !w.ready() && !apimeta.IsStatusConditionTrue(w.task.Status.Conditions, ntv1.ConditionStalled); i++ {
		w.pass(i, lose != nil && lose(i))
	}
}

// TestCheckBeforeClaim: a task that drains and restarts checks every node before it claims
// it; a compliant node is never claimed, cordoned, drained or restarted, a drifted one is
// drained, fixed, re-checked and restarted once, and one the fix does not repair fails with
// StillNonCompliant and is not restarted.
func TestCheckBeforeClaim(t *testing.T) {
	task := checkTask(false, func(t *ntv1.NodeTask) {
		t.Spec.Cordon, t.Spec.Drain, t.Spec.Reboot = true, &ntv1.DrainSpec{}, ntv1.RebootIfRequired
		t.Spec.RebootExitCodes = []int32{3010}
		t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(2))
		t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromInt32(1))
	})
	w := newCheckWorld(t, task, map[string]hostState{
		"win-ok": compliant, "win-ok2": compliant,
		"win-patch": {check: 1, fix: 3010, recheck: 0},
		"win-stuck": {check: 1, fix: 0, recheck: 1},
	})
	w.drains = map[string]*DrainObservation{}
	for n := range w.hosts {
		w.drains[n] = &DrainObservation{}
	}
	cordoned := map[string]bool{}
	for i := 0; i < 300 && !w.ready(); i++ {
		w.pass(i, false)
		for n, node := range w.nodes {
			cordoned[n] = cordoned[n] || node.Spec.Unschedulable
		}
		w.g.Expect(len(w.claimed())).To(BeNumerically("<=", 2))
	}
	g := w.g
	g.Expect(w.ready()).To(BeTrue(), "%+v", w.task.Status.Conditions)
	for _, n := range []string{"win-ok", "win-ok2"} {
		e := entry(&w.task.Status, n)
		g.Expect(e.Phase).To(Equal(ntv1.NodeSucceeded), n)
		g.Expect(e.Compliance).To(Equal(ntv1.Compliant), n)
		g.Expect(cordoned[n]).To(BeFalse(), "%s is compliant: never cordoned", n)
		g.Expect(w.restarts[n]).To(BeZero(), n)
		g.Expect(w.fixes[n]).To(BeZero(), n)
	}
	e := entry(&w.task.Status, "win-patch")
	g.Expect(e.Phase).To(Equal(ntv1.NodeSucceeded))
	g.Expect(e.Reason).To(Equal(ntv1.NodeReasonRebooted))
	g.Expect(e.Compliance).To(Equal(ntv1.Remediated))
	g.Expect(cordoned["win-patch"]).To(BeTrue())
	g.Expect(w.restarts["win-patch"]).To(Equal(1))
	g.Expect(w.fixes["win-patch"]).To(Equal(1))
	g.Expect(w.checksBeforeClaim["win-patch"]).To(Equal(1))

	e = entry(&w.task.Status, "win-stuck")
	g.Expect(e.Phase).To(Equal(ntv1.NodeFailed))
	g.Expect(e.Reason).To(Equal(ntv1.NodeReasonStillNonCompliant))
	g.Expect(e.Compliance).To(Equal(ntv1.NonCompliant))
	g.Expect(w.restarts["win-stuck"]).To(BeZero(), "a failed fix is not restarted")

	g.Expect(w.task.Status.Compliance).To(Equal(&ntv1.ComplianceSummary{Compliant: 3, NonCompliant: 1, Unknown: 0}))
	ready := apimeta.FindStatusCondition(w.task.Status.Conditions, ntv1.ConditionReady)
	g.Expect(ready.Message).To(ContainSubstring("3 compliant (1 remediated), 1 node out of compliance (win-stuck)"))
	g.Expect(w.claimed()).To(BeEmpty())
}

// TestCheckFixRunsOnceWhateverWritesAreLost is the SIGKILL test: a manager killed at any
// pass (its status write lost, the next one too), between the check and the claim, the
// drain and the fix, or the fix and its re-check, never runs a node's fix twice in one run,
// nor restarts it twice.
func TestCheckFixRunsOnceWhateverWritesAreLost(t *testing.T) {
	for lost := 0; lost < 30; lost++ {
		task := checkTask(false, func(t *ntv1.NodeTask) {
			t.Spec.Cordon, t.Spec.Reboot = true, ntv1.RebootIfRequired
			t.Spec.RebootExitCodes = []int32{3010}
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
		})
		w := newCheckWorld(t, task, map[string]hostState{"win-a": {check: 1, fix: 3010}, "win-b": compliant, "win-c": drifted})
		w.run(func(pass int) bool { return pass == lost || pass == lost+1 })
		g := w.g
		g.Expect(w.ready()).To(BeTrue(), "lost writes at pass %d: %+v", lost, w.task.Status.Conditions)
		g.Expect(w.fixes).To(Equal(map[string]int{"win-a": 1, "win-c": 1}), "lost writes at pass %d", lost)
		g.Expect(w.restarts).To(Equal(map[string]int{"win-a": 1}), "lost writes at pass %d", lost)
		g.Expect(w.task.Status.Compliance).To(Equal(&ntv1.ComplianceSummary{Compliant: 3}), "lost writes at pass %d", lost)
	}
}

// TestCheckFixPodRunningWhenTheManagerForgot: the manager restarts with no status at all
// while a node's pod is between its fix and its re-check: it starts nothing on that node.
func TestCheckFixPodRunningWhenTheManagerForgot(t *testing.T) {
	g := NewWithT(t)
	task := checkTask(false)
	running := taskPod(task, "win-a", 1, 1)
	p := ComputePlan(observe(task, nodes("win-a", "win-b"), running))
	g.Expect(requestNodes(p.Create)).To(Equal([]string{"win-b#1"}))
	g.Expect(p.Nodes[0].Name).To(Equal("win-a"))
	g.Expect(p.Nodes[0].Phase).To(Equal(ntv1.NodeRunning))
}

// TestAudit: mode Audit runs one check pod per node and changes nothing; drift is an answer
// (Succeeded, NonCompliant), the task is Ready with reason NonCompliant and names the nodes.
func TestAudit(t *testing.T) {
	task := checkTask(true)
	w := newCheckWorld(t, task, map[string]hostState{"win-a": compliant, "win-b": drifted, "win-c": drifted})
	w.run(nil)
	g := w.g
	g.Expect(w.ready()).To(BeTrue())
	g.Expect(w.claimed()).To(BeEmpty())
	g.Expect(w.fixes).To(BeEmpty())
	g.Expect(w.pods).To(HaveLen(3))
	g.Expect(w.task.Status.Succeeded).To(Equal(int32(3)))
	g.Expect(w.task.Status.Compliance).To(Equal(&ntv1.ComplianceSummary{Compliant: 1, NonCompliant: 2}))
	ready := apimeta.FindStatusCondition(w.task.Status.Conditions, ntv1.ConditionReady)
	g.Expect(ready.Reason).To(Equal(ntv1.ReasonNonCompliant))
	g.Expect(ready.Message).To(Equal("audit finished on 3 of 3 nodes; 1 compliant, 2 nodes out of compliance (win-b, win-c): " +
		"run the task in mode Apply with a fix in spec.script to repair them"))
}

// TestCheckWithoutClaimsIsOnePod: a task that does not claim its nodes runs check, fix and
// re-check in one pod per node.
func TestCheckWithoutClaimsIsOnePod(t *testing.T) {
	w := newCheckWorld(t, checkTask(false), map[string]hostState{"win-a": compliant, "win-b": drifted})
	w.run(nil)
	g := w.g
	g.Expect(w.ready()).To(BeTrue())
	g.Expect(w.pods).To(HaveLen(2))
	g.Expect(w.fixes).To(Equal(map[string]int{"win-b": 1}))
	g.Expect(entry(&w.task.Status, "win-a").Compliance).To(Equal(ntv1.Compliant))
	g.Expect(entry(&w.task.Status, "win-b").Compliance).To(Equal(ntv1.Remediated))
	ready := apimeta.FindStatusCondition(w.task.Status.Conditions, ntv1.ConditionReady)
	g.Expect(ready.Reason).To(Equal(ntv1.ReasonSucceeded))
	g.Expect(ready.Message).To(Equal("succeeded on all 2 nodes; 2 compliant (1 remediated), none out of compliance"))
}

// TestFailedCheckBeforeClaimIsNotRetried: the check before a claim is attempt 0; a check that
// cannot answer fails the node (CheckFailed) without a retry, and the node is never claimed.
func TestFailedCheckBeforeClaimIsNotRetried(t *testing.T) {
	task := checkTask(false, func(t *ntv1.NodeTask) {
		t.Spec.Cordon = true
		t.Spec.Retries = ptr.To[int32](3)
		t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromInt32(1))
	})
	w := newCheckWorld(t, task, map[string]hostState{"win-a": {check: 2}, "win-b": compliant})
	w.run(nil)
	g := w.g
	g.Expect(w.ready()).To(BeTrue(), "%+v", w.task.Status.Conditions)
	e := entry(&w.task.Status, "win-a")
	g.Expect(e.Phase).To(Equal(ntv1.NodeFailed))
	g.Expect(e.Reason).To(Equal(ntv1.NodeReasonCheckFailed))
	g.Expect(w.checksBeforeClaim["win-a"]).To(Equal(1))
	g.Expect(w.task.Status.Compliance).To(Equal(&ntv1.ComplianceSummary{Compliant: 1, Unknown: 1}))
}
