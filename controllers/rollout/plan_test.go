package rollout

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

func TestPlanTargets(t *testing.T) {
	cases := []struct {
		name        string
		task        *ntv1.NodeTask
		nodes       []*corev1.Node
		wantTargets []string
		wantCreate  []string
	}{
		{
			name:        "only Windows nodes",
			task:        newTask(),
			nodes:       []*corev1.Node{winNode("win-a"), winNode("lin-a", linux), winNode("win-b")},
			wantTargets: []string{"win-a", "win-b"},
			wantCreate:  []string{"win-a#1", "win-b#1"},
		},
		{
			name: "label selector",
			task: newTask(func(t *ntv1.NodeTask) {
				t.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"pool": "win22"}}
			}),
			nodes:       []*corev1.Node{winNode("win-a", label("pool", "win22")), winNode("win-b", label("pool", "win19"))},
			wantTargets: []string{"win-a"},
			wantCreate:  []string{"win-a#1"},
		},
		{
			name:        "node names",
			task:        newTask(func(t *ntv1.NodeTask) { t.Spec.NodeNames = []string{"win-b", "lin-a"} }),
			nodes:       []*corev1.Node{winNode("win-a"), winNode("win-b"), winNode("lin-a", linux)},
			wantTargets: []string{"win-b"},
			wantCreate:  []string{"win-b#1"},
		},
		{
			name:        "an untolerated NoSchedule taint excludes a node; PreferNoSchedule does not",
			task:        newTask(),
			nodes:       []*corev1.Node{winNode("win-a", taint("os", "windows", corev1.TaintEffectNoSchedule)), winNode("win-b", taint("x", "", corev1.TaintEffectPreferNoSchedule))},
			wantTargets: []string{"win-b"},
			wantCreate:  []string{"win-b#1"},
		},
		{
			name: "a tolerated taint keeps a node",
			task: newTask(func(t *ntv1.NodeTask) {
				t.Spec.Tolerations = []corev1.Toleration{{Key: "os", Operator: corev1.TolerationOpEqual, Value: "windows", Effect: corev1.TaintEffectNoSchedule}}
			}),
			nodes:       []*corev1.Node{winNode("win-a", taint("os", "windows", corev1.TaintEffectNoSchedule)), winNode("win-b", taint("gpu", "", corev1.TaintEffectNoExecute))},
			wantTargets: []string{"win-a"},
			wantCreate:  []string{"win-a#1"},
		},
		{
			name: "a cordoned node is a target; a NotReady node is a target that waits",
			task: newTask(),
			nodes: []*corev1.Node{
				winNode("win-a", taint(corev1.TaintNodeUnschedulable, "", corev1.TaintEffectNoSchedule), func(n *corev1.Node) { n.Spec.Unschedulable = true }),
				winNode("win-b", notReady, taint(corev1.TaintNodeNotReady, "", corev1.TaintEffectNoSchedule)),
			},
			wantTargets: []string{"win-a", "win-b"},
			wantCreate:  []string{"win-a#1"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			p := ComputePlan(observe(tc.task, tc.nodes))
			g.Expect(p.Problem).To(BeNil())
			var targets []string
			for n := range p.Targets {
				targets = append(targets, n)
			}
			g.Expect(targets).To(ConsistOf(tc.wantTargets))
			g.Expect(requestNodes(p.Create)).To(Equal(tc.wantCreate))
		})
	}
}

func TestPlanNotReadyNodeWaits(t *testing.T) {
	g := NewWithT(t)
	obs := observe(newTask(), []*corev1.Node{winNode("win-a", notReady)})
	settle(obs)
	e := entry(&obs.Task.Status, "win-a")
	g.Expect(e).NotTo(BeNil())
	g.Expect(e.Phase).To(Equal(ntv1.NodePending))
	g.Expect(e.Reason).To(Equal(ntv1.NodeReasonNodeNotReady))
	ready := findCondition(&obs.Task.Status, ntv1.ConditionReconciling)
	g.Expect(ready.Reason).To(Equal(ntv1.ReasonWaitingForNodes))
	g.Expect(ready.Message).To(ContainSubstring("win-a"))
}

func TestPlanMaxConcurrent(t *testing.T) {
	cases := []struct {
		name          string
		maxConcurrent intstr.IntOrString
		nodes         int
		running       int
		want          int
	}{
		{"25% of 10 rounds up to 3", intstr.FromString("25%"), 10, 0, 3},
		{"25% of 10 with 2 running leaves 1", intstr.FromString("25%"), 10, 2, 1},
		{"1% of 10 is at least 1", intstr.FromString("1%"), 10, 0, 1},
		{"a number", intstr.FromInt32(4), 10, 0, 4},
		{"full slots", intstr.FromInt32(2), 10, 2, 0},
		{"more slots than nodes", intstr.FromInt32(50), 3, 0, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			task := newTask(func(t *ntv1.NodeTask) { t.Spec.Rollout.MaxConcurrent = &tc.maxConcurrent })
			names := nodeNames(tc.nodes)
			var pods []*corev1.Pod
			for i := 0; i < tc.running; i++ {
				pods = append(pods, taskPod(task, names[len(names)-1-i], 1, 1))
			}
			p := ComputePlan(observe(task, nodes(names...), pods...))
			g.Expect(p.Create).To(HaveLen(tc.want))
			g.Expect(p.InFlight + len(p.Create)).To(BeNumerically("<=", max(tc.want+tc.running, tc.running)))
			// Nodes start in name order.
			for i, r := range p.Create {
				g.Expect(r.Node).To(Equal(names[i]))
			}
		})
	}
}

func TestPlanFailureBudget(t *testing.T) {
	g := NewWithT(t)
	task := newTask(func(t *ntv1.NodeTask) {
		t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(2))
		t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromInt32(1))
	})
	names := nodeNames(6)
	pods := []*corev1.Pod{
		taskPod(task, names[0], 1, 1, exited(1, "boom", t0.Add(-time.Second))),
		taskPod(task, names[1], 1, 1, exited(0, "ok", t0.Add(-time.Second))),
	}
	obs := observe(task, nodes(names...), pods...)
	p := settle(obs)
	g.Expect(p.BudgetExceeded).To(BeFalse(), "1 failure is within maxFailures 1")
	g.Expect(requestNodes(p.Create)).To(Equal([]string{names[2] + "#1", names[3] + "#1"}))

	pods = append(pods,
		taskPod(task, names[2], 1, 1, exited(2, "boom", t0)),
		taskPod(task, names[3], 1, 1))
	obs = observe(obs.Task, nodes(names...), pods...)
	before := *obs.Task.Status.DeepCopy()
	p = settle(obs)
	g.Expect(p.BudgetExceeded).To(BeTrue())
	g.Expect(p.Create).To(BeEmpty(), "no node starts once failures exceed maxFailures")
	g.Expect(FailedNames(NewResults(&before, &obs.Task.Status))).To(Equal([]string{names[2]}))
	st := &obs.Task.Status
	g.Expect(findCondition(st, ntv1.ConditionStalled).Status).To(Equal(metav1.ConditionTrue))
	g.Expect(findCondition(st, ntv1.ConditionStalled).Reason).To(Equal(ntv1.ReasonFailureBudgetExceeded))
	g.Expect(findCondition(st, ntv1.ConditionStalled).Message).To(ContainSubstring("the 1 running will finish"))
	g.Expect(st.Running).To(BeEquivalentTo(1))
}

func TestPlanRetries(t *testing.T) {
	g := NewWithT(t)
	task := newTask(func(t *ntv1.NodeTask) { t.Spec.Retries = ptr.To[int32](2) })
	failedAt := t0.Add(-4 * time.Second)
	pods := []*corev1.Pod{taskPod(task, "win-a", 1, 1, exited(5, "flaky", failedAt))}
	obs := observe(task, nodes("win-a"), pods...)
	p := settle(obs)
	e := entry(&obs.Task.Status, "win-a")
	g.Expect(e.Phase).To(Equal(ntv1.NodePending))
	g.Expect(e.Reason).To(Equal(ntv1.NodeReasonRetryBackoff))
	g.Expect(e.ExitCode).To(HaveValue(BeEquivalentTo(5)))
	g.Expect(e.Attempts).To(BeEquivalentTo(1))
	g.Expect(p.Create).To(BeEmpty(), "the first retry waits 10s")
	g.Expect(p.RequeueAfter).To(Equal(6 * time.Second))

	obs.Now = t0.Add(7 * time.Second)
	p = ComputePlan(obs)
	g.Expect(requestNodes(p.Create)).To(Equal([]string{"win-a#2"}))

	// The second attempt fails too: the next wait is 20s; the third attempt's failure is final.
	pods = append(pods, taskPod(task, "win-a", 1, 2, exited(5, "flaky", t0)))
	obs = observe(obs.Task, nodes("win-a"), pods...)
	obs.Now = t0.Add(19 * time.Second)
	p = settle(obs)
	g.Expect(p.Create).To(BeEmpty())
	obs.Now = t0.Add(21 * time.Second)
	g.Expect(requestNodes(ComputePlan(obs).Create)).To(Equal([]string{"win-a#3"}))
	pods = append(pods, taskPod(task, "win-a", 1, 3, exited(5, "flaky", t0.Add(30*time.Second))))
	obs = observe(obs.Task, nodes("win-a"), pods...)
	settle(obs)
	e = entry(&obs.Task.Status, "win-a")
	g.Expect(e.Phase).To(Equal(ntv1.NodeFailed))
	g.Expect(e.Attempts).To(BeEquivalentTo(3))
}

func TestRetryDelay(t *testing.T) {
	g := NewWithT(t)
	g.Expect([]time.Duration{retryDelay(1), retryDelay(2), retryDelay(3), retryDelay(5), retryDelay(9)}).To(Equal(
		[]time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 160 * time.Second, 5 * time.Minute}))
}

func TestPlanResults(t *testing.T) {
	task := newTask()
	cases := []struct {
		name       string
		pod        *corev1.Pod
		nodeGone   bool
		wantPhase  ntv1.NodePhase
		wantReason string
		wantExit   *int32
		wantOutput string
	}{
		{"success with output", taskPod(task, "win-a", 1, 1, exited(0, "done\n", t0)), false, ntv1.NodeSucceeded, "", nil, "done\n"},
		{"non-zero exit", taskPod(task, "win-a", 1, 1, exited(3, "not found", t0)), false, ntv1.NodeFailed, ntv1.NodeReasonError, ptr.To[int32](3), "not found"},
		{"NTSTATUS exit code", taskPod(task, "win-a", 1, 1, exited(-1073741510, "", t0)), false, ntv1.NodeFailed, ntv1.NodeReasonError, ptr.To[int32](-1073741510), ""},
		{"timeout", taskPod(task, "win-a", 1, 1, deadlineExceeded), false, ntv1.NodeFailed, ntv1.NodeReasonTimeout, nil, "Pod was active on the node longer than the specified deadline"},
		{"image pull failure while waiting", taskPod(task, "win-a", 1, 1, waitingFor("ImagePullBackOff")), false, ntv1.NodeRunning, "ImagePullBackOff", nil, "pull access denied"},
		{"deleted by someone else", taskPod(task, "win-a", 1, 1, func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{Time: t0} }), false, ntv1.NodeFailed, ntv1.NodeReasonPodDeleted, nil, ""},
		{"node deleted mid-run", taskPod(task, "win-a", 1, 1), true, ntv1.NodeFailed, ntv1.NodeReasonNodeLost, nil, ""},
		{"exit 0 without the completion marker: interrupted", taskPod(task, "win-a", 1, 1, exitedRaw(0, "half way", t0)), false, ntv1.NodeFailed, ntv1.NodeReasonInterrupted, nil, "half way"},
		{"exit 0 with no message at all: interrupted", taskPod(task, "win-a", 1, 1, exitedRaw(0, "", t0)), false, ntv1.NodeFailed, ntv1.NodeReasonInterrupted, nil, ""},
		{"a failure without the marker keeps its exit code", taskPod(task, "win-a", 1, 1, exitedRaw(2, "crashed", t0)), false, ntv1.NodeFailed, ntv1.NodeReasonError, ptr.To[int32](2), "crashed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			var ns []*corev1.Node
			if !tc.nodeGone {
				ns = nodes("win-a")
			}
			obs := observe(newTask(), ns, tc.pod)
			settle(obs)
			e := entry(&obs.Task.Status, "win-a")
			g.Expect(e).NotTo(BeNil())
			g.Expect(e.Phase).To(Equal(tc.wantPhase))
			g.Expect(e.Reason).To(Equal(tc.wantReason))
			g.Expect(e.ExitCode).To(Equal(tc.wantExit))
			g.Expect(e.Output).To(Equal(tc.wantOutput))
			g.Expect(e.Attempts).To(BeEquivalentTo(1))
		})
	}
}

func TestPlanPodVanished(t *testing.T) {
	g := NewWithT(t)
	task := newTask(func(t *ntv1.NodeTask) { t.Spec.Retries = ptr.To[int32](1) })
	obs := observe(task, nodes("win-a"), taskPod(task, "win-a", 1, 1))
	settle(obs)
	g.Expect(entry(&obs.Task.Status, "win-a").Phase).To(Equal(ntv1.NodeRunning))

	// The pod is gone without a trace (deleted with no grace period): PodDeleted, then a retry.
	obs = observe(obs.Task, nodes("win-a"))
	p := settle(obs)
	e := entry(&obs.Task.Status, "win-a")
	g.Expect(e.Phase).To(Equal(ntv1.NodePending))
	g.Expect(e.Reason).To(Equal(ntv1.NodeReasonRetryBackoff))
	g.Expect(p.Create).To(BeEmpty())
	obs.Now = t0.Add(11 * time.Second)
	g.Expect(requestNodes(ComputePlan(obs).Create)).To(Equal([]string{"win-a#2"}))
}

func TestPlanNodeLostDeletesRecordedPod(t *testing.T) {
	g := NewWithT(t)
	task := newTask()
	pod := taskPod(task, "win-a", 1, 1)
	obs := observe(task, nil, pod)
	p := settle(obs)
	g.Expect(p.Delete).To(BeEmpty(), "the result is not stored yet")
	p = settle(observe(obs.Task, nil, pod))
	g.Expect(deletedPods(p)).To(ConsistOf(pod))
	e := entry(&obs.Task.Status, "win-a")
	g.Expect(e.Reason).To(Equal(ntv1.NodeReasonNodeLost))
	g.Expect(obs.Task.Status.Targets).To(BeEquivalentTo(0))
}

func TestPlanRevisionChange(t *testing.T) {
	g := NewWithT(t)
	task := newTask(func(t *ntv1.NodeTask) { t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(2)) })
	old := Revision(&task.Spec)
	pods := []*corev1.Pod{
		taskPod(task, "win-a", 1, 1, exited(0, "v1", t0)),
		taskPod(task, "win-b", 1, 1, exited(0, "v1", t0)),
		taskPod(task, "win-c", 1, 1), // still running the old script
	}
	obs := observe(task, nodes("win-a", "win-b", "win-c"), pods...)
	settle(obs)

	obs.Task.Spec.Script.Inline = ptr.To("Write-Output v2")
	obs.Task.Generation = 2
	obs = observe(obs.Task, nodes("win-a", "win-b", "win-c"), pods...)
	p := settle(obs)
	g.Expect(p.NewRun).To(BeTrue())
	g.Expect(requestNodes(p.Create)).To(Equal([]string{"win-a#1"}), "the old pod on win-c holds a slot and its node")
	st := &obs.Task.Status
	g.Expect(st.Revision).NotTo(Equal(old))
	g.Expect(st.Pending).To(BeEquivalentTo(2))
	g.Expect(st.Running).To(BeEquivalentTo(1))
	g.Expect(st.Run).To(BeEquivalentTo(2))
	// win-b still shows its old result, with the old run spelled out.
	b := entry(st, "win-b")
	g.Expect(b.Run).To(BeEquivalentTo(1))
	g.Expect(b.Output).To(Equal("v1"))
	g.Expect(entry(st, "win-a").Run).To(BeZero(), "the current run is left out of entries")
}

func TestPlanRolloutChangeDoesNotRerun(t *testing.T) {
	g := NewWithT(t)
	task := newTask()
	pods := []*corev1.Pod{taskPod(task, "win-a", 1, 1, exited(0, "ok", t0))}
	obs := observe(task, nodes("win-a"), pods...)
	settle(obs)
	obs.Task.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(7))
	obs.Task.Spec.Suspend = false
	obs.Task.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	obs.Task.Spec.TimeoutSeconds = ptr.To[int32](60)
	p := ComputePlan(observe(obs.Task, nodes("win-a"), pods...))
	g.Expect(p.NewRun).To(BeFalse())
	g.Expect(p.Create).To(BeEmpty())
}

func TestPlanNewNodes(t *testing.T) {
	for _, policy := range []ntv1.NewNodesPolicy{ntv1.NewNodesRun, ntv1.NewNodesIgnore} {
		t.Run(string(policy), func(t *testing.T) {
			g := NewWithT(t)
			task := newTask(func(t *ntv1.NodeTask) { t.Spec.NewNodes = policy })
			pods := []*corev1.Pod{taskPod(task, "win-a", 1, 1, exited(0, "", t0))}
			obs := observe(task, nodes("win-a"), pods...)
			settle(obs)
			p := ComputePlan(observe(obs.Task, nodes("win-a", "win-new"), pods...))
			if policy == ntv1.NewNodesRun {
				g.Expect(requestNodes(p.Create)).To(Equal([]string{"win-new#1"}))
			} else {
				g.Expect(p.Create).To(BeEmpty())
				g.Expect(p.Targets).NotTo(HaveKey("win-new"))
			}
		})
	}
}

func TestPlanSuspend(t *testing.T) {
	g := NewWithT(t)
	task := newTask(func(t *ntv1.NodeTask) { t.Spec.Suspend = true })
	obs := observe(task, nodes("win-a", "win-b"))
	p := settle(obs)
	g.Expect(p.Create).To(BeEmpty())
	g.Expect(findCondition(&obs.Task.Status, ntv1.ConditionReady).Reason).To(Equal(ntv1.ReasonSuspended))
	obs.Task.Spec.Suspend = false
	g.Expect(ComputePlan(obs).Create).To(HaveLen(2))
}

func TestPlanPodTTL(t *testing.T) {
	g := NewWithT(t)
	task := newTask(func(t *ntv1.NodeTask) { t.Spec.PodTTLSecondsAfterFinished = ptr.To[int32](60) })
	pod := taskPod(task, "win-a", 1, 1, exited(0, "ok", t0.Add(-2*time.Minute)))
	obs := observe(task, nodes("win-a"), pod)
	p := settle(obs)
	g.Expect(p.Delete).To(BeEmpty(), "a result not yet stored keeps its pod")

	obs = observe(obs.Task, nodes("win-a"), pod)
	obs.Now = t0.Add(-90 * time.Second)
	p = ComputePlan(obs)
	g.Expect(p.Delete).To(BeEmpty())
	g.Expect(p.RequeueAfter).To(Equal(30 * time.Second))
	obs.Now = t0
	g.Expect(deletedPods(ComputePlan(obs))).To(ConsistOf(pod))

	// Once deleted, the stored result stays.
	obs = observe(obs.Task, nodes("win-a"))
	settle(obs)
	e := entry(&obs.Task.Status, "win-a")
	g.Expect(e.Phase).To(Equal(ntv1.NodeSucceeded))
	g.Expect(e.Output).To(Equal("ok"))
}

func TestPlanIsStable(t *testing.T) {
	// Reconciling the same state twice must not change the status, or every reconcile
	// would write it again and trigger the next one.
	g := NewWithT(t)
	task := newTask(func(t *ntv1.NodeTask) { t.Spec.Retries = ptr.To[int32](1) })
	pods := []*corev1.Pod{
		taskPod(task, "win-a", 1, 1, exited(0, "ok", t0)),
		taskPod(task, "win-b", 1, 1, deadlineExceeded),
		taskPod(task, "win-c", 1, 1),
		taskPod(task, "win-d", 1, 1, func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{Time: t0} }),
	}
	ns := nodes("win-a", "win-b", "win-c", "win-d", "win-e")
	ns = append(ns, winNode("win-f", notReady))
	obs := observe(task, ns, pods...)
	obs.Task.Status = ComputeStatus(obs, ComputePlan(obs), Outcome{})
	first := obs.Task.Status.DeepCopy()
	for i := 1; i <= 3; i++ {
		obs = observe(obs.Task, ns, pods...)
		obs.Now = t0.Add(time.Duration(i) * time.Second)
		p := ComputePlan(obs)
		st := ComputeStatus(obs, p, Outcome{})
		g.Expect(StatusChanged(first, &st)).To(BeFalse(), "reconcile %d changed the status", i)
	}
}

// TestGateOf: the gate's precedence, computed once in the plan and reported by the
// conditions: a failed first batch, a spent budget, a problem, a health check past its
// failAfterSeconds, suspend, a closed window, a failing health check, the wait for approval.
func TestGateOf(t *testing.T) {
	g := NewWithT(t)
	for _, tc := range []struct {
		f     gateFacts
		want  Gate
		stops bool
	}{
		{want: GateOpen},
		{f: gateFacts{awaitingApproval: true}, want: GateAwaitingApproval},
		{f: gateFacts{windowClosed: true, awaitingApproval: true}, want: GateWindowClosed},
		{f: gateFacts{suspended: true, windowClosed: true}, want: GateSuspended, stops: true},
		{f: gateFacts{problem: true, suspended: true, windowClosed: true}, want: GateProblem, stops: true},
		{f: gateFacts{budgetExceeded: true, problem: true, suspended: true, windowClosed: true}, want: GateBudgetExceeded, stops: true},
		{f: gateFacts{firstBatchFailed: true, budgetExceeded: true, problem: true}, want: GateFirstBatchFailed, stops: true},
		{f: gateFacts{healthStalled: true, suspended: true, windowClosed: true, healthFailing: true}, want: GateHealthStalled, stops: true},
		{f: gateFacts{healthFailing: true, awaitingApproval: true}, want: GateHealthFailing},
	} {
		got := gateOf(tc.f)
		g.Expect(got).To(Equal(tc.want), "%+v", tc)
		g.Expect(got.stops()).To(Equal(tc.stops), "%+v", tc)
	}
}
