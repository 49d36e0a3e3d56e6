package controllers

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

// Maintenance against a real API server: node patches with optimistic locking, the Eviction
// API with a PodDisruptionBudget, restart pods. envtest runs no kubelet and no disruption
// controller: the test plays the kubelet (finishing pods, confirming deletions, the boot ID),
// and a budget whose status nobody computes refuses every eviction, as the API server does.

func nodeNamed(name string) *corev1.Node {
	node := &corev1.Node{}
	Expect(k8sClient.Get(suiteCtx, client.ObjectKey{Name: name}, node)).To(Succeed())
	return node
}

// setBootID plays a kubelet that reports this boot ID.
func setBootID(name, boot string) {
	Eventually(func() error {
		node := nodeNamed(name)
		node.Status.NodeInfo.BootID = boot
		return k8sClient.Status().Update(suiteCtx, node)
	}).Should(Succeed())
}

// confirmDeletions plays the kubelet confirming the deletion of the pods being deleted.
func confirmDeletions(ns string) int {
	var list corev1.PodList
	Expect(k8sClient.List(suiteCtx, &list, client.InNamespace(ns))).To(Succeed())
	n := 0
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp != nil {
			Expect(client.IgnoreNotFound(k8sClient.Delete(suiteCtx, &list.Items[i], client.GracePeriodSeconds(0)))).To(Succeed())
			n++
		}
	}
	return n
}

func podOn(ns, name, node string, labels map[string]string) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "example.com/web:1"}}},
	}
	create(pod)
	return pod
}

func restartPodOf(task *ntv1.NodeTask, node string) *corev1.Pod {
	for _, p := range ownPods(task) {
		if ntv1.IsRebootPod(&p) && p.Spec.NodeName == node {
			return &p
		}
	}
	return nil
}

var _ = Describe("NodeTask maintenance", func() {
	It("cordons, drains through the Eviction API, restarts and uncordons one node at a time", func() {
		f := newFixture()
		names := f.addWindowsNodes(2)
		for _, n := range names {
			setBootID(n, "5")
		}
		apps := f.ns + "-apps"
		create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: apps}})
		web := podOn(apps, "web", names[0], map[string]string{"app": "web"})
		db := podOn(apps, "db", names[1], map[string]string{"app": "db"})
		// Running and Ready: the Eviction API lets pending pods go whatever their budget says.
		db.Status.Phase = corev1.PodRunning
		db.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		Expect(k8sClient.Status().Update(suiteCtx, db)).To(Succeed())
		pdb := &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Namespace: apps, Name: "db"},
			Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}},
		}
		create(pdb)
		// Play the disruption controller: one healthy pod, none may go.
		pdb.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: pdb.Generation, CurrentHealthy: 1,
			DesiredHealthy: 1, ExpectedPods: 1, DisruptionsAllowed: 0}
		Expect(k8sClient.Status().Update(suiteCtx, pdb)).To(Succeed())
		task := f.task("patch", func(t *ntv1.NodeTask) {
			t.Spec.Reboot = ntv1.RebootIfRequired
			t.Spec.Drain = &ntv1.DrainSpec{}
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
		})
		create(task)

		By("the first node is claimed, cordoned and drained; the second waits for a slot")
		Eventually(func() bool { return nodeNamed(names[0]).Spec.Unschedulable }).Should(BeTrue())
		claim := rollout.ReadClaim(nodeNamed(names[0]))
		Expect(claim).NotTo(BeNil())
		Expect(claim.Task).To(Equal(f.ns + "/patch"))
		Expect(nodeNamed(names[1]).Spec.Unschedulable).To(BeFalse())
		Eventually(func() *metav1.Time {
			Expect(k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(web), web)).To(Succeed())
			return web.DeletionTimestamp
		}).ShouldNot(BeNil(), "evicted")
		Eventually(func() string { return nodeEntry(task, names[0]).Reason }).Should(Equal(ntv1.NodeReasonDraining))
		Expect(ownPods(task)).To(BeEmpty(), "nothing runs before the drain ends")
		Expect(confirmDeletions(apps)).To(Equal(1))

		By("the run exits 3010: the node restarts, and is Succeeded once it is back with a new boot ID")
		Eventually(func() int { return len(unfinished(ownPods(task))) }).Should(Equal(1))
		pod := unfinished(ownPods(task))[0]
		finish(&pod, 3010, "a restart is required")
		var restart *corev1.Pod
		Eventually(func() *corev1.Pod { restart = restartPodOf(task, names[0]); return restart }).ShouldNot(BeNil())
		Expect(restart.Annotations).To(HaveKeyWithValue(ntv1.AnnotationBootID, "5"))
		Expect(restart.Spec.Containers[0].Command[:2]).To(Equal([]string{"shutdown.exe", "/r"}))
		Eventually(func() ntv1.NodePhase { return nodeEntry(task, names[0]).Phase }).Should(Equal(ntv1.NodeRebooting))
		finish(restart, 0, "")
		Consistently(func() ntv1.NodePhase { return nodeEntry(task, names[0]).Phase }, "1s").Should(Equal(ntv1.NodeRebooting))
		setBootID(names[0], "6")
		Eventually(func() string { return nodeEntry(task, names[0]).Reason }).Should(Equal(ntv1.NodeReasonRebooted))
		e := nodeEntry(task, names[0])
		Expect(e.BootIDBefore).To(Equal("5"))
		Expect(e.BootIDAfter).To(Equal("6"))
		Eventually(func() bool { return nodeNamed(names[0]).Spec.Unschedulable }).Should(BeFalse(), "uncordoned")
		Expect(nodeNamed(names[0]).Annotations).NotTo(HaveKey(rollout.AnnotationClaim))

		By("the second node's drain is blocked by the PodDisruptionBudget, then goes on once the budget is gone")
		Eventually(func() string { return nodeEntry(task, names[1]).Reason }).Should(Equal(ntv1.NodeReasonDrainBlocked))
		Expect(nodeEntry(task, names[1]).Output).To(ContainSubstring(`disruption budget db`))
		Expect(k8sClient.Delete(suiteCtx, pdb)).To(Succeed())
		Eventually(func() *metav1.Time {
			Expect(k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(db), db)).To(Succeed())
			return db.DeletionTimestamp
		}).ShouldNot(BeNil(), "evicted once the budget allows")
		confirmDeletions(apps)
		Eventually(func() int { return len(unfinished(ownPods(task))) }).Should(Equal(1))
		pod = unfinished(ownPods(task))[0]
		finish(&pod, 0, "no restart needed")
		Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		Expect(restartPodOf(task, names[1])).To(BeNil(), "exit 0 with reboot: IfRequired restarts nothing")
		Expect(nodeNamed(names[1]).Spec.Unschedulable).To(BeFalse())
	})

	It("lets go of the nodes of a task deleted in the middle of their maintenance", func() {
		f := newFixture()
		names := f.addWindowsNodes(2)
		admin := nodeNamed(names[1])
		admin.Spec.Unschedulable = true // an administrator's cordon, which stays
		Expect(k8sClient.Update(suiteCtx, admin)).To(Succeed())
		task := f.task("abandoned", func(t *ntv1.NodeTask) {
			t.Spec.Reboot = ntv1.RebootAlways
			t.Spec.Cordon = true
		})
		create(task)
		Eventually(func() int {
			n := 0
			for _, name := range names {
				if rollout.ReadClaim(nodeNamed(name)) != nil {
					n++
				}
			}
			return n
		}).Should(Equal(2))
		Expect(nodeNamed(names[0]).Spec.Unschedulable).To(BeTrue())
		Expect(k8sClient.Delete(suiteCtx, task)).To(Succeed())
		for _, name := range names {
			Eventually(func() map[string]string { return nodeNamed(name).Annotations }).ShouldNot(HaveKey(rollout.AnnotationClaim))
		}
		Expect(nodeNamed(names[0]).Spec.Unschedulable).To(BeFalse(), "the task's own cordon goes with it")
		Expect(nodeNamed(names[1]).Spec.Unschedulable).To(BeTrue(), "the administrator's stays")
	})
})
