package controllers

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

// The "exactly once per node" promise at the edges, against a real API server (issue 7).
// envtest runs no garbage collector: the pods of a deleted task stay, as they do in a real
// cluster for the moments before the garbage collector removes them.

// ownPods lists the pods this very task (by UID) controls.
func ownPods(task *ntv1.NodeTask) []corev1.Pod {
	current := get(task)
	var list corev1.PodList
	Expect(k8sClient.List(suiteCtx, &list, client.InNamespace(task.Namespace))).To(Succeed())
	var out []corev1.Pod
	for _, p := range list.Items {
		if metav1.IsControlledBy(&p, current) {
			out = append(out, p)
		}
	}
	return out
}

// finishOwn finishes every unfinished pod of this task with exit code 0 and a message that
// names the task, the node and the pod.
func finishOwn(task *ntv1.NodeTask) int {
	pods := unfinished(ownPods(task))
	for i := range pods {
		finish(&pods[i], 0, ranOn(task, pods[i].Spec.NodeName))
	}
	return len(pods)
}

func ranOn(task *ntv1.NodeTask, node string) string {
	return fmt.Sprintf("%s ran on %s", task.Name, node)
}

func scriptConfigMaps(ns string) []corev1.ConfigMap {
	var list corev1.ConfigMapList
	Expect(k8sClient.List(suiteCtx, &list, client.InNamespace(ns), client.HasLabels{ntv1.LabelRun})).To(Succeed())
	return list.Items
}

var _ = Describe("NodeTask controller at the edges", func() {
	It("gives two tasks whose names share 40 characters each their own pod on every node", func() {
		f := newFixture()
		names := f.addWindowsNodes(3)
		ring0 := f.task("windows-security-baseline-rollout-canary-ring0")
		ring1 := f.task("windows-security-baseline-rollout-canary-ring1-all")
		create(ring0)
		create(ring1)

		Eventually(func() int { return len(ownPods(ring0)) + len(ownPods(ring1)) }).Should(Equal(6))
		for _, task := range []*ntv1.NodeTask{ring0, ring1} {
			Expect(ownPods(task)).To(HaveLen(3))
			finishOwn(task)
		}
		for _, task := range []*ntv1.NodeTask{ring0, ring1} {
			Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
			for _, n := range names {
				Expect(nodeEntry(task, n).Output).To(Equal(ranOn(task, n)), "each task records its own pod's result")
			}
		}
	})

	It("never adopts the pods or the script of a deleted task of the same name", func() {
		f := newFixture()
		names := f.addWindowsNodes(2)
		first := f.task("reborn")
		create(first)
		Eventually(func() int { return len(ownPods(first)) }).Should(Equal(2))
		oldUID := get(first).UID
		Expect(k8sClient.Delete(suiteCtx, get(first))).To(Succeed())
		Eventually(func() error { return k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(first), &ntv1.NodeTask{}) }).ShouldNot(Succeed())

		// The old pods (still Pending) and the old script ConfigMap are still there: no
		// garbage collector has removed them yet.
		second := f.task("reborn")
		create(second)
		Expect(second.UID).NotTo(Equal(oldUID))
		Eventually(func() int { return len(ownPods(second)) }).Should(Equal(2), "the new task starts its own pods")
		Expect(f.pods(second)).To(HaveLen(4), "and the old task's pods are not taken for its own")
		Eventually(func() ntv1.NodePhase { return nodeEntry(second, names[0]).Phase }).Should(Equal(ntv1.NodeRunning))
		Consistently(func() ntv1.NodePhase { return nodeEntry(second, names[0]).Phase }, "500ms").Should(Equal(ntv1.NodeRunning))
		finishOwn(second)
		Eventually(conditionStatus(second, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		for _, n := range names {
			Expect(nodeEntry(second, n).Output).To(Equal(ranOn(second, n)))
		}
		Expect(scriptConfigMaps(f.ns)).To(HaveLen(2), "each incarnation has its own script ConfigMap")
	})

	It("waits, rather than stalls, while a ResourceQuota is full", func() {
		f := newFixture()
		f.addWindowsNodes(4)
		quota := &corev1.ResourceQuota{
			ObjectMeta: metav1.ObjectMeta{Name: "pods", Namespace: f.ns},
			Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("2")}},
		}
		create(quota)
		// No quota controller runs in envtest: play it, counting the pods that are not finished.
		syncQuota := func() {
			Eventually(func() error {
				var pods corev1.PodList
				if err := k8sClient.List(suiteCtx, &pods, client.InNamespace(f.ns)); err != nil {
					return err
				}
				used := len(unfinished(pods.Items))
				Expect(k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(quota), quota)).To(Succeed())
				quota.Status = corev1.ResourceQuotaStatus{Hard: quota.Spec.Hard,
					Used: corev1.ResourceList{corev1.ResourcePods: *resource.NewQuantity(int64(used), resource.DecimalSI)}}
				return k8sClient.Status().Update(suiteCtx, quota)
			}).Should(Succeed())
		}
		syncQuota()
		task := f.task("quota", func(t *ntv1.NodeTask) { t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(4)) })
		create(task)

		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(2))
		Eventually(conditionReason(task, ntv1.ConditionReconciling)).Should(Equal(ntv1.ReasonQuotaExceeded))
		Expect(condition(task, ntv1.ConditionReconciling).Message).To(ContainSubstring("ResourceQuota"))
		Consistently(conditionStatus(task, ntv1.ConditionStalled), "1s").Should(Equal(metav1.ConditionFalse))

		f.finishUntil(task, 4, syncQuota)
		Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		Expect(get(task).Status.Succeeded).To(BeEquivalentTo(4))
	})

	It("records a pod refused for one node as that node's failure, not the task's stall", func() {
		f := newFixture()
		names := f.addWindowsNodes(3)
		frozen := names[1]
		// A ValidatingAdmissionPolicy that refuses pods on one node, as a site's own
		// admission rules might (a frozen node, a change window).
		policy := &admissionv1.ValidatingAdmissionPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "freeze-" + f.group},
			Spec: admissionv1.ValidatingAdmissionPolicySpec{
				MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionv1.RuleWithOperations{
						Operations: []admissionv1.OperationType{admissionv1.Create},
						Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
					},
				}}},
				Validations: []admissionv1.Validation{{
					Expression: fmt.Sprintf("object.spec.nodeName != '%s'", frozen),
					Message:    "node " + frozen + " is frozen for a change window",
				}},
			},
		}
		binding := &admissionv1.ValidatingAdmissionPolicyBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "freeze-" + f.group},
			Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
				PolicyName:        policy.Name,
				ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
				MatchResources: &admissionv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
					MatchLabels: map[string]string{"kubernetes.io/metadata.name": f.ns}}},
			},
		}
		create(policy)
		create(binding)
		DeferCleanup(func() {
			_ = k8sClient.Delete(suiteCtx, binding)
			_ = k8sClient.Delete(suiteCtx, policy)
		})
		// The policy takes effect once the API server has compiled it.
		Eventually(func() error {
			probe := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-", Namespace: f.ns},
				Spec:       corev1.PodSpec{NodeName: frozen, Containers: []corev1.Container{{Name: "c", Image: "x"}}},
			}
			return k8sClient.Create(suiteCtx, probe, client.DryRunAll)
		}).Should(MatchError(ContainSubstring("is frozen")))

		task := f.task("frozen", func(t *ntv1.NodeTask) { t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromInt32(1)) })
		create(task)
		Eventually(func() string { return nodeEntry(task, frozen).Reason }).Should(Equal(ntv1.NodeReasonPodRejected))
		e := nodeEntry(task, frozen)
		Expect(e.Phase).To(Equal(ntv1.NodeFailed))
		Expect(e.Output).To(ContainSubstring("is frozen for a change window"))
		Consistently(conditionStatus(task, ntv1.ConditionStalled), "1s").Should(Equal(metav1.ConditionFalse))
		f.finishAll(task, succeed)
		Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		Expect(get(task).Status.Failed).To(BeEquivalentTo(1))
		Expect(get(task).Status.Succeeded).To(BeEquivalentTo(2))
	})

	It("makes the script ConfigMap again when someone deletes it, and deletes those of old runs", func() {
		f := newFixture()
		f.addWindowsNodes(2)
		task := f.task("scripted", func(t *ntv1.NodeTask) { t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1)) })
		create(task)
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(1))
		cms := scriptConfigMaps(f.ns)
		Expect(cms).To(HaveLen(1))
		Expect(k8sClient.Delete(suiteCtx, &cms[0])).To(Succeed())

		// The next node starts once the first finishes: its pod must find its script.
		f.finishAll(task, succeed)
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(2))
		Eventually(func() []corev1.ConfigMap { return scriptConfigMaps(f.ns) }).Should(HaveLen(1), "made again from the spec")
		f.finishAll(task, succeed)
		Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))

		for i, script := range []string{"Write-Output v2", "Write-Output v3"} {
			updateSpec(task, func(t *ntv1.NodeTask) { t.Spec.Script.Inline = ptr.To(script) })
			Eventually(func() int64 { return get(task).Status.Run }).Should(BeEquivalentTo(i + 2))
			f.finishUntil(task, 2*(i+2), nil)
			Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		}
		Eventually(func() []string {
			var runs []string
			for _, cm := range scriptConfigMaps(f.ns) {
				runs = append(runs, cm.Labels[ntv1.LabelRun])
			}
			return runs
		}).Should(ConsistOf("3"), "only the current run's script is kept")
	})

	It("reports a ConfigMap it does not own under its script's name as a conflict, and goes on once it is gone", func() {
		f := newFixture()
		f.addWindowsNodes(1)
		task := f.task("squatted", func(t *ntv1.NodeTask) { t.Spec.Suspend = true })
		create(task)
		squatter := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Name: rollout.ScriptConfigMapName(get(task), 1, rollout.Revision(&task.Spec)), Namespace: f.ns}}
		create(squatter)
		updateSpec(task, func(t *ntv1.NodeTask) { t.Spec.Suspend = false })
		Eventually(conditionReason(task, ntv1.ConditionStalled)).Should(Equal(ntv1.ReasonScriptConfigMapConflict))
		Expect(condition(task, ntv1.ConditionStalled).Message).To(ContainSubstring(squatter.Name))
		Expect(f.pods(task)).To(BeEmpty())

		Expect(k8sClient.Delete(suiteCtx, squatter)).To(Succeed())
		// A stalled task retries within a minute; any change of the task retries at once.
		updateSpec(task, func(t *ntv1.NodeTask) { t.Annotations = map[string]string{"example.com/poke": "1"} })
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(1))
		Eventually(conditionStatus(task, ntv1.ConditionStalled)).Should(Equal(metav1.ConditionFalse))
	})

	It("runs a GitOps revert (A, B, A) again on every node", func() {
		f := newFixture()
		f.addWindowsNodes(2)
		task := f.task("reverted")
		create(task)
		a := *task.Spec.Script.Inline
		for i, script := range []string{a, "Write-Output B", a} {
			if i > 0 {
				updateSpec(task, func(t *ntv1.NodeTask) { t.Spec.Script.Inline = ptr.To(script) })
			}
			Eventually(func() int64 { return get(task).Status.Run }).Should(BeEquivalentTo(i + 1))
			Eventually(func() int { return len(f.pods(task)) }).Should(Equal(2*(i+1)), "step %d runs on every node", i+1)
			Expect(conditionStatus(task, ntv1.ConditionReady)()).NotTo(Equal(metav1.ConditionTrue))
			f.finishAll(task, succeed)
			Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		}
	})

	It("coalesces status writes while pods finish one after another", func() {
		f := newFixture()
		f.addWindowsNodes(20)
		task := f.task("coalesced")
		create(task)
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(20))
		Eventually(func() int32 { return get(task).Status.Running }).Should(BeEquivalentTo(20))

		wc, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		w, err := wc.Watch(suiteCtx, &ntv1.NodeTaskList{}, client.InNamespace(f.ns))
		Expect(err).NotTo(HaveOccurred())
		defer w.Stop()
		writes := 0
		go func() {
			defer GinkgoRecover()
			for ev := range w.ResultChan() {
				if ev.Type == watch.Modified {
					writes++
				}
			}
		}()
		start := time.Now()
		f.finishAll(task, succeed)
		elapsed := time.Since(start)
		Eventually(conditionStatus(task, ntv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		time.Sleep(200 * time.Millisecond)
		w.Stop()
		// At most one write per second of finishing, plus the write that says Ready and
		// one that may straddle the start.
		limit := int(elapsed/time.Second) + 3 // rollout.ProgressInterval is at least a second
		AddReportEntry("status writes while 20 pods finished", fmt.Sprintf("%d writes in %s (limit %d)", writes, elapsed.Round(time.Millisecond), limit))
		Expect(writes).To(BeNumerically("<=", limit))
		Expect(get(task).Status.Succeeded).To(BeEquivalentTo(20))
	})

	It("grants leader election the core events it records", func() {
		role := readYAML[struct {
			Rules []struct {
				APIGroups []string `json:"apiGroups"`
				Resources []string `json:"resources"`
				Verbs     []string `json:"verbs"`
			} `json:"rules"`
		}]("config/rbac/leader_election_role.yaml")
		found := false
		for _, r := range role.Rules {
			if len(r.APIGroups) == 1 && r.APIGroups[0] == "" && strings.Join(r.Resources, ",") == "events" {
				Expect(r.Verbs).To(ContainElements("create", "patch"))
				found = true
			}
		}
		Expect(found).To(BeTrue(), "controller-runtime's leader election records core/v1 events")
	})

	It("gives the manager more time to stop than its graceful shutdown takes", func() {
		docs := strings.Split(string(must(os.ReadFile(filepath.Join("..", "config", "manager", "manager.yaml")))), "\n---")
		var deployment appsv1.Deployment
		for _, doc := range docs {
			if strings.Contains(doc, "kind: Deployment") {
				Expect(yaml.Unmarshal([]byte(doc), &deployment)).To(Succeed())
			}
		}
		grace := deployment.Spec.Template.Spec.TerminationGracePeriodSeconds
		Expect(grace).NotTo(BeNil())
		Expect(time.Duration(*grace) * time.Second).To(BeNumerically(">", GracefulShutdownTimeout))
	})
})

func must[T any](v T, err error) T {
	Expect(err).NotTo(HaveOccurred())
	return v
}
