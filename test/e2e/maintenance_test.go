package e2e

import (
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
	"github.com/nodetask/nodetask-operator/test/cluster"
)

// Windows maintenance (issue 10): cordon, drain, restart, with the restarts played by the
// simulated hosts (test/cluster/restarts.go) from the command a pod runs.

// workload starts a pod that runs until it is evicted on the node, as a Deployment's would.
func workload(ns, name, node string, labels map[string]string) {
	Expect(k8s.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels,
			Annotations: map[string]string{"sim.nodetask.io/hang": "true"}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "example.com/web:1"}}},
	})).To(Succeed())
}

// poolNodes reads the pool's nodes.
func poolNodes(pool string) []corev1.Node {
	var list corev1.NodeList
	Expect(k8s.List(ctx, &list, client.MatchingLabels{poolLabel: pool})).To(Succeed())
	return list.Items
}

// sampler calls a function every 100 ms in its own goroutine until halted, at the latest
// when the spec ends (a failed spec does not leave it polling a stopped cluster).
type sampler struct {
	mu   sync.Mutex // guards what the function records
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func sample(fn func()) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	DeferCleanup(s.halt)
	go func() {
		defer GinkgoRecover()
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			fn()
		}
	}()
	return s
}

func (s *sampler) halt() {
	s.once.Do(func() { close(s.stop) })
	<-s.done
}

// downWatch keeps the most nodes of a pool seen cordoned by a task or not Ready at once.
type downWatch struct {
	*sampler
	peak int
}

func watchDown(pool string, preCordoned map[string]bool) *downWatch {
	w := &downWatch{}
	w.sampler = sample(func() {
		var list corev1.NodeList
		if err := k8s.List(ctx, &list, client.MatchingLabels{poolLabel: pool}); err != nil {
			return
		}
		n := 0
		for _, node := range list.Items {
			if (node.Spec.Unschedulable && !preCordoned[node.Name]) || !ready(&node) {
				n++
			}
		}
		w.mu.Lock()
		w.peak = max(w.peak, n)
		w.mu.Unlock()
	})
	return w
}

func (w *downWatch) result() int {
	w.halt()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak
}

// downNode names a node of the pool whose simulated host is restarting, or "".
func downNode(pool string) string {
	for _, node := range poolNodes(pool) {
		if node.Annotations[cluster.AnnotationDown] != "" {
			return node.Name
		}
	}
	return ""
}

func ready(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func restartPods(ns string) int {
	n := 0
	for _, p := range pods(ns) {
		if p.Labels[ntv1.LabelRole] == ntv1.RoleReboot {
			n++
		}
	}
	return n
}

var _ = Describe("Windows maintenance", func() {
	It("patches a 10-node pool with drain and restart, at most 2 nodes down, through kill -9 at each step", func() {
		const pool = "maint"
		nodes := addPool(pool, 10)
		ns := namespace(true)
		shop := namespace(false)
		// A node an administrator cordoned stays cordoned.
		admin := nodes[9]
		Eventually(func() error {
			node := &corev1.Node{}
			if err := k8s.Get(ctx, client.ObjectKey{Name: admin}, node); err != nil {
				return err
			}
			node.Spec.Unschedulable = true
			return k8s.Update(ctx, node)
		}).Should(Succeed())
		for i, n := range nodes[:4] {
			workload(shop, fmt.Sprintf("web-%d", i), n, map[string]string{"app": "web"})
		}
		workload(shop, "db-0", nodes[0], map[string]string{"app": "db"})
		// Only one db pod: a budget of one keeps it, so node 0's drain is blocked.
		pdb := &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: "db"},
			Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}},
		}
		Expect(k8s.Create(ctx, pdb)).To(Succeed())
		Eventually(func() int32 {
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pdb), pdb)).To(Succeed())
			return pdb.Status.CurrentHealthy
		}).Should(BeEquivalentTo(1))
		for _, n := range nodes[4:6] {
			// Two nodes take a while to restart: the manager is killed while they are down.
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"8"}}}`, cluster.AnnotationRestartSeconds)
			Expect(k8s.Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, client.RawPatch("application/merge-patch+json", []byte(patch)))).To(Succeed())
		}
		before, _ := c.Restarts()
		down := watchDown(pool, map[string]bool{admin: true})

		task := newTask(ns, "patch", pool, annotate("sim.nodetask.io/exit-code", "3010"), func(t *ntv1.NodeTask) {
			t.Spec.Script.Inline = ptr.To("Install-WindowsFeature -Name Containers; exit 3010")
			t.Spec.Reboot = ntv1.RebootIfRequired
			t.Spec.Drain = &ntv1.DrainSpec{TimeoutSeconds: ptr.To[int32](600)}
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(2))
			t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromInt32(0))
		})

		By("kill -9 while node 0 is cordoned and its drain is blocked by the PodDisruptionBudget")
		Eventually(func() string { return entry(task, nodes[0]).Reason }).Should(Equal(ntv1.NodeReasonDrainBlocked))
		Expect(entry(task, nodes[0]).Output).To(ContainSubstring("disruption budget db"))
		killManager()
		startManager()

		By("kill -9 as soon as a restart pod exists, and keep the manager down until a node restarted meanwhile is back")
		Eventually(func() int { return restartPods(ns) }, 2*time.Minute).Should(BeNumerically(">", 0))
		killManager()
		var slow string
		Eventually(func() string { slow = downNode(pool); return slow }).ShouldNot(BeEmpty())
		Eventually(func() bool {
			node := &corev1.Node{}
			Expect(k8s.Get(ctx, client.ObjectKey{Name: slow}, node)).To(Succeed())
			return ready(node) && node.Annotations[cluster.AnnotationDown] == ""
		}, time.Minute).Should(BeTrue())
		startManager() // the node is back, and still cordoned: the new manager goes on from there

		By("kill -9 while a node is down")
		Eventually(func() bool { return downNode(pool) != "" }, 2*time.Minute).Should(BeTrue())
		killManager()
		startManager()

		By("the budget allows the db pod to go: node 0 drains")
		Eventually(func() error {
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pdb), pdb)).To(Succeed())
			pdb.Spec.MinAvailable = ptr.To(intstr.FromInt32(0))
			return k8s.Update(ctx, pdb)
		}).Should(Succeed())
		Eventually(conditionTrue(task, ntv1.ConditionReady), 4*time.Minute).Should(BeTrue())
		Expect(down.result()).To(BeNumerically("<=", 2), "never more nodes cordoned or down than maxConcurrent")

		after, maxDown := c.Restarts()
		Expect(maxDown).To(BeNumerically("<=", 2))
		got := get(task)
		Expect(got.Status.Succeeded).To(BeEquivalentTo(10))
		for _, n := range nodes {
			Expect(after[n]-before[n]).To(Equal(1), "node %s restarted %d times", n, after[n]-before[n])
			e := got.Status.Node(n)
			Expect(e.Phase).To(Equal(ntv1.NodeSucceeded), n)
			Expect(e.Reason).To(Equal(ntv1.NodeReasonRebooted), n)
			Expect(e.BootIDAfter).NotTo(Equal(e.BootIDBefore), n)
		}
		for _, node := range poolNodes(pool) {
			Expect(node.Annotations).NotTo(HaveKey(rollout.AnnotationClaim), node.Name)
			Expect(node.Spec.Unschedulable).To(Equal(node.Name == admin), "%s: only the administrator's cordon stays", node.Name)
		}
		Expect(pods(shop)).To(BeEmpty(), "every workload pod was evicted")
		Expect(restartPods(ns)).To(Equal(10), "one restart pod per node")
	})

	It("counts a node restarted when its kubelet reports the restart pod Failed only after the boot, through kill -9", func() {
		const pool = "late-report"
		nodes := addPool(pool, 3)
		for _, n := range nodes {
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q,%q:"6"}}}`,
				cluster.AnnotationRestartReport, cluster.ReportAfterBoot, cluster.AnnotationRestartSeconds)
			Expect(k8s.Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, client.RawPatch("application/merge-patch+json", []byte(patch)))).To(Succeed())
		}
		ns := namespace(true)
		before, _ := c.Restarts()
		bootBefore := map[string]string{}
		for _, node := range poolNodes(pool) {
			bootBefore[node.Name] = node.Status.NodeInfo.BootID
		}
		task := newTask(ns, "restart", pool, func(t *ntv1.NodeTask) {
			t.Spec.Reboot = ntv1.RebootAlways
			t.Spec.Cordon = true
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("100%"))
		})

		By("kill -9 while the hosts are down, their restart pods unreported")
		Eventually(func() bool { return downNode(pool) != "" }, 2*time.Minute).Should(BeTrue())
		killManager()

		By("start it again once a host posted its new boot ID while still NotReady")
		Eventually(func() bool {
			for _, node := range poolNodes(pool) {
				if node.Status.NodeInfo.BootID != bootBefore[node.Name] && !ready(&node) {
					return true
				}
			}
			return false
		}, time.Minute, 50*time.Millisecond).Should(BeTrue())
		startManager()

		By("kill -9 again as soon as a restart pod is reported Failed")
		Eventually(func() bool {
			for _, p := range pods(ns) {
				if p.Labels[ntv1.LabelRole] == ntv1.RoleReboot && p.Status.Phase == corev1.PodFailed {
					return true
				}
			}
			return false
		}, time.Minute, 50*time.Millisecond).Should(BeTrue())
		killManager()
		startManager()

		Eventually(conditionTrue(task, ntv1.ConditionReady), 3*time.Minute).Should(BeTrue())
		after, _ := c.Restarts()
		got := get(task)
		for _, n := range nodes {
			Expect(after[n]-before[n]).To(Equal(1), "node %s restarted %d times", n, after[n]-before[n])
			e := got.Status.Node(n)
			Expect(e.Phase).To(Equal(ntv1.NodeSucceeded), n)
			Expect(e.Reason).To(Equal(ntv1.NodeReasonRebooted), n)
			Expect(e.BootIDBefore).To(Equal(bootBefore[n]), n)
			Expect(e.BootIDAfter).NotTo(Equal(e.BootIDBefore), n)
		}
		for _, node := range poolNodes(pool) {
			Expect(node.Spec.Unschedulable).To(BeFalse(), "%s uncordoned", node.Name)
			Expect(node.Annotations).NotTo(HaveKey(rollout.AnnotationClaim), node.Name)
		}
		failed := 0
		for _, p := range pods(ns) {
			if p.Labels[ntv1.LabelRole] == ntv1.RoleReboot {
				Expect(p.Status.Phase).To(Equal(corev1.PodFailed), "the kubelet reported every restart pod only after the boot")
				failed++
			}
		}
		Expect(failed).To(Equal(3), "one restart pod per node")
	})

	It("fails a node that does not come back from its restart with RebootTimeout, and the failure budget applies", func() {
		const pool = "noreturn"
		nodes := addPool(pool, 2)
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"never"}}}`, cluster.AnnotationRestartSeconds)
		Expect(k8s.Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodes[0]}}, client.RawPatch("application/merge-patch+json", []byte(patch)))).To(Succeed())
		ns := namespace(true)
		task := newTask(ns, "restart", pool, func(t *ntv1.NodeTask) {
			t.Spec.Reboot = ntv1.RebootAlways
			t.Spec.Cordon = true
			t.Spec.RebootTimeoutSeconds = ptr.To[int32](60)
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
		})
		Eventually(conditionTrue(task, ntv1.ConditionStalled), 3*time.Minute).Should(BeTrue())
		got := get(task)
		Expect(got.Status.Node(nodes[0]).Reason).To(Equal(ntv1.NodeReasonRebootTimeout))
		Expect(apimeta.FindStatusCondition(got.Status.Conditions, ntv1.ConditionStalled).Reason).To(Equal(ntv1.ReasonFailureBudgetExceeded))
		Expect(got.Status.Node(nodes[1]).Attempts).To(BeZero(), "the second node never started")
		Consistently(func() bool {
			node := &corev1.Node{}
			Expect(k8s.Get(ctx, client.ObjectKey{Name: nodes[0]}, node)).To(Succeed())
			_, claimed := node.Annotations[rollout.AnnotationClaim]
			return node.Spec.Unschedulable && !claimed
		}, 3*time.Second).Should(BeTrue(), "the failed node is left cordoned for a person, and let go")
	})

	It("never lets two restarting tasks work on one node at once", func() {
		const pool = "shared"
		nodes := addPool(pool, 3)
		ns := namespace(true)
		before, _ := c.Restarts()
		spec := func(t *ntv1.NodeTask) {
			t.Spec.Reboot = ntv1.RebootAlways
			t.Spec.Cordon = true
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("100%"))
		}
		a := newTask(ns, "first", pool, spec)
		b := newTask(ns, "second", pool, spec)

		// Sample the pods: no node ever has unfinished pods of both tasks.
		stop := make(chan struct{})
		overlap := make(chan string, 1)
		go func() {
			defer GinkgoRecover()
			for {
				select {
				case <-stop:
					close(overlap)
					return
				case <-time.After(100 * time.Millisecond):
				}
				owners := map[string]map[string]bool{}
				for _, p := range pods(ns) {
					if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
						continue
					}
					if owners[p.Spec.NodeName] == nil {
						owners[p.Spec.NodeName] = map[string]bool{}
					}
					owners[p.Spec.NodeName][p.Labels[ntv1.LabelTask]] = true
					if len(owners[p.Spec.NodeName]) > 1 {
						select {
						case overlap <- p.Spec.NodeName:
						default:
						}
					}
				}
			}
		}()
		Eventually(conditionTrue(a, ntv1.ConditionReady), 3*time.Minute).Should(BeTrue())
		Eventually(conditionTrue(b, ntv1.ConditionReady), 3*time.Minute).Should(BeTrue())
		close(stop)
		Expect(<-overlap).To(BeEmpty())
		after, _ := c.Restarts()
		for _, n := range nodes {
			Expect(after[n]-before[n]).To(Equal(2), "node %s: once per task", n)
		}
		for _, node := range poolNodes(pool) {
			Expect(node.Spec.Unschedulable).To(BeFalse(), node.Name)
		}
	})
})
