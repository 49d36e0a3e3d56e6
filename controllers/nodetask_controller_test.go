package controllers

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
	"github.com/nodetask/nodetask-operator/internal/testutil"
)

var testCounter atomic.Int32

// fixture is one test's private world: a privileged namespace and Windows nodes that carry a
// label no other test's nodes have, so that tests never target each other's nodes.
type fixture struct {
	ns    string
	group string
}

func newFixture() *fixture {
	id := testCounter.Add(1)
	f := &fixture{ns: fmt.Sprintf("ops-%d", id), group: fmt.Sprintf("g%d", id)}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "privileged",
	}}}
	Expect(k8sClient.Create(suiteCtx, ns)).To(Succeed())
	return f
}

func (f *fixture) nodeName(i int) string { return fmt.Sprintf("%s-win-%d", f.group, i) }

// addNode creates a node of this fixture: Windows and Ready unless told otherwise.
func (f *fixture) addNode(name string, os string, ready bool, taints ...corev1.Taint) *corev1.Node {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{rollout.OSLabel: os, "test-group": f.group}},
		Spec:       corev1.NodeSpec{Taints: taints},
	}
	Expect(k8sClient.Create(suiteCtx, node)).To(Succeed())
	DeferCleanup(func() { _ = client.IgnoreNotFound(k8sClient.Delete(suiteCtx, node)) })
	setNodeReady(node, ready)
	return node
}

func (f *fixture) addWindowsNodes(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = f.nodeName(i)
		f.addNode(names[i], rollout.WindowsOS, true)
	}
	return names
}

func setNodeReady(node *corev1.Node, ready bool) {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	Eventually(func() error {
		if err := k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(node), node); err != nil {
			return err
		}
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status, LastHeartbeatTime: metav1.Now()}}
		return k8sClient.Status().Update(suiteCtx, node)
	}).Should(Succeed())
}

// task returns a NodeTask of this fixture that targets the fixture's nodes.
func (f *fixture) task(name string, mutate ...func(*ntv1.NodeTask)) *ntv1.NodeTask {
	t := &ntv1.NodeTask{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns},
		Spec: ntv1.NodeTaskSpec{
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"test-group": f.group}},
			Script:       &ntv1.ScriptSpec{Inline: ptr.To("Write-Output \"hello from $env:COMPUTERNAME\"")},
			Rollout:      ntv1.RolloutSpec{MaxConcurrent: ptr.To(intstr.FromString("100%"))},
		},
	}
	for _, m := range mutate {
		m(t)
	}
	return t
}

// updateSpec changes the task's spec as a user would, retrying on conflicts with status writes.
func updateSpec(task *ntv1.NodeTask, mutate func(*ntv1.NodeTask)) {
	Eventually(func() error {
		t := get(task)
		mutate(t)
		return k8sClient.Update(suiteCtx, t)
	}).Should(Succeed())
}

func create(obj client.Object) {
	Expect(k8sClient.Create(suiteCtx, obj)).To(Succeed())
}

func get(task *ntv1.NodeTask) *ntv1.NodeTask { return testutil.FetchTask(suiteCtx, k8sClient, task) }

func (f *fixture) pods(task *ntv1.NodeTask) []corev1.Pod {
	var list corev1.PodList
	Expect(k8sClient.List(suiteCtx, &list, client.InNamespace(task.Namespace), client.MatchingLabels{ntv1.LabelTask: task.Name})).To(Succeed())
	return list.Items
}

func unfinished(pods []corev1.Pod) []corev1.Pod {
	var out []corev1.Pod
	for _, p := range pods {
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed && p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

// finish plays the kubelet: the pod's container ended with this exit code and output, which
// the wrapper ends with its completion marker.
func finish(pod *corev1.Pod, code int32, message string) {
	message += "\n" + rollout.CompletionMarker + fmt.Sprint(code)
	Eventually(func() error {
		if err := k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		pod.Status.Phase = corev1.PodSucceeded
		reason := "Completed"
		if code != 0 {
			pod.Status.Phase, reason = corev1.PodFailed, "Error"
		}
		now := metav1.Now()
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: rollout.ContainerName, Image: pod.Spec.Containers[0].Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: code, Reason: reason, Message: message, StartedAt: now, FinishedAt: now,
			}},
		}}
		return k8sClient.Status().Update(suiteCtx, pod)
	}).Should(Succeed())
}

// finishAll finishes every unfinished pod of the task, each with the exit code code(node).
func (f *fixture) finishAll(task *ntv1.NodeTask, code func(node string) int32) int {
	pods := unfinished(f.pods(task))
	for i := range pods {
		c := code(pods[i].Spec.NodeName)
		finish(&pods[i], c, fmt.Sprintf("exit %d on %s", c, pods[i].Spec.NodeName))
	}
	return len(pods)
}

// finishUntil plays the kubelet through a rollout: it finishes every pod with exit code 0 as
// pods appear, until the task has made want pods and none is unfinished. between runs after
// each round (nil for nothing).
func (f *fixture) finishUntil(task *ntv1.NodeTask, want int, between func()) {
	for len(f.pods(task)) < want || len(unfinished(f.pods(task))) > 0 {
		f.finishAll(task, succeed)
		if between != nil {
			between()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func succeed(string) int32 { return 0 }

func condition(task *ntv1.NodeTask, typ string) *metav1.Condition {
	return meta.FindStatusCondition(get(task).Status.Conditions, typ)
}

func conditionStatus(task *ntv1.NodeTask, typ string) func() metav1.ConditionStatus {
	return func() metav1.ConditionStatus {
		c := condition(task, typ)
		if c == nil {
			return ""
		}
		return c.Status
	}
}

func conditionReason(task *ntv1.NodeTask, typ string) func() string {
	return func() string {
		if c := condition(task, typ); c != nil {
			return c.Reason
		}
		return ""
	}
}

// kstatus computes the status Argo CD, Flux and kubectl's kstatus-based tools would show.
func kstatus(task *ntv1.NodeTask) status.Status {
	obj := get(task)
	obj.SetGroupVersionKind(ntv1.GroupVersion.WithKind("NodeTask"))
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	Expect(err).NotTo(HaveOccurred())
	res, err := status.Compute(&unstructured.Unstructured{Object: u})
	Expect(err).NotTo(HaveOccurred())
	return res.Status
}

// revisionOf waits until the controller has recorded the task's revision, and returns it.
func revisionOf(task *ntv1.NodeTask) string {
	var rev string
	Eventually(func() string { rev = get(task).Status.Revision; return rev }).ShouldNot(BeEmpty())
	return rev
}

// nodeEntry returns the node's entry in the stored status; an empty one if it has none.
func nodeEntry(task *ntv1.NodeTask, node string) ntv1.NodeStatus {
	return testutil.StoredEntry(suiteCtx, k8sClient, task, node)
}

var _ = Describe("NodeTask controller", func() {
	It("runs once on every Windows node, leaves Linux nodes alone, and reports Ready", func() {
		f := newFixture()
		names := f.addWindowsNodes(4)
		f.addNode(f.group+"-linux-0", "linux", true)
		f.addNode(f.group+"-linux-1", "linux", true)
		task := f.task("inventory")
		create(task)

		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(4))
		Eventually(func() status.Status { return kstatus(task) }).Should(Equal(status.InProgressStatus))
		for _, p := range f.pods(task) {
			Expect(p.Spec.NodeName).To(HavePrefix(f.group + "-win-"))
			Expect(p.Spec.SecurityContext.WindowsOptions.HostProcess).To(HaveValue(BeTrue()))
			Expect(p.Spec.HostNetwork).To(BeTrue())
			Expect(metav1.IsControlledBy(&p, get(task))).To(BeTrue())
		}
		var cm corev1.ConfigMap
		Expect(k8sClient.Get(suiteCtx, client.ObjectKey{Namespace: f.ns, Name: rollout.ScriptConfigMapName(get(task), 1, revisionOf(task))}, &cm)).To(Succeed())
		Expect(cm.Data["script.ps1"]).To(ContainSubstring("hello from"))

		f.finishAll(task, succeed)
		Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		got := get(task)
		Expect(got.Status.Targets).To(BeEquivalentTo(4))
		Expect(got.Status.Succeeded).To(BeEquivalentTo(4))
		Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		Expect(got.Status.CompletionTime).NotTo(BeNil())
		Expect(got.Status.Nodes).To(HaveLen(4))
		for i, e := range got.Status.Nodes {
			Expect(e.Name).To(Equal(names[i]))
			Expect(e.Phase).To(Equal(ntv1.NodeSucceeded))
			Expect(e.Output).To(Equal("exit 0 on " + names[i]))
			Expect(e.ExitCode).To(BeNil(), "success is exit code 0, left out")
		}
		Expect(kstatus(task)).To(Equal(status.CurrentStatus))
		Expect(condition(task, ntv1.ConditionReady).Message).To(Equal("succeeded on all 4 nodes"))
	})

	It("never runs more than maxConcurrent nodes at once, in name order", func() {
		f := newFixture()
		names := f.addWindowsNodes(7)
		task := f.task("slow", func(t *ntv1.NodeTask) { t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(2)) })
		create(task)

		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(2))
		first := []string{}
		for _, p := range f.pods(task) {
			first = append(first, p.Spec.NodeName)
		}
		Expect(first).To(ConsistOf(names[0], names[1]), "nodes start in name order")
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			pods := f.pods(task)
			running := unfinished(pods)
			Expect(len(running)).To(BeNumerically("<=", 2), "at most maxConcurrent pods unfinished")
			if len(pods) == 7 && len(running) == 0 {
				break
			}
			if len(running) == 0 {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			// Hold still a moment: a controller that overshoots would do it now.
			Consistently(func() int { return len(unfinished(f.pods(task))) }, "200ms", "20ms").Should(BeNumerically("<=", 2))
			finish(&running[0], 0, "ok")
		}
		var started []string
		for _, p := range f.pods(task) {
			started = append(started, p.Spec.NodeName)
		}
		Expect(started).To(ConsistOf(names))
		f.finishAll(task, succeed)
		Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
	})

	It("stops starting nodes once failures exceed maxFailures, and reports Stalled", func() {
		f := newFixture()
		f.addWindowsNodes(6)
		task := f.task("fragile", func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(3))
			t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromInt32(1))
		})
		create(task)
		Eventually(func() int { return len(unfinished(f.pods(task))) }).Should(Equal(3))
		pods := unfinished(f.pods(task))
		finish(&pods[0], 1, "first failure")
		finish(&pods[1], 2, "second failure")

		Eventually(conditionStatus(task, ntv1.ConditionStalled)).Should(Equal(metav1.ConditionTrue))
		stalled := condition(task, ntv1.ConditionStalled)
		Expect(stalled.Reason).To(Equal(ntv1.ReasonFailureBudgetExceeded))
		Expect(stalled.Message).To(ContainSubstring("rerunToken"))
		Eventually(func() status.Status { return kstatus(task) }).Should(Equal(status.FailedStatus))
		// The first failure was within the budget and freed a slot, so a fourth node may
		// have started before the second failure; after that, nothing more starts.
		started := len(f.pods(task))
		Expect(started).To(BeNumerically("<=", 4))
		Consistently(func() int { return len(f.pods(task)) }, "1s").Should(Equal(started), "no further node starts")
		// The running ones finish and are recorded.
		f.finishAll(task, succeed)
		Eventually(func() int32 { return get(task).Status.Succeeded }).Should(BeEquivalentTo(started - 2))
		Expect(get(task).Status.Failed).To(BeEquivalentTo(2))
		Expect(get(task).Status.Pending).To(BeEquivalentTo(6 - started))
		Expect(condition(task, ntv1.ConditionStalled).Status).To(Equal(metav1.ConditionTrue))
	})

	It("retries a failed node with backoff and counts attempts", func() {
		f := newFixture()
		names := f.addWindowsNodes(1)
		task := f.task("flaky", func(t *ntv1.NodeTask) { t.Spec.Retries = ptr.To[int32](1) })
		create(task)
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(1))
		first := f.pods(task)[0]
		finish(&first, 1, "transient")
		Eventually(func() string { return nodeEntry(task, names[0]).Reason }).Should(Equal(ntv1.NodeReasonRetryBackoff))
		Expect(nodeEntry(task, names[0]).Attempts).To(BeEquivalentTo(1))
		Expect(condition(task, ntv1.ConditionReconciling).Reason).To(Equal(ntv1.ReasonRetryBackoff))

		// The second attempt starts after the 10s backoff.
		Consistently(func() int { return len(f.pods(task)) }, "5s").Should(Equal(1))
		Eventually(func() int { return len(f.pods(task)) }, "15s").Should(Equal(2))
		second := unfinished(f.pods(task))[0]
		Expect(second.Labels[ntv1.LabelAttempt]).To(Equal("2"))
		finish(&second, 0, "worked")
		Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		e := nodeEntry(task, names[0])
		Expect(e.Attempts).To(BeEquivalentTo(2))
		Expect(e.Output).To(Equal("worked"))
	})

	It("reports a pod stopped at its deadline as Timeout", func() {
		f := newFixture()
		names := f.addWindowsNodes(1)
		task := f.task("hang", func(t *ntv1.NodeTask) { t.Spec.TimeoutSeconds = ptr.To[int32](5) })
		create(task)
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(1))
		pod := f.pods(task)[0]
		Expect(pod.Spec.ActiveDeadlineSeconds).To(HaveValue(BeEquivalentTo(5)))
		// What the kubelet does when activeDeadlineSeconds passes.
		deadlineExceeded(&pod)
		Expect(k8sClient.Status().Update(suiteCtx, &pod)).To(Succeed())

		Eventually(func() string { return nodeEntry(task, names[0]).Reason }).Should(Equal(ntv1.NodeReasonTimeout))
		Expect(nodeEntry(task, names[0]).ExitCode).To(BeNil())
		Eventually(conditionStatus(task, ntv1.ConditionStalled)).Should(Equal(metav1.ConditionTrue))
	})

	It("records PodDeleted when someone else deletes a running pod, and NodeLost when its node goes", func() {
		f := newFixture()
		names := f.addWindowsNodes(2)
		task := f.task("interrupted", func(t *ntv1.NodeTask) { t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromString("100%")) })
		create(task)
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(2))
		for _, p := range f.pods(task) {
			if p.Spec.NodeName == names[0] {
				Expect(k8sClient.Delete(suiteCtx, &p, client.GracePeriodSeconds(0))).To(Succeed())
			}
		}
		Expect(k8sClient.Delete(suiteCtx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: names[1]}})).To(Succeed())

		Eventually(func() string { return nodeEntry(task, names[0]).Reason }).Should(Equal(ntv1.NodeReasonPodDeleted))
		Eventually(func() string { return nodeEntry(task, names[1]).Reason }).Should(Equal(ntv1.NodeReasonNodeLost))
		// The pod left on the deleted node is removed once its result is stored.
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(0))
		Expect(nodeEntry(task, names[1]).Phase).To(Equal(ntv1.NodeFailed))
		Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		Expect(get(task).Status.Targets).To(BeEquivalentTo(1))
	})

	It("keeps a NotReady node waiting and excludes nodes whose taints are not tolerated", func() {
		f := newFixture()
		waiting := f.addNode(f.nodeName(0), rollout.WindowsOS, false)
		f.addNode(f.nodeName(1), rollout.WindowsOS, true, corev1.Taint{Key: "os", Value: "windows", Effect: corev1.TaintEffectNoSchedule})
		f.addNode(f.nodeName(2), rollout.WindowsOS, true, corev1.Taint{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoExecute})
		task := f.task("patient", func(t *ntv1.NodeTask) {
			t.Spec.Tolerations = []corev1.Toleration{{Key: "os", Operator: corev1.TolerationOpEqual, Value: "windows", Effect: corev1.TaintEffectNoSchedule}}
		})
		create(task)
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(1))
		Expect(f.pods(task)[0].Spec.NodeName).To(Equal(f.nodeName(1)))
		Expect(f.pods(task)[0].Spec.Tolerations).To(ContainElement(task.Spec.Tolerations[0]))
		Eventually(func() string { return nodeEntry(task, f.nodeName(0)).Reason }).Should(Equal(ntv1.NodeReasonNodeNotReady))
		Expect(get(task).Status.Targets).To(BeEquivalentTo(2))
		f.finishAll(task, succeed)
		Eventually(conditionReason(task, ntv1.ConditionReconciling)).Should(Equal(ntv1.ReasonWaitingForNodes))

		setNodeReady(waiting, true)
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(2))
		f.finishAll(task, succeed)
		Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		Expect(nodeEntry(task, f.nodeName(2)).Name).To(BeEmpty(), "the untolerated node has no entry")
	})

	It("re-runs every node when what runs changes or rerunToken changes, but not for a rollout change", func() {
		f := newFixture()
		f.addWindowsNodes(2)
		task := f.task("versioned")
		create(task)
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(2))
		f.finishAll(task, succeed)
		Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		rev1 := get(task).Status.Revision

		updateSpec(task, func(t *ntv1.NodeTask) { t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1)) })
		Consistently(func() int { return len(f.pods(task)) }, "1s").Should(Equal(2))
		Expect(get(task).Status.Revision).To(Equal(rev1))
		Expect(get(task).Status.ObservedGeneration).To(Equal(get(task).Generation))

		updateSpec(task, func(t *ntv1.NodeTask) { t.Spec.Script.Inline = ptr.To("Write-Output v2") })
		Eventually(func() string { return get(task).Status.Revision }).ShouldNot(Equal(rev1))
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(3), "one at a time now")
		Expect(conditionStatus(task, ntv1.ConditionReady)()).To(Equal(metav1.ConditionFalse))
		f.finishUntil(task, 4, nil)
		Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		rev2 := get(task).Status.Revision

		updateSpec(task, func(t *ntv1.NodeTask) { t.Spec.RerunToken = "again" })
		Eventually(func() string { return get(task).Status.Revision }).ShouldNot(Equal(rev2))
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(5))
	})

	It("suspends and resumes where it stopped", func() {
		f := newFixture()
		f.addWindowsNodes(3)
		task := f.task("pausable", func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
		})
		create(task)
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(1))
		updateSpec(task, func(t *ntv1.NodeTask) { t.Spec.Suspend = true })
		Eventually(conditionReason(task, ntv1.ConditionReady)).Should(Equal(ntv1.ReasonSuspended))
		f.finishAll(task, succeed)
		Consistently(func() int { return len(f.pods(task)) }, "1s").Should(Equal(1))
		Eventually(conditionStatus(task, ntv1.ConditionReconciling)).Should(Equal(metav1.ConditionFalse))

		updateSpec(task, func(t *ntv1.NodeTask) { t.Spec.Suspend = false })
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(2))
	})

	DescribeTable("gives a node that joins later the task only with newNodes: Run",
		func(policy ntv1.NewNodesPolicy, want int) {
			f := newFixture()
			f.addWindowsNodes(1)
			task := f.task("joiners-"+strings.ToLower(string(policy)), func(t *ntv1.NodeTask) { t.Spec.NewNodes = policy })
			create(task)
			Eventually(func() int { return len(f.pods(task)) }).Should(Equal(1))
			f.finishAll(task, succeed)
			Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))

			f.addNode(f.nodeName(1), rollout.WindowsOS, true)
			if want == 2 {
				Eventually(func() int { return len(f.pods(task)) }).Should(Equal(2))
				Expect(conditionStatus(task, ntv1.ConditionReady)()).To(Equal(metav1.ConditionFalse))
			} else {
				Consistently(func() int { return len(f.pods(task)) }, "1s").Should(Equal(1))
				Expect(conditionStatus(task, ntv1.ConditionReady)()).To(Equal(metav1.ConditionTrue))
			}
		},
		Entry("Run", ntv1.NewNodesRun, 2),
		Entry("Ignore", ntv1.NewNodesIgnore, 1),
	)

	It("survives a manager restart mid-rollout with no duplicate pod and no lost result", func() {
		f := newFixture()
		names := f.addWindowsNodes(6)
		task := f.task("restart", func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(3))
			t.Spec.PodTTLSecondsAfterFinished = ptr.To[int32](0)
		})
		create(task)
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(3))

		stopManager()
		// While no controller runs, two pods finish and their results exist only in the pods.
		pods := unfinished(f.pods(task))
		finish(&pods[0], 0, "done while the operator was down")
		finish(&pods[1], 7, "failed while the operator was down")
		stopManager = startManager()

		Eventually(func() ntv1.NodePhase { return nodeEntry(task, pods[1].Spec.NodeName).Phase }).Should(Equal(ntv1.NodeFailed))
		Expect(nodeEntry(task, pods[0].Spec.NodeName).Output).To(Equal("done while the operator was down"))
		Expect(nodeEntry(task, pods[1].Spec.NodeName).ExitCode).To(HaveValue(BeEquivalentTo(7)))
		// maxFailures 0 is spent: nothing more starts, the recorded pods are deleted (TTL 0),
		// and there was never more than one pod per node.
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(1))
		Expect(get(task).Status.Nodes).To(HaveLen(len(names)))
		seen := map[string]bool{}
		for _, p := range f.pods(task) {
			Expect(seen[p.Spec.NodeName]).To(BeFalse())
			seen[p.Spec.NodeName] = true
		}
		// The results survive their pods.
		Expect(nodeEntry(task, pods[0].Spec.NodeName).Phase).To(Equal(ntv1.NodeSucceeded))
	})

	It("is Stalled with the label to set when Pod Security does not allow privileged pods", func() {
		f := newFixture()
		f.addWindowsNodes(2)
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns + "-baseline", Labels: map[string]string{
			"pod-security.kubernetes.io/enforce": "baseline",
		}}}
		create(ns)
		task := f.task("rejected", func(t *ntv1.NodeTask) { t.Namespace = ns.Name })
		create(task)
		Eventually(conditionStatus(task, ntv1.ConditionStalled)).Should(Equal(metav1.ConditionTrue))
		c := condition(task, ntv1.ConditionStalled)
		Expect(c.Reason).To(Equal(ntv1.ReasonPodSecurityRejected))
		Expect(c.Message).To(ContainSubstring("pod-security.kubernetes.io/enforce=privileged"))
		Expect(c.Message).To(ContainSubstring(ns.Name))
		Expect(kstatus(task)).To(Equal(status.FailedStatus))
		Expect(f.pods(task)).To(BeEmpty())

		// Following the message's advice unblocks the task at once, not at the next retry.
		Eventually(func() error {
			Expect(k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(ns), ns)).To(Succeed())
			ns.Labels["pod-security.kubernetes.io/enforce"] = "privileged"
			return k8sClient.Update(suiteCtx, ns)
		}).Should(Succeed())
		Eventually(func() int { return len(f.pods(task)) }, "10s").Should(Equal(2))
		Eventually(conditionStatus(task, ntv1.ConditionStalled)).Should(Equal(metav1.ConditionFalse))
	})

	It("is Stalled when the script's ConfigMap is missing", func() {
		f := newFixture()
		f.addWindowsNodes(1)
		task := f.task("missing-script", func(t *ntv1.NodeTask) {
			t.Spec.Script = &ntv1.ScriptSpec{ConfigMapKeyRef: &ntv1.ConfigMapKeyReference{Name: "scripts", Key: "fix.ps1"}}
		})
		create(task)
		Eventually(conditionStatus(task, ntv1.ConditionStalled)).Should(Equal(metav1.ConditionTrue))
		c := condition(task, ntv1.ConditionStalled)
		Expect(c.Reason).To(Equal(ntv1.ReasonConfigMapNotFound))
		Expect(c.Message).To(ContainSubstring(`ConfigMap "scripts"`))
		Expect(f.pods(task)).To(BeEmpty())
	})

	It("runs a script from a ConfigMap, copied once per revision", func() {
		f := newFixture()
		f.addWindowsNodes(1)
		create(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "scripts", Namespace: f.ns}, Data: map[string]string{"fix.ps1": "Write-Output fixed"}})
		task := f.task("from-configmap", func(t *ntv1.NodeTask) {
			t.Spec.Script = &ntv1.ScriptSpec{ConfigMapKeyRef: &ntv1.ConfigMapKeyReference{Name: "scripts", Key: "fix.ps1"}}
		})
		create(task)
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(1))
		var cm corev1.ConfigMap
		Expect(k8sClient.Get(suiteCtx, client.ObjectKey{Namespace: f.ns, Name: rollout.ScriptConfigMapName(get(task), 1, revisionOf(task))}, &cm)).To(Succeed())
		Expect(cm.Data["script.ps1"]).To(Equal(rollout.UTF8BOM + "Write-Output fixed"))
		Expect(cm.Immutable).To(HaveValue(BeTrue()))
	})

	It("copies spec.check beside the fix, and stalls naming spec.check when its ConfigMap is missing", func() {
		f := newFixture()
		f.addWindowsNodes(1)
		create(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "compliance", Namespace: f.ns},
			Data: map[string]string{"fix.ps1": "Set-Thing", "check.cmd": "@echo off\nexit /b 1"}})
		task := f.task("check-and-fix", func(t *ntv1.NodeTask) {
			t.Spec.Script = &ntv1.ScriptSpec{ConfigMapKeyRef: &ntv1.ConfigMapKeyReference{Name: "compliance", Key: "fix.ps1"}}
			t.Spec.Check = &ntv1.CheckSpec{ConfigMapKeyRef: &ntv1.ConfigMapKeyReference{Name: "compliance", Key: "check.cmd"},
				Interpreter: ntv1.InterpreterCmd}
		})
		create(task)
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(1))
		var cm corev1.ConfigMap
		Expect(k8sClient.Get(suiteCtx, client.ObjectKey{Namespace: f.ns, Name: rollout.ScriptConfigMapName(get(task), 1, revisionOf(task))}, &cm)).To(Succeed())
		Expect(cm.Data).To(HaveKeyWithValue("script.ps1", rollout.UTF8BOM+"Set-Thing"))
		Expect(cm.Data).To(HaveKeyWithValue("check.cmd", "@echo off\r\nexit /b 1"))

		missing := f.task("check-missing", func(t *ntv1.NodeTask) {
			t.Spec.Mode, t.Spec.Script = ntv1.ModeAudit, nil
			t.Spec.Check = &ntv1.CheckSpec{ConfigMapKeyRef: &ntv1.ConfigMapKeyReference{Name: "compliance", Key: "audit.ps1"}}
		})
		create(missing)
		Eventually(conditionStatus(missing, ntv1.ConditionStalled)).Should(Equal(metav1.ConditionTrue))
		c := condition(missing, ntv1.ConditionStalled)
		Expect(c.Reason).To(Equal(ntv1.ReasonConfigMapNotFound))
		Expect(c.Message).To(Equal(`ConfigMap "compliance" has no key "audit.ps1": add the script under that key, or fix spec.check.configMapKeyRef.key`))
		Expect(f.pods(missing)).To(BeEmpty())
		Expect(get(missing).Status.Compliance).To(Equal(&ntv1.ComplianceSummary{Unknown: 1}))
	})

	It("never writes to spec", func() {
		f := newFixture()
		f.addWindowsNodes(1)
		task := f.task("hands-off")
		create(task)
		created := get(task)
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(1))
		f.finishAll(task, succeed)
		Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		after := get(task)
		Expect(after.Generation).To(Equal(created.Generation))
		Expect(after.Spec).To(Equal(created.Spec))
		// And it could not: its role may read NodeTasks and write only their status (it creates
		// and deletes whole NodeTasks only as the runs of NodeTaskSchedules, never updates one).
		data, err := os.ReadFile(filepath.Join("..", "config", "rbac", "role.yaml"))
		Expect(err).NotTo(HaveOccurred())
		var role rbacv1.ClusterRole
		Expect(yaml.Unmarshal(data, &role)).To(Succeed())
		var checked int
		for _, rule := range role.Rules {
			for _, res := range rule.Resources {
				if res == "nodetasks" {
					checked++
					Expect(rule.Verbs).To(ConsistOf("get", "list", "watch", "create", "delete"))
				}
			}
		}
		Expect(checked).To(Equal(1))
	})
})
