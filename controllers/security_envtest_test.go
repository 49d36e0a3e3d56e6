package controllers

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

// What a NodeTask author can make the operator do, against a real API server: nothing to a
// node before the API server admits the task's pods, and no uncordon of a cordon the
// operator did not make in the same claim.

// nodeTouches watches the fixture's nodes from now on and returns a function that lists every
// change the operator could have made: a claim, a cordon, a cordoned-by mark.
func (f *fixture) nodeTouches() func() []string {
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	w, err := wc.Watch(suiteCtx, &corev1.NodeList{}, client.MatchingLabels{"test-group": f.group})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(w.Stop)
	var mu sync.Mutex
	var seen []string
	go func() {
		for ev := range w.ResultChan() {
			node, ok := ev.Object.(*corev1.Node)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			var touched []string
			if v, ok := node.Annotations[rollout.AnnotationClaim]; ok {
				touched = append(touched, "claim "+v)
			}
			if v, ok := node.Annotations[rollout.AnnotationCordonedBy]; ok {
				touched = append(touched, "cordoned-by "+v)
			}
			if node.Spec.Unschedulable {
				touched = append(touched, "unschedulable")
			}
			mu.Lock()
			for _, t := range touched {
				seen = append(seen, node.Name+": "+t)
			}
			mu.Unlock()
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

func deletionOf(pod *corev1.Pod) func() *metav1.Time {
	return func() *metav1.Time {
		p := &corev1.Pod{}
		Expect(k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(pod), p)).To(Succeed())
		return p.DeletionTimestamp
	}
}

// cordonAsAdmin sets the node's schedulability as a person with kubectl would.
func cordonAsAdmin(name string, unschedulable bool) {
	Eventually(func() error {
		node := nodeNamed(name)
		node.Spec.Unschedulable = unschedulable
		return k8sClient.Update(suiteCtx, node, client.FieldOwner("kubectl-cordon"))
	}).Should(Succeed())
}

var _ = Describe("What a NodeTask's author can do through the operator", func() {
	It("claims, cordons, drains and restarts nothing for a task whose pods Pod Security refuses", func() {
		f := newFixture()
		names := f.addWindowsNodes(2)
		touches := f.nodeTouches()
		baseline := f.ns + "-baseline"
		create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: baseline, Labels: map[string]string{
			"pod-security.kubernetes.io/enforce": "baseline",
		}}})
		other := f.ns + "-apps"
		create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}})
		victims := []*corev1.Pod{
			podOn("kube-system", f.group+"-dns", names[0], map[string]string{"victim": f.group}),
			podOn(other, "web", names[1], map[string]string{"victim": f.group}),
		}
		DeferCleanup(func() { _ = k8sClient.Delete(suiteCtx, victims[0], client.GracePeriodSeconds(0)) })
		attack := f.task("attack", func(t *ntv1.NodeTask) {
			t.Namespace = baseline
			t.Spec.Cordon = true
			t.Spec.Reboot = ntv1.RebootAlways
			t.Spec.Drain = &ntv1.DrainSpec{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"victim": f.group}}}
		})
		create(attack)

		Eventually(conditionReason(attack, ntv1.ConditionStalled)).Should(Equal(ntv1.ReasonPodSecurityRejected))
		Expect(condition(attack, ntv1.ConditionStalled).Message).To(ContainSubstring("pod-security.kubernetes.io/enforce=privileged"))
		Consistently(func() []corev1.Pod { return ownPods(attack) }, "2s").Should(BeEmpty(), "no pod, no restart pod")
		Expect(touches()).To(BeEmpty(), "no node claimed, cordoned or marked")
		for _, v := range victims {
			Expect(deletionOf(v)()).To(BeNil(), "pod %s/%s evicted", v.Namespace, v.Name)
		}
		Expect(get(attack).Status.Nodes).To(BeEmpty(), "no entries for nodes the task never started")
		Expect(get(attack).Status.Targets).To(Equal(int32(2)))
		Expect(get(attack).Status.Pending).To(Equal(int32(2)))

		By("an administrator's maintenance task on the same nodes goes through")
		admin := f.task("admin-patch", func(t *ntv1.NodeTask) { t.Spec.Cordon = true })
		create(admin)
		f.finishUntil(admin, 2, nil)
		Eventually(conditionStatus(admin, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		for _, n := range names {
			Eventually(func() bool { return nodeNamed(n).Spec.Unschedulable }).Should(BeFalse())
		}
		Expect(conditionReason(attack, ntv1.ConditionStalled)()).To(Equal(ntv1.ReasonPodSecurityRejected))
	})

	It("does not amplify: five refused tasks ask the API server a few times, with a growing backoff", func() {
		f := newFixture()
		f.addWindowsNodes(4)
		baseline := f.ns + "-baseline"
		create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: baseline, Labels: map[string]string{
			"pod-security.kubernetes.io/enforce": "baseline",
		}}})
		before := refusedPosts()
		var tasks []*ntv1.NodeTask
		for i := range 5 {
			task := f.task(fmt.Sprintf("refused-%d", i), func(t *ntv1.NodeTask) { t.Namespace = baseline })
			create(task)
			tasks = append(tasks, task)
		}
		for _, task := range tasks {
			Eventually(conditionReason(task, ntv1.ConditionStalled)).Should(Equal(ntv1.ReasonPodSecurityRejected))
		}
		// The first refusal, then one more after admissionRecheckBase (30 s): in 35 s, two per
		// task. Before the gate, every reconcile tried to create the pods again.
		time.Sleep(admissionRecheckBase + 5*time.Second)
		refused := refusedPosts() - before
		GinkgoWriter.Printf("refused requests from 5 tasks in %s: %d\n", admissionRecheckBase+5*time.Second, refused)
		Expect(refused).To(BeNumerically("<=", 2*len(tasks)+4), "a little slack for other specs' rechecks")
		Expect(refused).To(BeNumerically(">=", len(tasks)), "each task was refused at least once")
		for _, task := range tasks {
			Expect(get(task).Status.Nodes).To(BeEmpty())
			Expect(ownPods(task)).To(BeEmpty())
		}
	})

	It("leaves a node cordoned that was cordoned again after an earlier failed run's cordon", func() {
		f := newFixture()
		names := f.addWindowsNodes(1)
		task := f.task("cordoning", func(t *ntv1.NodeTask) { t.Spec.Cordon = true })
		create(task)
		Eventually(func() int { return len(unfinished(ownPods(task))) }).Should(Equal(1))
		pods := unfinished(ownPods(task))
		finish(&pods[0], 1, "failed")
		Eventually(func() ntv1.NodePhase { return nodeEntry(task, names[0]).Phase }).Should(Equal(ntv1.NodeFailed))
		Eventually(func() map[string]string { return nodeNamed(names[0]).Annotations }).ShouldNot(HaveKey(rollout.AnnotationClaim))
		Expect(nodeNamed(names[0]).Spec.Unschedulable).To(BeTrue(), "a failed node stays cordoned for a person to look at")

		By("a person uncordons the node, later cordons it for reasons of their own, and the task runs again")
		cordonAsAdmin(names[0], false)
		cordonAsAdmin(names[0], true)
		updateSpec(task, func(t *ntv1.NodeTask) { t.Spec.RerunToken = "2" })
		Eventually(func() int { return len(unfinished(ownPods(task))) }).Should(Equal(1))
		pods = unfinished(ownPods(task))
		finish(&pods[0], 0, "ok")
		Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		Eventually(func() map[string]string { return nodeNamed(names[0]).Annotations }).ShouldNot(HaveKey(rollout.AnnotationClaim))
		Consistently(func() bool { return nodeNamed(names[0]).Spec.Unschedulable }, "1s").Should(BeTrue(),
			"the person's cordon stays")
	})

	It("never uncordons a person's cordon for a forged claim", func() {
		f := newFixture()
		names := f.addWindowsNodes(1)
		cordonAsAdmin(names[0], true)
		forged, err := json.Marshal(map[string]any{"task": f.ns + "/ghost", "uid": "forged-uid", "since": metav1.Now(), "cordoned": true})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() error {
			node := nodeNamed(names[0])
			node.Annotations = map[string]string{rollout.AnnotationClaim: string(forged), rollout.AnnotationCordonedBy: "forged-uid"}
			return k8sClient.Update(suiteCtx, node)
		}).Should(Succeed())
		Eventually(func() map[string]string { return nodeNamed(names[0]).Annotations }).ShouldNot(HaveKey(rollout.AnnotationClaim),
			"the claim of a task that does not exist is removed")
		Consistently(func() bool { return nodeNamed(names[0]).Spec.Unschedulable }, "1s").Should(BeTrue())
	})

	It("names no key of a ConfigMap in its messages", func() {
		f := newFixture()
		f.addWindowsNodes(1)
		create(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "secrets"},
			Data: map[string]string{"db-password-prod": "x", "api-token-ci": "y"}})
		task := f.task("wrong-key", func(t *ntv1.NodeTask) {
			t.Spec.Script = &ntv1.ScriptSpec{ConfigMapKeyRef: &ntv1.ConfigMapKeyReference{Name: "secrets", Key: "fix.ps1"}}
		})
		create(task)
		Eventually(conditionReason(task, ntv1.ConditionStalled)).Should(Equal(ntv1.ReasonConfigMapNotFound))
		msg := condition(task, ntv1.ConditionStalled).Message
		Expect(msg).To(ContainSubstring(`"fix.ps1"`))
		Expect(msg).NotTo(Or(ContainSubstring("db-password-prod"), ContainSubstring("api-token-ci")))
		Eventually(func() string { return eventMessages(task) }).Should(ContainSubstring("fix.ps1"))
		Expect(eventMessages(task)).NotTo(ContainSubstring("db-password-prod"))
	})

	It("drains a pod that merely carries the operator's task label", func() {
		f := newFixture()
		names := f.addWindowsNodes(1)
		other := f.ns + "-apps"
		create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}})
		disguised := podOn(other, "disguised", names[0], map[string]string{ntv1.LabelTask: "anything"})
		task := f.task("drainer", func(t *ntv1.NodeTask) {
			t.Spec.Drain = &ntv1.DrainSpec{}
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
		})
		create(task)
		Eventually(deletionOf(disguised)).ShouldNot(BeNil(), "evicted like any other pod")
	})
})

// eventMessages lists the reasons and messages of the task's events.
func eventMessages(task *ntv1.NodeTask) string {
	var list corev1.EventList
	Expect(k8sClient.List(suiteCtx, &list, client.InNamespace(task.Namespace))).To(Succeed())
	var out string
	for _, e := range list.Items {
		if e.InvolvedObject.UID == task.UID || (task.UID == "" && e.InvolvedObject.Name == task.Name) {
			out += fmt.Sprintf("%s: %s\n", e.Reason, e.Message)
		}
	}
	return out
}

// refusedPosts counts the manager's POST requests the API server answered 403 (refused pod
// creations and dry runs), from client-go's request metrics as controller-runtime exports them.
func refusedPosts() int {
	families, err := ctrlmetrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	n := 0
	for _, mf := range families {
		if mf.GetName() != "rest_client_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["method"] == "POST" && labels["code"] == "403" {
				n += int(m.GetCounter().GetValue())
			}
		}
	}
	return n
}
