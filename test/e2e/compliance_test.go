package e2e

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// Compliance (issue 23): spec.check before the fix, and mode Audit. The simulated kubelet
// plays the wrapper's steps from the check-exit-code annotations (test/kwok/windows-kubelet.yaml).

// podMode is the wrapper mode of a pod of a task with spec.check: Check or CheckFix.
func podMode(p *corev1.Pod) string {
	for _, e := range p.Spec.Containers[0].Env {
		if e.Name == "NODETASK_MODE" {
			return e.Value
		}
	}
	return ""
}

// cordonWatch records every node of a pool ever seen unschedulable.
type cordonWatch struct {
	*sampler
	cordoned map[string]bool
}

func watchCordons(pool string) *cordonWatch {
	w := &cordonWatch{cordoned: map[string]bool{}}
	w.sampler = sample(func() {
		var list corev1.NodeList
		if err := k8s.List(ctx, &list, client.MatchingLabels{poolLabel: pool}); err != nil {
			return
		}
		for _, node := range list.Items {
			if node.Spec.Unschedulable {
				w.mu.Lock()
				w.cordoned[node.Name] = true
				w.mu.Unlock()
			}
		}
	})
	return w
}

func (w *cordonWatch) result() map[string]bool {
	w.halt()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cordoned
}

const (
	firewallCheck = "if ((Get-NetFirewallProfile -Name Domain).Enabled) { exit 0 }; exit 1"
	firewallFix   = "Set-NetFirewallProfile -Name Domain -Enabled True"
)

var _ = Describe("Compliance", func() {
	It("checks each node before it claims it: compliant nodes are never drained or restarted, a drifted one is drained, fixed, re-checked and restarted once, through kill -9 during its fix", func() {
		const pool = "comply"
		nodes := addPool(pool, 4)
		ok0, ok1, drifted, stuck := nodes[0], nodes[1], nodes[2], nodes[3]
		ns := namespace(true)
		shop := namespace(false)
		for i, n := range nodes {
			workload(shop, fmt.Sprintf("web-%d", i), n, map[string]string{"app": "web"})
		}
		before, _ := c.Restarts()
		cordons := watchCordons(pool)

		task := newTask(ns, "enforce", pool, annotate(
			"sim.nodetask.io/check-exit-code-"+drifted, "1", "sim.nodetask.io/exit-code-"+drifted, "3010",
			"sim.nodetask.io/check-exit-code-"+stuck, "1", "sim.nodetask.io/recheck-exit-code-"+stuck, "1",
			"sim.nodetask.io/duration", "4s",
		), func(t *ntv1.NodeTask) {
			t.Spec.Check = &ntv1.CheckSpec{Inline: ptr.To(firewallCheck)}
			t.Spec.Script.Inline = ptr.To(firewallFix)
			t.Spec.Drain = &ntv1.DrainSpec{}
			t.Spec.Reboot = ntv1.RebootIfRequired
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(2))
			t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromInt32(1))
		})

		By("kill -9 while the drifted node's pod runs its fix, and start again after it ended")
		var fixPod string
		Eventually(func() string {
			for _, p := range pods(ns) {
				if p.Spec.NodeName == drifted && podMode(&p) == "CheckFix" && p.Status.Phase == corev1.PodRunning {
					fixPod = p.Name
				}
			}
			return fixPod
		}, 2*time.Minute, 100*time.Millisecond).ShouldNot(BeEmpty())
		killManager()
		Eventually(func() corev1.PodPhase {
			for _, p := range pods(ns) {
				if p.Name == fixPod {
					return p.Status.Phase
				}
			}
			return ""
		}, time.Minute).Should(Equal(corev1.PodFailed), "the fix exits 3010 after a passing re-check")
		startManager()

		Eventually(conditionTrue(task, ntv1.ConditionReady), 4*time.Minute).Should(BeTrue())
		cordoned := cordons.result()
		after, _ := c.Restarts()
		got := get(task)

		for _, n := range []string{ok0, ok1} {
			e := got.Status.Node(n)
			Expect(e.Phase).To(Equal(ntv1.NodeSucceeded), n)
			Expect(e.Compliance).To(Equal(ntv1.Compliant), n)
			Expect(cordoned[n]).To(BeFalse(), "%s is compliant: never cordoned", n)
			Expect(after[n]-before[n]).To(BeZero(), "%s is compliant: never restarted", n)
		}
		e := got.Status.Node(drifted)
		Expect(e.Phase).To(Equal(ntv1.NodeSucceeded))
		Expect(e.Reason).To(Equal(ntv1.NodeReasonRebooted))
		Expect(e.Compliance).To(Equal(ntv1.Remediated))
		Expect(e.ExitCode).To(HaveValue(BeEquivalentTo(3010)))
		Expect(e.Output).To(ContainSubstring("simulated re-check exited 0"))
		Expect(cordoned[drifted]).To(BeTrue())
		Expect(after[drifted]-before[drifted]).To(Equal(1), "restarted once")

		e = got.Status.Node(stuck)
		Expect(e.Phase).To(Equal(ntv1.NodeFailed))
		Expect(e.Reason).To(Equal(ntv1.NodeReasonStillNonCompliant))
		Expect(e.Compliance).To(Equal(ntv1.NonCompliant))
		Expect(e.Output).To(ContainSubstring("simulated fix exited 0\nsimulated re-check exited 1"))
		Expect(after[stuck]-before[stuck]).To(BeZero(), "a node the fix did not repair is not restarted")

		// Per node: the check before the claim, then for a drifted node one pod that fixed it.
		modes := map[string][]string{}
		for _, p := range pods(ns) {
			if p.Labels[ntv1.LabelRole] != ntv1.RoleReboot {
				modes[p.Spec.NodeName] = append(modes[p.Spec.NodeName], podMode(&p))
			}
		}
		Expect(modes[ok0]).To(ConsistOf("Check"))
		Expect(modes[ok1]).To(ConsistOf("Check"))
		Expect(modes[drifted]).To(ConsistOf("Check", "CheckFix"), "the fix ran once, kill -9 or not")
		Expect(modes[stuck]).To(ConsistOf("Check", "CheckFix"))

		// Only the nodes that needed the fix were drained.
		left := map[string]bool{}
		for _, p := range pods(shop) {
			left[p.Spec.NodeName] = true
		}
		Expect(left).To(Equal(map[string]bool{ok0: true, ok1: true}))

		Expect(got.Status.Compliance).To(Equal(&ntv1.ComplianceSummary{Compliant: 3, NonCompliant: 1}))
		Expect(apimeta.FindStatusCondition(got.Status.Conditions, ntv1.ConditionReady).Message).
			To(ContainSubstring(fmt.Sprintf("3 compliant (1 remediated), 1 node out of compliance (%s)", stuck)))
		for _, node := range poolNodes(pool) {
			Expect(node.Spec.Unschedulable).To(Equal(node.Name == stuck), "%s: only the failed node stays cordoned", node.Name)
		}
	})

	It("audits without changing anything, and reports the drift", func() {
		const pool = "audit"
		nodes := addPool(pool, 3)
		ns := namespace(true)
		cordons := watchCordons(pool)
		task := newTask(ns, "firewall-audit", pool, annotate("sim.nodetask.io/check-exit-code-"+nodes[1], "1"), func(t *ntv1.NodeTask) {
			t.Spec.Script, t.Spec.Mode = nil, ntv1.ModeAudit
			t.Spec.Check = &ntv1.CheckSpec{Inline: ptr.To(firewallCheck)}
		})
		Eventually(conditionTrue(task, ntv1.ConditionReady), 2*time.Minute).Should(BeTrue())
		Expect(cordons.result()).To(BeEmpty())
		got := get(task)
		Expect(got.Status.Succeeded).To(BeEquivalentTo(3), "drift is an answer, not a failure")
		Expect(got.Status.Compliance).To(Equal(&ntv1.ComplianceSummary{Compliant: 2, NonCompliant: 1}))
		Expect(got.Status.Node(nodes[1]).Compliance).To(Equal(ntv1.NonCompliant))
		ready := apimeta.FindStatusCondition(got.Status.Conditions, ntv1.ConditionReady)
		Expect(ready.Reason).To(Equal(ntv1.ReasonNonCompliant))
		Expect(ready.Message).To(ContainSubstring("1 node out of compliance (" + nodes[1] + ")"))
		all := pods(ns)
		Expect(all).To(HaveLen(3))
		for _, p := range all {
			Expect(podMode(&p)).To(Equal("Check"), "Audit runs the check alone")
		}

		By("kubectl nodetask status shows each node's compliance")
		out := plugin("", "status", "firewall-audit", "-n", ns)
		Expect(out.code).To(BeZero(), out.stderr)
		Expect(out.stdout).To(ContainSubstring("NonCompliant"))
	})
})
