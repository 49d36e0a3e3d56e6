package rollout

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// maintWorld plays the cluster around the planner for maintenance tests: it applies the
// plan's node patches (with the same merge patches the controller sends), creates the pods
// it asks for, and lets tests finish pods and restart nodes. Nothing is remembered outside
// the nodes, the pods and the task's stored status, as in the real controller.
type maintWorld struct {
	g        *WithT
	task     *ntv1.NodeTask
	nodes    map[string]*corev1.Node
	pods     []*corev1.Pod
	drains   map[string]*DrainObservation
	stale    map[string]bool
	now      time.Time
	rv       int
	restarts map[string]int
	// loseWrites drops the status write of the next reconciles: a manager killed before its write.
	loseWrites int
	// admission is what the API server says of the task's pods.
	admission Admission
}

func newMaintWorld(t *testing.T, task *ntv1.NodeTask, names ...string) *maintWorld {
	w := &maintWorld{g: NewWithT(t), task: task, nodes: map[string]*corev1.Node{}, now: t0, restarts: map[string]int{},
		admission: admitted}
	for _, n := range names {
		node := winNode(n)
		node.UID = types.UID("uid-" + n)
		node.Status.NodeInfo.BootID = "1"
		w.nodes[n] = node
	}
	return w
}

func (w *maintWorld) reconcile() *Plan {
	obs := &Observed{Task: w.task, Revision: Revision(&w.task.Spec), Nodes: w.nodes, Pods: w.pods, Now: w.now, Admission: w.admission,
		Drains: w.drains, StaleClaims: w.stale}
	p := ComputePlan(obs)
	for _, op := range p.NodeOps {
		node := w.nodes[op.Node]
		patch := NodePatch(w.task, node, op, w.now)
		if patch == nil {
			continue
		}
		w.patchNode(node, patch)
	}
	for _, r := range p.Create {
		pod := (&PodBuilder{}).Pod(w.task, p.Run, p.Revision, r)
		pod.UID, pod.CreationTimestamp, pod.Status.Phase = types.UID("uid-"+pod.Name), metav1.NewTime(w.now), corev1.PodRunning
		// Attempt 0, the check before the claim (spec.check), is the one pod that runs first.
		w.g.Expect(w.node(r.Node).Spec.Unschedulable || !w.task.Spec.Cordon || r.Attempt == 0).To(BeTrue(), "%s runs before it is cordoned", r.Node)
		w.pods = append(w.pods, pod)
	}
	for _, r := range p.Reboots {
		pod := (&PodBuilder{}).RebootPod(w.task, p.Run, p.Revision, r)
		w.g.Expect(w.podNamed(pod.Name)).To(BeNil(), "a second restart pod for %s", r.Node)
		pod.UID, pod.CreationTimestamp, pod.Status.Phase = types.UID("uid-"+pod.Name), metav1.NewTime(w.now), corev1.PodRunning
		w.pods = append(w.pods, pod)
		w.restarts[r.Node]++
	}
	for _, d := range p.Delete {
		w.pods = removePod(w.pods, d.Pod.Name)
	}
	if w.loseWrites > 0 {
		w.loseWrites--
		return p
	}
	settleWith(obs, p)
	return p
}

func (w *maintWorld) patchNode(node *corev1.Node, patch []byte) {
	var meta struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	w.g.Expect(json.Unmarshal(patch, &meta)).To(Succeed())
	w.g.Expect(meta.Metadata.ResourceVersion).To(Equal(node.ResourceVersion), "the patch names the version it read")
	orig, err := json.Marshal(node)
	w.g.Expect(err).NotTo(HaveOccurred())
	out, err := jsonpatch.MergePatch(orig, patch)
	w.g.Expect(err).NotTo(HaveOccurred())
	patched := &corev1.Node{}
	w.g.Expect(json.Unmarshal(out, patched)).To(Succeed())
	// The API server hands spec.unschedulable to the manager that changed it last.
	if patched.Spec.Unschedulable != node.Spec.Unschedulable {
		patched.ManagedFields = nil
		if patched.Spec.Unschedulable {
			patched.ManagedFields = operatorFields()
		}
	}
	w.rv++
	patched.ResourceVersion = strconv.Itoa(w.rv)
	w.nodes[node.Name] = patched
}

func (w *maintWorld) node(name string) *corev1.Node { return w.nodes[name] }

func (w *maintWorld) podNamed(name string) *corev1.Pod {
	for _, p := range w.pods {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// finishRuns ends every running run pod with the exit code, and every restart pod with
// success; a node whose restart pod finished goes down.
func (w *maintWorld) finishRuns(code int32) {
	w.finishPods(func(p *corev1.Pod) { exited(code, "done", w.now)(p) })
}

// finishPods ends every unfinished pod: a restart pod succeeds and takes its node down, a
// run pod ends as end says.
func (w *maintWorld) finishPods(end func(*corev1.Pod)) {
	for _, p := range w.pods {
		if PodFinished(p) {
			continue
		}
		if ntv1.IsRebootPod(p) {
			p.Status.Phase = corev1.PodSucceeded
			notReady(w.nodes[p.Spec.NodeName])
			continue
		}
		end(p)
	}
}

// bootAll brings every node that is down back with a new boot ID.
func (w *maintWorld) bootAll() {
	for _, n := range w.nodes {
		if !NodeReady(n) {
			n.Status.Conditions[0] = corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
				LastTransitionTime: metav1.NewTime(w.now)}
			boot, _ := strconv.Atoi(n.Status.NodeInfo.BootID)
			n.Status.NodeInfo.BootID = strconv.Itoa(boot + 1)
		}
	}
}

func (w *maintWorld) claimed() []string {
	var out []string
	for name, n := range w.nodes {
		if ReadClaim(n) != nil {
			out = append(out, name)
		}
	}
	return out
}

func (w *maintWorld) ready() bool {
	return apimeta.IsStatusConditionTrue(w.task.Status.Conditions, ntv1.ConditionReady)
}

func removePod(pods []*corev1.Pod, name string) []*corev1.Pod {
	out := pods[:0:0]
	for _, p := range pods {
		if p.Name != name {
			out = append(out, p)
		}
	}
	return out
}

func rebootTask(policy ntv1.RebootPolicy, maxConcurrent int32) *ntv1.NodeTask {
	return newTask(func(t *ntv1.NodeTask) {
		t.Spec.Reboot, t.Spec.Cordon = policy, true
		t.Spec.RebootExitCodes = []int32{3010, 1641}
		t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(maxConcurrent))
	})
}

// patchPool runs the world until the task is Ready or stalls, checking after every pass that
// no more nodes are claimed than maxConcurrent allows; lose says which passes lose their
// status write (a manager killed before it wrote).
func patchPool(w *maintWorld, maxConcurrent int, code int32, lose func(pass int) bool) {
	for pass := 0; pass < 200 && !w.ready(); pass++ {
		if lose != nil && lose(pass) {
			w.loseWrites = 1
		}
		w.reconcile()
		w.g.Expect(len(w.claimed())).To(BeNumerically("<=", maxConcurrent), "pass %d: claimed %v", pass, w.claimed())
		w.now = w.now.Add(time.Second)
		switch pass % 3 {
		case 1:
			w.finishRuns(code)
		case 2:
			w.bootAll()
		}
	}
}

func TestMaintenanceRebootsEachNodeOnceWithinMaxConcurrent(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy ntv1.RebootPolicy
		code   int32
	}{
		{"IfRequired and exit 3010", ntv1.RebootIfRequired, 3010},
		{"Always and exit 0", ntv1.RebootAlways, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newMaintWorld(t, rebootTask(tc.policy, 2), nodeNames(5)...)
			patchPool(w, 2, tc.code, nil)
			g := w.g
			g.Expect(w.ready()).To(BeTrue(), "%+v", w.task.Status.Conditions)
			g.Expect(w.claimed()).To(BeEmpty())
			for name, n := range w.nodes {
				g.Expect(w.restarts[name]).To(Equal(1), name)
				g.Expect(n.Spec.Unschedulable).To(BeFalse(), name)
				g.Expect(n.Annotations).NotTo(HaveKey(AnnotationCordonedBy), name)
				e := entry(&w.task.Status, name)
				g.Expect(e.Phase).To(Equal(ntv1.NodeSucceeded), name)
				g.Expect(e.Reason).To(Equal(ntv1.NodeReasonRebooted), name)
				g.Expect(e.BootIDBefore).To(Equal("1"), name)
				g.Expect(e.BootIDAfter).To(Equal("2"), name)
			}
		})
	}
}

func TestMaintenanceSurvivesLostWritesAtEveryStep(t *testing.T) {
	// A manager killed before its status write loses nothing but that write: for every pass
	// of a whole rollout, a run in which that pass's write is lost still restarts each node
	// once and ends with every node uncordoned and Succeeded.
	for lost := 0; lost < 30; lost++ {
		w := newMaintWorld(t, rebootTask(ntv1.RebootIfRequired, 1), nodeNames(2)...)
		patchPool(w, 1, 3010, func(pass int) bool { return pass == lost || pass == lost+1 })
		w.g.Expect(w.ready()).To(BeTrue(), "lost write at pass %d", lost)
		for name, n := range w.nodes {
			w.g.Expect(w.restarts[name]).To(Equal(1), "lost write at pass %d: %s", lost, name)
			w.g.Expect(n.Spec.Unschedulable).To(BeFalse(), "lost write at pass %d: %s", lost, name)
		}
		w.g.Expect(w.claimed()).To(BeEmpty())
	}
}

func TestMaintenanceRebootNeverKeepsRebootRequired(t *testing.T) {
	w := newMaintWorld(t, rebootTask(ntv1.RebootNever, 2), nodeNames(2)...)
	w.task.Spec.Cordon = false
	patchPool(w, 0, 3010, nil)
	g := w.g
	g.Expect(w.ready()).To(BeTrue())
	for name := range w.nodes {
		g.Expect(w.restarts[name]).To(BeZero())
		g.Expect(entry(&w.task.Status, name).Reason).To(Equal(ntv1.NodeReasonRebootRequired))
	}
}

func TestMaintenanceRebootTimeout(t *testing.T) {
	task := rebootTask(ntv1.RebootIfRequired, 1)
	task.Spec.RebootTimeoutSeconds = ptr.To[int32](600)
	w := newMaintWorld(t, task, "win-a")
	g := w.g
	w.reconcile() // claim and cordon
	w.reconcile() // start
	w.finishRuns(3010)
	w.reconcile() // restart pod
	g.Expect(entry(&w.task.Status, "win-a").Phase).To(Equal(ntv1.NodeRebooting))
	p := w.reconcile()
	g.Expect(p.RequeueAfter).To(Equal(600 * time.Second))
	w.finishRuns(0) // the node goes down, and never comes back
	w.now = w.now.Add(10 * time.Minute)
	w.reconcile()
	e := entry(&w.task.Status, "win-a")
	g.Expect(e.Phase).To(Equal(ntv1.NodeFailed))
	g.Expect(e.Reason).To(Equal(ntv1.NodeReasonRebootTimeout))
	g.Expect(apimeta.IsStatusConditionTrue(w.task.Status.Conditions, ntv1.ConditionStalled)).To(BeTrue(), "the failure budget applies")
	w.reconcile() // the result is stored: the claim goes, the cordon stays for a person to look
	g.Expect(w.claimed()).To(BeEmpty())
	g.Expect(w.node("win-a").Spec.Unschedulable).To(BeTrue())
	g.Expect(w.restarts["win-a"]).To(Equal(1))
}

func TestMaintenanceUncordonOnFailure(t *testing.T) {
	task := rebootTask(ntv1.RebootNever, 1)
	task.Spec.Drain = &ntv1.DrainSpec{UncordonOnFailure: true}
	w := newMaintWorld(t, task, "win-a")
	w.drains = map[string]*DrainObservation{"win-a": {}}
	w.reconcile()
	w.reconcile()
	w.finishRuns(1)
	w.reconcile()
	w.reconcile()
	w.g.Expect(entry(&w.task.Status, "win-a").Phase).To(Equal(ntv1.NodeFailed))
	w.g.Expect(w.node("win-a").Spec.Unschedulable).To(BeFalse())
	w.g.Expect(w.claimed()).To(BeEmpty())
}

func TestMaintenanceNodeCordonedBySomeoneElseStaysCordoned(t *testing.T) {
	w := newMaintWorld(t, rebootTask(ntv1.RebootIfRequired, 1), "win-a")
	w.node("win-a").Spec.Unschedulable = true
	patchPool(w, 1, 3010, nil)
	w.g.Expect(w.ready()).To(BeTrue())
	w.g.Expect(w.node("win-a").Spec.Unschedulable).To(BeTrue())
	w.g.Expect(w.claimed()).To(BeEmpty())
	w.g.Expect(w.restarts["win-a"]).To(Equal(1))
}

func TestMaintenanceClaims(t *testing.T) {
	other := ClaimValue(&ntv1.NodeTask{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "other", UID: "other-uid"}}, t0, true)
	for _, tc := range []struct {
		name      string
		stale     bool
		wantOps   []NodeOp
		wantReson string
	}{
		{name: "another task's claim: the node waits", wantReson: ntv1.NodeReasonNodeBusy},
		{name: "a claim of a task that is gone: taken over with its cordon", stale: true, wantOps: []NodeOp{
			{Node: "win-a", Kind: OpClaim, Cordon: true, TakeOverCordon: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newMaintWorld(t, rebootTask(ntv1.RebootIfRequired, 1), "win-a")
			n := w.node("win-a")
			n.Annotations = map[string]string{AnnotationClaim: other, AnnotationCordonedBy: "other-uid"}
			n.Spec.Unschedulable, n.ManagedFields = true, operatorFields()
			w.stale = map[string]bool{"win-a": tc.stale}
			p := w.reconcile()
			for i := range p.NodeOps {
				p.NodeOps[i].Why = ""
			}
			w.g.Expect(p.NodeOps).To(Equal(tc.wantOps))
			w.g.Expect(p.Create).To(BeEmpty())
			w.g.Expect(entry(&w.task.Status, "win-a").Reason).To(Equal(tc.wantReson))
			if tc.stale {
				w.g.Expect(w.node("win-a").Annotations[AnnotationCordonedBy]).To(Equal("task-uid"))
			}
		})
	}
}

func TestMaintenanceDrain(t *testing.T) {
	web := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1"}}
	task := rebootTask(ntv1.RebootNever, 1)
	task.Spec.Drain = &ntv1.DrainSpec{TimeoutSeconds: ptr.To[int32](300)}
	w := newMaintWorld(t, task, "win-a")
	g := w.g

	p := w.reconcile()
	g.Expect(p.NodeOps).To(HaveLen(1))
	g.Expect(w.node("win-a").Spec.Unschedulable).To(BeTrue(), "claimed and cordoned in one patch")

	w.drains = map[string]*DrainObservation{"win-a": {Pods: []*corev1.Pod{web}, Evictable: []*corev1.Pod{web}}}
	p = w.reconcile()
	g.Expect(p.Evict).To(ConsistOf(web))
	g.Expect(p.Create).To(BeEmpty())
	g.Expect(p.RequeueAfter).To(Equal(drainPoll))
	g.Expect(entry(&w.task.Status, "win-a").Reason).To(Equal(ntv1.NodeReasonDraining))

	w.drains["win-a"].Blocked = "eviction of pod shop/web-1 refused: The disruption budget web needs 1 healthy pods and has 1 currently"
	w.reconcile()
	e := entry(&w.task.Status, "win-a")
	g.Expect(e.Reason).To(Equal(ntv1.NodeReasonDrainBlocked))
	g.Expect(e.Output).To(ContainSubstring("disruption budget web"))

	// Suspended before its run: the node lets go of its claim and its cordon.
	w.task.Spec.Suspend = true
	p = w.reconcile()
	g.Expect(p.Evict).To(BeEmpty())
	g.Expect(w.claimed()).To(BeEmpty())
	g.Expect(w.node("win-a").Spec.Unschedulable).To(BeFalse())
	w.task.Spec.Suspend = false
	w.reconcile() // claimed again; the drain's timeout counts from this claim

	w.now = w.now.Add(5 * time.Minute)
	w.reconcile()
	e = entry(&w.task.Status, "win-a")
	g.Expect(e.Phase).To(Equal(ntv1.NodeFailed))
	g.Expect(e.Reason).To(Equal(ntv1.NodeReasonDrainTimeout))
	g.Expect(e.Output).To(ContainSubstring("disruption budget web"))

	// A drain that empties the node starts the run.
	w2 := newMaintWorld(t, task.DeepCopy(), "win-b")
	w2.task.Status = ntv1.NodeTaskStatus{}
	w2.reconcile()
	w2.drains = map[string]*DrainObservation{"win-b": {}}
	p = w2.reconcile()
	g.Expect(requestNodes(p.Create)).To(Equal([]string{"win-b#1"}))
}

func TestNodePatch(t *testing.T) {
	task := newTask()
	mine := ClaimValue(task, t0, false)
	mineCordoned := ClaimValue(task, t0, true)
	for _, tc := range []struct {
		name string
		node func(*corev1.Node)
		op   NodeOp
		want string
	}{
		{"claim and cordon", nil, NodeOp{Kind: OpClaim, Cordon: true},
			`{"metadata":{"annotations":{"nodetask.io/claim":` + strconv.Quote(mineCordoned) + `,"nodetask.io/cordoned-by":"task-uid"},"resourceVersion":"7"},"spec":{"unschedulable":true}}`},
		{"claim a node cordoned by someone else", func(n *corev1.Node) { n.Spec.Unschedulable = true }, NodeOp{Kind: OpClaim, Cordon: true},
			`{"metadata":{"annotations":{"nodetask.io/claim":` + strconv.Quote(mine) + `},"resourceVersion":"7"}}`},
		{"release and uncordon", func(n *corev1.Node) {
			n.Spec.Unschedulable, n.ManagedFields = true, operatorFields()
			n.Annotations = map[string]string{AnnotationClaim: mineCordoned, AnnotationCordonedBy: "task-uid"}
		}, NodeOp{Kind: OpRelease, Uncordon: true},
			`{"metadata":{"annotations":{"nodetask.io/claim":null,"nodetask.io/cordoned-by":null},"resourceVersion":"7"},"spec":{"unschedulable":null}}`},
		{"release keeps a cordon this claim did not make, though the operator made it earlier", func(n *corev1.Node) {
			n.Spec.Unschedulable, n.ManagedFields = true, operatorFields()
			n.Annotations = map[string]string{AnnotationClaim: mine, AnnotationCordonedBy: "task-uid"}
		}, NodeOp{Kind: OpRelease, Uncordon: true},
			`{"metadata":{"annotations":{"nodetask.io/claim":null},"resourceVersion":"7"}}`},
		{"release keeps a cordon someone made again after this claim's, and drops the mark", func(n *corev1.Node) {
			n.Spec.Unschedulable = true // kubectl uncordon, then kubectl cordon: the field is kubectl's
			n.Annotations = map[string]string{AnnotationClaim: mineCordoned, AnnotationCordonedBy: "task-uid"}
		}, NodeOp{Kind: OpRelease, Uncordon: true},
			`{"metadata":{"annotations":{"nodetask.io/claim":null,"nodetask.io/cordoned-by":null},"resourceVersion":"7"}}`},
		{"a claim drops a mark someone else's cordon made stale", func(n *corev1.Node) {
			n.Spec.Unschedulable = true
			n.Annotations = map[string]string{AnnotationCordonedBy: "task-uid"}
		}, NodeOp{Kind: OpClaim, Cordon: true},
			`{"metadata":{"annotations":{"nodetask.io/claim":` + strconv.Quote(mine) + `,"nodetask.io/cordoned-by":null},"resourceVersion":"7"}}`},
		{"a forged claim of a gone task uncordons nothing the operator did not cordon", func(n *corev1.Node) {
			n.Spec.Unschedulable = true
			n.Annotations = map[string]string{AnnotationClaim: mineCordoned, AnnotationCordonedBy: "task-uid"}
		}, NodeOp{Kind: OpRelease, Uncordon: true},
			`{"metadata":{"annotations":{"nodetask.io/claim":null,"nodetask.io/cordoned-by":null},"resourceVersion":"7"}}`},
		{"release never uncordons someone else's cordon", func(n *corev1.Node) {
			n.Spec.Unschedulable = true
			n.Annotations = map[string]string{AnnotationClaim: mine}
		}, NodeOp{Kind: OpRelease, Uncordon: true},
			`{"metadata":{"annotations":{"nodetask.io/claim":null},"resourceVersion":"7"}}`},
		{"release never removes another task's claim", func(n *corev1.Node) {
			n.Annotations = map[string]string{AnnotationClaim: `{"task":"ops/other","uid":"other"}`}
		}, NodeOp{Kind: OpRelease}, ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := winNode("win-a")
			n.ResourceVersion = "7"
			if tc.node != nil {
				tc.node(n)
			}
			NewWithT(t).Expect(string(NodePatch(task, n, tc.op, t0))).To(Equal(tc.want))
		})
	}
}

func TestMaintenanceDrainsAgainInEveryRun(t *testing.T) {
	web := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1"}}
	task := rebootTask(ntv1.RebootNever, 1)
	task.Spec.Drain = &ntv1.DrainSpec{TimeoutSeconds: ptr.To[int32](300)}
	w := newMaintWorld(t, task, "win-a")
	w.drains = map[string]*DrainObservation{"win-a": {}}
	patchPool(w, 1, 0, nil)
	w.g.Expect(w.ready()).To(BeTrue())

	// A new run: the node shows run 1's result until it starts run 2, and is drained first.
	w.task.Spec.RerunToken = "2"
	w.drains["win-a"] = &DrainObservation{Pods: []*corev1.Pod{web}, Evictable: []*corev1.Pod{web}}
	for range 3 {
		p := w.reconcile()
		w.g.Expect(p.Create).To(BeEmpty(), "no run starts before the drain ends")
	}
	e := entry(&w.task.Status, "win-a")
	w.g.Expect(e.Reason).To(Equal(ntv1.NodeReasonDraining))
	w.g.Expect(w.task.Status.Run).To(BeEquivalentTo(2))
	w.g.Expect(e.Run).To(BeZero(), "the entry is run 2's")
	w.drains["win-a"] = &DrainObservation{}
	p := w.reconcile()
	w.g.Expect(requestNodes(p.Create)).To(Equal([]string{"win-a#1"}))
}

func TestMaintenanceRestartPodLeftRunningDoesNotHoldTheNode(t *testing.T) {
	// On a real node the restart pod may still read Running when the host is back: the boot
	// ID says the node restarted, and the pod must not keep the node claimed and cordoned.
	w := newMaintWorld(t, rebootTask(ntv1.RebootIfRequired, 1), "win-a")
	w.reconcile()
	w.reconcile()
	w.finishRuns(3010)
	w.reconcile()
	w.g.Expect(entry(&w.task.Status, "win-a").Phase).To(Equal(ntv1.NodeRebooting))
	notReady(w.node("win-a"))
	w.bootAll() // back with a new boot ID; the restart pod was never reported finished
	for range 3 {
		w.reconcile()
	}
	w.g.Expect(entry(&w.task.Status, "win-a").Reason).To(Equal(ntv1.NodeReasonRebooted))
	w.g.Expect(w.claimed()).To(BeEmpty())
	w.g.Expect(w.node("win-a").Spec.Unschedulable).To(BeFalse())
	w.g.Expect(w.ready()).To(BeTrue())
}
