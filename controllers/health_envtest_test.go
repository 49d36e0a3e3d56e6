package controllers

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// rollout.healthChecks against a real API server: the checked Deployment's status is set by
// the test, as its controller would (envtest runs no kube-controller-manager).
var _ = Describe("Health checks", func() {
	setAvailable := func(d *appsv1.Deployment, available int32) {
		Eventually(func() error {
			if err := k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(d), d); err != nil {
				return err
			}
			d.Status.Replicas, d.Status.ReadyReplicas, d.Status.AvailableReplicas = 2, available, available
			return k8sClient.Status().Update(suiteCtx, d)
		}).Should(Succeed())
	}

	It("stops new starts while a Deployment is unavailable mid-rollout, and resumes when it recovers", func() {
		f := newFixture()
		f.addWindowsNodes(4)
		ingress := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "ingress", Namespace: f.ns},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](2),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ingress"}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "ingress"}},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "example.com/web:1"}}},
				},
			},
		}
		create(ingress)
		setAvailable(ingress, 2)
		task := f.task("gated", func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
			t.Spec.Rollout.HealthChecks = []ntv1.HealthCheck{{
				Name:       "ingress-available",
				Object:     ntv1.HealthCheckObject{APIVersion: "apps/v1", Kind: "Deployment", Name: "ingress"},
				Expression: "object.status.availableReplicas >= object.spec.replicas",
			}}
		})
		create(task)
		Eventually(func() int { return len(f.pods(task)) }).Should(Equal(1))

		By("the Deployment loses a replica while the first node runs")
		setAvailable(ingress, 1)
		time.Sleep(healthEvery) // the last evaluation, made while it was available, expires
		f.finishAll(task, succeed)
		Eventually(conditionReason(task, ntv1.ConditionReconciling), "20s").Should(Equal(ntv1.ReasonHealthCheckFailing))
		Consistently(func() int { return len(f.pods(task)) }, "3s").Should(Equal(1), "no node starts while the check fails")
		got := get(task)
		Expect(got.Status.Rollout.HealthChecks).To(HaveLen(1))
		Expect(got.Status.Rollout.HealthChecks[0].Healthy).To(BeFalse())
		Expect(got.Status.Rollout.HealthChecks[0].Message).To(Equal("the expression is false"))
		Expect(condition(task, ntv1.ConditionReconciling).Message).To(ContainSubstring("health check ingress-available does not hold (the expression is false)"))

		By("it recovers: the rollout goes on by itself (re-checked every 10 s)")
		setAvailable(ingress, 2)
		Eventually(func() int { return len(f.pods(task)) }, "20s").Should(Equal(2))
		f.finishUntil(task, 4, nil)
		Eventually(conditionStatus(task, ntv1.ConditionReady), "30s").Should(Equal(metav1.ConditionTrue))
		Expect(get(task).Status.Rollout.HealthChecks[0].Healthy).To(BeTrue())
	})

	It("stalls on an expression that does not compile, a check past its failAfterSeconds, and never reads a Secret", func() {
		f := newFixture()
		f.addWindowsNodes(1)
		broken := f.task("broken", func(t *ntv1.NodeTask) {
			t.Spec.Rollout.HealthChecks = []ntv1.HealthCheck{{Name: "typo", Expression: "object.status.readyReplicas >",
				Object: ntv1.HealthCheckObject{APIVersion: "apps/v1", Kind: "Deployment", Name: "x"}}}
		})
		create(broken)
		Eventually(conditionReason(broken, ntv1.ConditionStalled)).Should(Equal(ntv1.ReasonInvalidSpec))
		Expect(condition(broken, ntv1.ConditionStalled).Message).To(HavePrefix("spec.rollout.healthChecks[typo].expression does not compile"))
		Expect(f.pods(broken)).To(BeEmpty())

		missing := f.task("missing", func(t *ntv1.NodeTask) {
			t.Spec.Rollout.HealthChecks = []ntv1.HealthCheck{{Name: "gone", Expression: "true", FailAfterSeconds: ptr.To[int32](2),
				Object: ntv1.HealthCheckObject{APIVersion: "apps/v1", Kind: "Deployment", Name: "never-created"}}}
		})
		create(missing)
		Eventually(conditionReason(missing, ntv1.ConditionStalled), "20s").Should(Equal(ntv1.ReasonHealthCheckFailing))
		Expect(condition(missing, ntv1.ConditionStalled).Message).To(HavePrefix("health check gone does not hold (deployments never-created not found) past its failAfterSeconds"))
		Expect(f.pods(missing)).To(BeEmpty())

		elsewhere := f.task("elsewhere", func(t *ntv1.NodeTask) {
			t.Spec.Rollout.HealthChecks = []ntv1.HealthCheck{{Name: "dns", Expression: "true",
				Object: ntv1.HealthCheckObject{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "kube-system", Name: "coredns"}}}
		})
		create(elsewhere)
		Eventually(conditionReason(elsewhere, ntv1.ConditionReconciling), "20s").Should(Equal(ntv1.ReasonHealthCheckFailing))
		Expect(condition(elsewhere, ntv1.ConditionReconciling).Message).To(ContainSubstring(
			"Deployment.apps in namespace kube-system is outside the task's namespace; the manager reads such objects only of the kinds its --health-check-cluster-kinds names"))

		// The API server refuses a Secret (and the reconciler would too: health_checks.go).
		secret := f.task("secret", func(t *ntv1.NodeTask) {
			t.Spec.Rollout.HealthChecks = []ntv1.HealthCheck{{Name: "creds", Expression: "true",
				Object: ntv1.HealthCheckObject{APIVersion: "v1", Kind: "Secret", Name: "db"}}}
		})
		Expect(k8sClient.Create(suiteCtx, secret)).To(MatchError(ContainSubstring("a health check cannot read Secrets")))
	})
})
