package rollout

import (
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// Tests of the "exactly once per node" promise at the edges: each was written against the
// planner before the fix and failed there (issue 7).

// Item 1: two tasks whose names share 40 characters, or a task re-created under its name,
// never share a pod name.
func TestEdgePodNamesBelongToOneTask(t *testing.T) {
	g := NewWithT(t)
	a := newTask(func(t *ntv1.NodeTask) { t.Name, t.UID = "windows-security-baseline-rollout-canary-ring0", "uid-a" })
	b := newTask(func(t *ntv1.NodeTask) { t.Name, t.UID = "windows-security-baseline-rollout-canary-ring1-all", "uid-b" })
	again := newTask(func(t *ntv1.NodeTask) { t.Name, t.UID = a.Name, "uid-a2" })
	pb := PodBuilder{}
	rev, req := Revision(&a.Spec), PodRequest{Node: "win-a", NodeUID: "machine-1", Attempt: 1}
	g.Expect(pb.Pod(a, 1, rev, req).Name).NotTo(Equal(pb.Pod(b, 1, rev, req).Name))
	g.Expect(pb.Pod(a, 1, rev, req).Name).NotTo(Equal(pb.Pod(again, 1, rev, req).Name))
	g.Expect(ScriptConfigMapName(a, 1, rev)).NotTo(Equal(ScriptConfigMapName(again, 1, rev)))
}

// Item 2: attempt 2 succeeded after attempt 1 failed; attempt 2's pod is deleted (TTL): the
// node must not run again.
func TestEdgeLaterAttemptWinsOverOlderPods(t *testing.T) {
	g := NewWithT(t)
	task := newTask(func(t *ntv1.NodeTask) { t.Spec.Retries = ptr.To[int32](1) })
	first := taskPod(task, "win-a", 1, 1, exited(1, "transient", t0.Add(-time.Minute)))
	second := taskPod(task, "win-a", 1, 2, exited(0, "worked", t0.Add(-10*time.Second)))
	obs := observe(task, nodes("win-a"), first, second)
	settle(obs)
	g.Expect(entry(&obs.Task.Status, "win-a").Phase).To(Equal(ntv1.NodeSucceeded))

	obs = observe(obs.Task, nodes("win-a"), first) // attempt 2's pod is gone
	p := settle(obs)
	g.Expect(p.Create).To(BeEmpty(), "the node ran its attempts already")
	e := entry(&obs.Task.Status, "win-a")
	g.Expect(e.Phase).To(Equal(ntv1.NodeSucceeded))
	g.Expect(e.Attempts).To(BeEquivalentTo(2))
	g.Expect(e.Output).To(Equal("worked"))
}

// Item 2: lowering retries stops a pending retry, even when the failed pod is gone.
func TestEdgeLoweringRetriesStopsPendingRetry(t *testing.T) {
	g := NewWithT(t)
	task := newTask(func(t *ntv1.NodeTask) { t.Spec.Retries = ptr.To[int32](3) })
	obs := observe(task, nodes("win-a"), taskPod(task, "win-a", 1, 1, exited(4, "nope", t0.Add(-time.Second))))
	settle(obs)
	g.Expect(entry(&obs.Task.Status, "win-a").Reason).To(Equal(ntv1.NodeReasonRetryBackoff))

	obs.Task.Spec.Retries = ptr.To[int32](0)
	obs = observe(obs.Task, nodes("win-a")) // and the pod was deleted
	obs.Now = t0.Add(time.Hour)
	p := settle(obs)
	g.Expect(p.Create).To(BeEmpty())
	e := entry(&obs.Task.Status, "win-a")
	g.Expect(e.Phase).To(Equal(ntv1.NodeFailed))
	g.Expect(e.ExitCode).To(HaveValue(BeEquivalentTo(4)))
}

// Item 3: a GitOps revert (A, then B, then A) runs A again on every node.
func TestEdgeRevertRunsAgain(t *testing.T) {
	g := NewWithT(t)
	ns := nodes("win-a", "win-b")
	task := newTask()
	podsA := []*corev1.Pod{
		taskPod(task, "win-a", 1, 1, exited(0, "A", t0.Add(-time.Hour))),
		taskPod(task, "win-b", 1, 1, exited(0, "A", t0.Add(-time.Hour))),
	}
	obs := observe(task, ns, podsA...)
	settle(obs)
	g.Expect(obs.Task.Status.Succeeded).To(BeEquivalentTo(2))

	obs.Task.Spec.Script.Inline = ptr.To("Write-Output B")
	podsB := []*corev1.Pod{
		taskPod(obs.Task, "win-a", 2, 1, exited(0, "B", t0.Add(-time.Minute))),
		taskPod(obs.Task, "win-b", 2, 1, exited(0, "B", t0.Add(-time.Minute))),
	}
	settle(observe(obs.Task, ns, podsA...)) // B starts
	obs = observe(obs.Task, ns, append(podsA, podsB...)...)
	settle(obs)
	g.Expect(obs.Task.Status.Succeeded).To(BeEquivalentTo(2))

	obs.Task.Spec.Script.Inline = ptr.To("Write-Output hi") // back to A
	obs = observe(obs.Task, ns, append(podsA, podsB...)...)
	p := settle(obs)
	g.Expect(requestNodes(p.Create)).To(Equal([]string{"win-a#1", "win-b#1"}), "going back to A is a new run")
	g.Expect(obs.Task.Status.Succeeded).To(BeEquivalentTo(0))
}

// Item 4: a node deleted and created again under its name is a new machine.
func TestEdgeRecreatedNodeIsNewMachine(t *testing.T) {
	g := NewWithT(t)
	task := newTask()
	old := winNode("win-a", func(n *corev1.Node) {
		n.UID, n.CreationTimestamp = "machine-1", metav1.NewTime(t0.Add(-24*time.Hour))
	})
	pod := taskPod(task, "win-a", 1, 1) // running when the machine goes away
	obs := observe(task, []*corev1.Node{old}, pod)
	settle(obs)
	obs = observe(obs.Task, nil, pod)
	settle(obs)
	g.Expect(entry(&obs.Task.Status, "win-a").Reason).To(Equal(ntv1.NodeReasonNodeLost))

	// The machine is reimaged and registers again under the same name.
	reborn := winNode("win-a", func(n *corev1.Node) { n.UID, n.CreationTimestamp = "machine-2", metav1.NewTime(t0) })
	obs = observe(obs.Task, []*corev1.Node{reborn})
	obs.Now = t0.Add(time.Minute)
	p := settle(obs)
	g.Expect(requestNodes(p.Create)).To(Equal([]string{"win-a#1"}), "the new machine gets the task")
	g.Expect(p.BudgetExceeded).To(BeFalse(), "the old machine's NodeLost does not count")
	g.Expect(obs.Task.Status.Failed).To(BeEquivalentTo(0))
}

// Item 5: kubelet pressure taints keep a node a target that waits.
func TestEdgePressureTaintsKeepTargets(t *testing.T) {
	for _, key := range []string{
		corev1.TaintNodeDiskPressure, corev1.TaintNodeMemoryPressure,
		corev1.TaintNodePIDPressure, corev1.TaintNodeNetworkUnavailable,
	} {
		t.Run(key, func(t *testing.T) {
			g := NewWithT(t)
			ns := []*corev1.Node{winNode("win-a"), winNode("win-b", taint(key, "", corev1.TaintEffectNoSchedule))}
			task := newTask()
			obs := observe(task, ns, taskPod(task, "win-a", 1, 1, exited(0, "", t0)))
			p := settle(obs)
			g.Expect(p.Targets).To(HaveKey("win-b"))
			g.Expect(p.Create).To(BeEmpty(), "the node waits for the taint to go")
			g.Expect(obs.Task.Status.Pending).To(BeEquivalentTo(1))
			g.Expect(findCondition(&obs.Task.Status, ntv1.ConditionReady).Status).To(Equal(metav1.ConditionFalse))
		})
	}
}

// Item 6: node churn does not grow the status.
func TestEdgeChurnKeepsStatusBounded(t *testing.T) {
	g := NewWithT(t)
	task := newTask()
	obs := observe(task, nodes("win-keep"), taskPod(task, "win-keep", 1, 1, exited(0, "", t0)))
	settle(obs)
	for i := range 50 {
		name := fmt.Sprintf("win-churn-%d", i)
		pod := taskPod(obs.Task, name, 1, 1, exited(0, "", t0))
		obs = observe(obs.Task, append(nodes("win-keep"), winNode(name)), pod)
		settle(obs)
		// The node goes; its recorded pod is deleted, then the pod is gone.
		obs = observe(obs.Task, nodes("win-keep"), pod)
		settle(obs)
		obs = observe(obs.Task, nodes("win-keep"))
		settle(obs)
	}
	g.Expect(obs.Task.Status.Targets).To(BeEquivalentTo(1))
	g.Expect(len(obs.Task.Status.Nodes)).To(BeNumerically("<=", 2))
}

// Item 7: a pod that failed without a container state (timed out before starting) is still
// deleted once its TTL has run out.
func TestEdgeTTLWithoutTerminatedState(t *testing.T) {
	g := NewWithT(t)
	task := newTask(func(t *ntv1.NodeTask) { t.Spec.PodTTLSecondsAfterFinished = ptr.To[int32](60) })
	pod := taskPod(task, "win-a", 1, 1, deadlineExceeded)
	obs := observe(task, nodes("win-a"), pod)
	settle(obs)
	obs = observe(obs.Task, nodes("win-a"), pod)
	obs.Now = t0.Add(2 * time.Minute)
	p := ComputePlan(obs)
	g.Expect(deletedPods(p)).To(ConsistOf(pod))
}

// Item 7: a finished pod of an older revision on a node that stopped matching is deleted.
func TestEdgeTTLOldRevisionOnUnmatchedNode(t *testing.T) {
	g := NewWithT(t)
	task := newTask(func(t *ntv1.NodeTask) { t.Spec.PodTTLSecondsAfterFinished = ptr.To[int32](60) })
	pod := taskPod(task, "win-a", 1, 1, exited(0, "", t0.Add(-10*time.Second)))
	obs := observe(task, nodes("win-a", "win-b"), pod, taskPod(task, "win-b", 1, 1, exited(0, "", t0.Add(-10*time.Second))))
	settle(obs)
	obs.Task.Spec.Script.Inline = ptr.To("Write-Output v2")
	obs.Task.Spec.NodeNames = []string{"win-b"}
	for i := range 3 {
		obs = observe(obs.Task, nodes("win-a", "win-b"), pod)
		obs.Now = t0.Add(time.Duration(i) * time.Minute)
		p := settle(obs)
		if len(p.Delete) > 0 {
			g.Expect(deletedPods(p)).To(ConsistOf(pod))
			return
		}
	}
	t.Fatal("the old revision's pod on a node that no longer matches was never deleted")
}

// Item 8: the operator enforces the timeout when the kubelet cannot.
func TestEdgeControllerDeadline(t *testing.T) {
	g := NewWithT(t)
	task := newTask(func(t *ntv1.NodeTask) { t.Spec.TimeoutSeconds = ptr.To[int32](600) })
	pod := taskPod(task, "win-a", 1, 1, func(p *corev1.Pod) {
		p.CreationTimestamp = metav1.NewTime(t0.Add(-20 * time.Minute))
	})
	unreachable := winNode("win-a", notReady, taint(corev1.TaintNodeUnreachable, "", corev1.TaintEffectNoExecute))
	obs := observe(task, []*corev1.Node{unreachable}, pod)
	settle(obs)
	e := entry(&obs.Task.Status, "win-a")
	g.Expect(e.Phase).To(Equal(ntv1.NodeFailed))
	g.Expect(e.Reason).To(Equal(ntv1.NodeReasonTimeout))
	p := settle(observe(obs.Task, []*corev1.Node{unreachable}, pod))
	g.Expect(deletedPods(p)).To(ConsistOf(pod), "the recorded pod is deleted, freeing its slot")
	g.Expect(p.InFlight).To(Equal(0))
}

// Item 8: a superseded pod still waiting for its image is cancelled by a new revision.
func TestEdgeSupersededWaitingPodCancelled(t *testing.T) {
	g := NewWithT(t)
	task := newTask()
	pod := taskPod(task, "win-a", 1, 1, waitingFor("ImagePullBackOff"))
	obs := observe(task, nodes("win-a"), pod)
	settle(obs)
	obs.Task.Spec.Script.Inline = ptr.To("Write-Output v2")
	obs = observe(obs.Task, nodes("win-a"), pod)
	p := settle(obs)
	g.Expect(deletedPods(p)).To(ConsistOf(pod))
}

// A node starts no attempt while a pod of an earlier one is still being deleted, however
// long that takes: its process may still be running.
func TestEdgeOnePodPerNodeAtATime(t *testing.T) {
	g := NewWithT(t)
	task := newTask(func(t *ntv1.NodeTask) { t.Spec.Retries = ptr.To[int32](1) })
	lingering := taskPod(task, "win-a", 1, 1, func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{Time: t0} })
	obs := observe(task, nodes("win-a"), lingering)
	settle(obs)
	g.Expect(entry(&obs.Task.Status, "win-a").Reason).To(Equal(ntv1.NodeReasonRetryBackoff))
	obs = observe(obs.Task, nodes("win-a"), lingering)
	obs.Now = t0.Add(10 * time.Minute)
	p := settle(obs)
	g.Expect(p.Create).To(BeEmpty())
	g.Expect(p.InFlight).To(Equal(0), "it no longer holds a rollout slot")
	obs = observe(obs.Task, nodes("win-a")) // gone at last
	obs.Now = t0.Add(10 * time.Minute)
	g.Expect(requestNodes(ComputePlan(obs).Create)).To(Equal([]string{"win-a#2"}))
}
