package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// Rollout gates (issue 24): a first batch, a pause for approval after it, and
// rollout.minReadySeconds holding a node's slot.

// podNodes returns the nodes the namespace's pods run on, sorted, a node once per pod.
func podNodes(ns string) []string {
	var out []string
	for _, p := range pods(ns) {
		out = append(out, p.Spec.NodeName)
	}
	slices.Sort(out)
	return out
}

// reconciling returns the task's Reconciling condition, an empty one if it has none.
func reconciling(t *ntv1.NodeTask) func() string {
	return func() string {
		if c := meta.FindStatusCondition(get(t).Status.Conditions, ntv1.ConditionReconciling); c != nil && c.Status == metav1.ConditionTrue {
			return c.Reason
		}
		return ""
	}
}

// podOn returns the namespace's pod on the node.
func podOn(ns, node string) corev1.Pod {
	GinkgoHelper()
	ps := pods(ns)
	i := slices.IndexFunc(ps, func(p corev1.Pod) bool { return p.Spec.NodeName == node })
	Expect(i).NotTo(BeNumerically("<", 0), "no pod on %s", node)
	return ps[i]
}

var _ = Describe("Rollout gates", func() {
	It("runs a first batch of 2 of 10 nodes, pauses for approval, and goes on once kubectl nodetask approve approved the run", func() {
		const pool = "gates"
		nodes := addPool(pool, 10)
		ns := namespace(true)
		task := newTask(ns, "first-batch", pool, func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("100%"))
			t.Spec.Rollout.FirstBatch = ptr.To(intstr.FromInt32(2))
			t.Spec.Rollout.PauseAfterFirstBatch = true
		})

		By("the first batch: the first 2 nodes by name run, and the run waits for approval")
		Eventually(reconciling(task), 2*time.Minute).Should(Equal(ntv1.ReasonAwaitingApproval))
		Expect(podNodes(ns)).To(Equal(nodes[:2]))
		Consistently(func() []string { return podNodes(ns) }, "3s").Should(Equal(nodes[:2]), "no other node starts before the approval")
		st := get(task).Status
		Expect(st.Run).To(BeEquivalentTo(1))
		Expect(st.Succeeded).To(BeEquivalentTo(2))
		Expect(st.Pending).To(BeEquivalentTo(8))
		Expect(st.Rollout).To(Equal(&ntv1.RolloutStatus{FirstBatch: nodes[:2], Batch: ntv1.BatchFirst}))
		Expect(meta.FindStatusCondition(st.Conditions, ntv1.ConditionReconciling).Message).To(ContainSubstring(
			"the run waits for approval: run `kubectl nodetask approve first-batch -n " + ns + "`, or set spec.rollout.approvedRun to 1"))
		Expect(meta.IsStatusConditionTrue(st.Conditions, ntv1.ConditionStalled)).To(BeFalse())

		By("status shows the batch; wait goes on waiting, and its timeout says the run waits for approval")
		run := plugin("", "status", task.Name, "-n", ns)
		Expect(run.code).To(BeZero(), run.stderr)
		Expect(run.stdout).To(ContainSubstring("Batch:       first batch gates-0000, gates-0001 (First, awaiting approval)"))
		run = plugin("", "wait", task.Name, "-n", ns, "--timeout", "2s")
		Expect(run.code).To(Equal(2))
		Expect(run.stdout).To(ContainSubstring("AwaitingApproval: 2 of 10 nodes succeeded"))
		Expect(run.stderr).To(ContainSubstring("the run waits for approval after its first batch (kubectl nodetask approve first-batch -n " + ns + ")"))

		By("kubectl nodetask approve --yes: the other 8 nodes start, and the task is Ready")
		run = plugin("", "approve", task.Name, "-n", ns, "--yes")
		Expect(run.code).To(BeZero(), run.stderr)
		Expect(run.stderr).To(BeEmpty(), "no warning for a run that waits for approval")
		Expect(run.stdout).To(ContainSubstring("spec.rollout.approvedRun set to 1: the other 8 nodes start"))
		Expect(get(task).Spec.Rollout.ApprovedRun).To(BeEquivalentTo(1))
		run = plugin("", "wait", task.Name, "-n", ns, "--timeout", "2m")
		Expect(run.code).To(BeZero(), run.stderr)
		st = get(task).Status
		Expect(st.Succeeded).To(BeEquivalentTo(10))
		Expect(st.Rollout).To(Equal(&ntv1.RolloutStatus{FirstBatch: nodes[:2], Batch: ntv1.BatchRest, Approved: true}))
		Expect(podNodes(ns)).To(Equal(nodes), "one pod per node")
		run = plugin("", "status", task.Name, "-n", ns)
		Expect(run.stdout).To(ContainSubstring("Batch:       first batch gates-0000, gates-0001 (Rest, approved)"))

		By("approve again: already approved, nothing changed, exit 0")
		rv := get(task).ResourceVersion
		run = plugin("", "approve", task.Name, "-n", ns, "--yes")
		Expect(run.code).To(BeZero(), run.stderr)
		Expect(run.stdout).To(ContainSubstring("run 1 is already approved"))
		Expect(get(task).ResourceVersion).To(Equal(rv))
	})

	It("holds a node's slot for rollout.minReadySeconds after it succeeded", func() {
		const pool = "minready"
		nodes := addPool(pool, 2)
		ns := namespace(true)
		task := newTask(ns, "min-ready", pool, func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
			t.Spec.Rollout.MinReadySeconds = 10
		})
		Eventually(func() ntv1.NodePhase { return entry(task, nodes[0]).Phase }).Should(Equal(ntv1.NodeSucceeded))
		first := entry(task, nodes[0]).FinishTime
		Expect(first).NotTo(BeNil())
		Eventually(func() []string { return podNodes(ns) }, time.Minute).Should(Equal(nodes))
		// Timestamps are whole seconds: allow the rounding.
		created := podOn(ns, nodes[1]).CreationTimestamp
		GinkgoWriter.Printf("%s finished at %s; the pod on %s was created at %s\n", nodes[0], first.UTC(), nodes[1], created.UTC())
		Expect(created.Time).To(BeTemporally(">=", first.Add(10*time.Second-time.Second)),
			"the second node starts no earlier than minReadySeconds after the first finished (%s)", first.UTC())

		By("the last node counts its minReadySeconds too before the task is Ready")
		Eventually(func() ntv1.NodePhase { return entry(task, nodes[1]).Phase }).Should(Equal(ntv1.NodeSucceeded))
		Eventually(reconciling(task), 5*time.Second).Should(Equal(ntv1.ReasonMinReady))
		Eventually(conditionTrue(task, ntv1.ConditionReady), time.Minute).Should(BeTrue())
		last := entry(task, nodes[1]).FinishTime
		ready := meta.FindStatusCondition(get(task).Status.Conditions, ntv1.ConditionReady)
		Expect(ready.LastTransitionTime.Time).To(BeTemporally(">=", last.Add(10*time.Second-time.Second)))
	})

	It("holds a restarted node's slot for rollout.minReadySeconds after it came back with its new boot ID", func() {
		const pool = "minready-restart"
		nodes := addPool(pool, 2)
		ns := namespace(true)
		task := newTask(ns, "restart-settle", pool, func(t *ntv1.NodeTask) {
			t.Spec.Reboot = ntv1.RebootAlways
			t.Spec.Cordon = true
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
			t.Spec.Rollout.MinReadySeconds = 10
		})
		Eventually(func() string { return entry(task, nodes[0]).Reason }, 2*time.Minute).Should(Equal(ntv1.NodeReasonRebooted))
		back := entry(task, nodes[0]).FinishTime
		Expect(entry(task, nodes[0]).BootIDAfter).NotTo(Equal(entry(task, nodes[0]).BootIDBefore))
		Eventually(func() []string {
			var out []string
			for _, p := range pods(ns) {
				if p.Labels[ntv1.LabelRole] != ntv1.RoleReboot {
					out = append(out, p.Spec.NodeName)
				}
			}
			slices.Sort(out)
			return out
		}, 2*time.Minute).Should(Equal(nodes))
		created := podOn(ns, nodes[1]).CreationTimestamp
		GinkgoWriter.Printf("%s came back at %s; the pod on %s was created at %s\n", nodes[0], back.UTC(), nodes[1], created.UTC())
		Expect(created.Time).To(BeTemporally(">=", back.Add(10*time.Second-time.Second)),
			"the second node starts no earlier than minReadySeconds after the first came back")
		Eventually(conditionTrue(task, ntv1.ConditionReady), 2*time.Minute).Should(BeTrue())
	})

	It("reads a health check's object with the operator's own identity: forbidden until an administrator aggregates a role, then the rollout goes on", func() {
		const pool = "health-rbac"
		nodes := addPool(pool, 2)
		ns := namespace(true)
		ingress := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "ingress", Namespace: ns},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](2),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ingress"}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "ingress"}},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "example.com/web:1"}}},
				},
			},
		}
		Expect(k8s.Create(ctx, ingress)).To(Succeed())
		task := newTask(ns, "gated-by-ingress", pool, func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
			t.Spec.Rollout.HealthChecks = []ntv1.HealthCheck{{Name: "ingress-scaled",
				Object:     ntv1.HealthCheckObject{APIVersion: "apps/v1", Kind: "Deployment", Name: "ingress"},
				Expression: "object.spec.replicas >= 1"}}
		})

		By("the installed role grants nothing to read Deployments: the check does not hold and no node starts")
		Eventually(reconciling(task), time.Minute).Should(Equal(ntv1.ReasonHealthCheckFailing))
		Expect(get(task).Status.Rollout.HealthChecks[0].Message).To(Equal("the operator may not read deployments: an administrator " +
			"grants it with a ClusterRole labelled nodetask.io/aggregate-to-health-check-reader=true (docs/rollout.md)"))
		taskPodNodes := func() []string {
			var out []string
			for _, p := range pods(ns) {
				if p.Labels[ntv1.LabelTask] == task.Name {
					out = append(out, p.Spec.NodeName)
				}
			}
			slices.Sort(out)
			return out
		}
		Expect(taskPodNodes()).To(BeEmpty())

		By("the administrator applies the opt-in example role; kube-controller-manager aggregates it")
		data, err := os.ReadFile(filepath.Join(root, "config", "rbac", "health_check_reader_example.yaml"))
		Expect(err).NotTo(HaveOccurred())
		applyAll(data)
		DeferCleanup(func() {
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{
				Name: "nodetask-health-check-reader-workloads"}}))).To(Succeed())
		})
		Eventually(conditionTrue(task, ntv1.ConditionReady), 2*time.Minute).Should(BeTrue())
		Expect(taskPodNodes()).To(Equal(nodes))
		Expect(get(task).Status.Rollout.HealthChecks[0].Healthy).To(BeTrue())
	})
})
