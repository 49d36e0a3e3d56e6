package e2e

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// The "exactly once per node" promise at the edges real clusters live in (issue 7), with
// the manager as its own process, kube-controller-manager's garbage collector and KWOK.

// podsPerNode counts the pods controlled by the task with this UID, by node.
func podsPerNode(ns string, uid types.UID) map[string]int {
	out := map[string]int{}
	for _, p := range pods(ns) {
		if ref := metav1.GetControllerOf(&p); ref != nil && ref.UID == uid {
			out[p.Spec.NodeName]++
		}
	}
	return out
}

// expectOncePerNode checks that the task with this UID ran exactly one pod on each node.
func expectOncePerNode(ns string, uid types.UID, nodes []string) {
	perNode := podsPerNode(ns, uid)
	Expect(perNode).To(HaveLen(len(nodes)))
	for _, n := range nodes {
		Expect(perNode[n]).To(Equal(1), "node %s ran %d pods", n, perNode[n])
	}
}

// statusWatch counts the changes of one NodeTask that a watcher (Argo CD, kubectl -w) receives,
// and the bytes of the objects it is sent.
type statusWatch struct {
	mu                  sync.Mutex
	writes, bytes, peak int
	stop                func()
}

func watchTask(ns, name string) *statusWatch {
	wc, err := client.NewWithWatch(c.Config, client.Options{Scheme: k8s.Scheme()})
	Expect(err).NotTo(HaveOccurred())
	w, err := wc.Watch(ctx, &ntv1.NodeTaskList{}, client.InNamespace(ns),
		client.MatchingFields{"metadata.name": name})
	Expect(err).NotTo(HaveOccurred())
	sw := &statusWatch{stop: w.Stop}
	go func() {
		defer GinkgoRecover()
		for ev := range w.ResultChan() {
			if ev.Type != watch.Modified {
				continue
			}
			b, _ := json.Marshal(ev.Object)
			sw.mu.Lock()
			sw.writes++
			sw.bytes += len(b)
			sw.peak = max(sw.peak, len(b))
			sw.mu.Unlock()
		}
	}()
	return sw
}

func (sw *statusWatch) result() (writes, bytes, peak int) {
	sw.stop()
	time.Sleep(100 * time.Millisecond)
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return sw.writes, sw.bytes, sw.peak
}

var _ = Describe("NodeTask at the edges of a real cluster", func() {
	It("runs every node exactly once under a task deleted and re-created under its name mid-rollout", func() {
		ns := namespace(true)
		names := addPool("reborn", 6)
		mutate := []func(*ntv1.NodeTask){annotate("sim.nodetask.io/duration", "3s"), func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(3))
		}}
		first := newTask(ns, "reborn", "reborn", mutate...)
		Eventually(func() int { return len(pods(ns)) }).Should(Equal(3))
		Expect(k8s.Delete(ctx, get(first))).To(Succeed())
		Eventually(func() error { return k8s.Get(ctx, client.ObjectKeyFromObject(first), &ntv1.NodeTask{}) }).ShouldNot(Succeed())

		// Applied again at once, while the first task's pods are still there.
		second := newTask(ns, "reborn", "reborn", mutate...)
		Eventually(conditionTrue(second, ntv1.ConditionReady), 2*time.Minute).Should(BeTrue())
		st := get(second).Status
		Expect(st.Succeeded).To(BeEquivalentTo(6))
		for _, e := range st.Nodes {
			Expect(e.Attempts).To(BeEquivalentTo(1))
		}
		expectOncePerNode(ns, get(second).UID, names)
	})

	It("completes two tasks whose names share 40 characters on the same nodes, each once per node", func() {
		ns := namespace(true)
		names := addPool("rings", 4)
		ring0 := newTask(ns, "windows-security-baseline-rollout-canary-ring0", "rings")
		ring1 := newTask(ns, "windows-security-baseline-rollout-canary-ring1-all", "rings")
		for _, task := range []*ntv1.NodeTask{ring0, ring1} {
			Eventually(conditionTrue(task, ntv1.ConditionReady)).Should(BeTrue())
			Expect(get(task).Status.Succeeded).To(BeEquivalentTo(4))
			expectOncePerNode(ns, get(task).UID, names)
		}
		Expect(pods(ns)).To(HaveLen(8))
	})

	It("runs a GitOps revert (A, B, then A again) on every node", func() {
		ns := namespace(true)
		names := addPool("revert", 3)
		task := newTask(ns, "reverted", "revert")
		a := *task.Spec.Script.Inline
		for step, script := range []string{a, "Set-Service W32Time -StartupType Automatic", a} {
			if step > 0 {
				Eventually(func() error {
					t := get(task)
					t.Spec.Script.Inline = ptr.To(script)
					return k8s.Update(ctx, t)
				}).Should(Succeed())
			}
			Eventually(func() int64 { return get(task).Status.Run }).Should(BeEquivalentTo(step + 1))
			Eventually(conditionTrue(task, ntv1.ConditionReady)).Should(BeTrue())
			perRun := map[string]int{}
			for _, p := range pods(ns) {
				if p.Labels["nodetask.io/run"] == fmt.Sprint(step+1) {
					perRun[p.Spec.NodeName]++
				}
			}
			Expect(perRun).To(HaveLen(len(names)), "step %d ran on every node", step+1)
		}
	})

	It("runs again on a node deleted and registered again under its name, and counts nothing as failed", func() {
		ns := namespace(true)
		names := addPool("reimage", 2)
		task := newTask(ns, "reimaged", "reimage")
		Eventually(conditionTrue(task, ntv1.ConditionReady)).Should(BeTrue())
		oldStart := get(task).Status.Node(names[0]).StartTime

		// A VMSS reimage: the node object goes and comes back under the same name.
		Expect(k8s.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: names[0]}})).To(Succeed())
		Eventually(func() error { return k8s.Get(ctx, client.ObjectKey{Name: names[0]}, &corev1.Node{}) }).ShouldNot(Succeed())
		time.Sleep(1100 * time.Millisecond) // creation times have a resolution of one second
		Expect(c.AddNode(ctx, names[0], "windows", map[string]string{poolLabel: "reimage"})).To(Succeed())

		Eventually(func() bool {
			e := entry(task, names[0])
			return e.Phase == ntv1.NodeSucceeded && e.StartTime != nil && e.StartTime.After(oldStart.Time)
		}, 2*time.Minute).Should(BeTrue(), "the new machine ran the task")
		Eventually(conditionTrue(task, ntv1.ConditionReady)).Should(BeTrue())
		st := get(task).Status
		Expect(st.Failed).To(BeZero())
		Expect(st.Succeeded).To(BeEquivalentTo(2))
		Expect(st.Node(names[0]).Attempts).To(BeEquivalentTo(1))
	})

	It("records Timeout and frees the slot when the kubelet of an unreachable node cannot stop the pod", func() {
		ns := namespace(true)
		// A Windows node whose kubelet reported Ready once and then dropped off the network:
		// no kubelet (no KWOK) plays it, so nothing starts or stops its pods or enforces
		// activeDeadlineSeconds, and no node lifecycle controller has noticed yet.
		names := []string{"lost-0000"}
		node := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: names[0], Labels: map[string]string{
			corev1.LabelOSStable: "windows", poolLabel: "lost"}}}
		Expect(k8s.Create(ctx, &node)).To(Succeed())
		setReady := func(status corev1.ConditionStatus) {
			Eventually(func() error {
				if err := k8s.Get(ctx, client.ObjectKey{Name: names[0]}, &node); err != nil {
					return err
				}
				node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status, LastHeartbeatTime: metav1.Now()}}
				return k8s.Status().Update(ctx, &node)
			}).Should(Succeed())
		}
		setReady(corev1.ConditionTrue)
		task := newTask(ns, "unreachable", "lost", func(t *ntv1.NodeTask) {
			t.Spec.NodeNames = []string{names[0]}
			t.Spec.TimeoutSeconds = ptr.To[int32](5)
		})
		Eventually(func() ntv1.NodePhase { return entry(task, names[0]).Phase }).Should(Equal(ntv1.NodeRunning))
		// Then its Ready condition goes Unknown.
		setReady(corev1.ConditionUnknown)

		// timeoutSeconds (5) plus the operator's grace (1 minute).
		Eventually(func() string { return entry(task, names[0]).Reason }, 2*time.Minute, time.Second).Should(Equal(ntv1.NodeReasonTimeout))
		Expect(entry(task, names[0]).Output).To(ContainSubstring("not Ready"))
		Eventually(func() []corev1.Pod { return pods(ns) }).Should(BeEmpty(), "the pod is deleted at once: no kubelet would confirm it")
		Eventually(conditionTrue(task, ntv1.ConditionStalled)).Should(BeTrue())
	})

	It("keeps the status flat through 200 node churns", func() {
		ns := namespace(true)
		stable := addPool("flux", 5)
		task := newTask(ns, "churned", "flux", annotate("sim.nodetask.io/duration", "500ms"), func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("100%"))
			t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromString("100%"))
			t.Spec.PodTTLSecondsAfterFinished = ptr.To[int32](0)
		})
		Eventually(conditionTrue(task, ntv1.ConditionReady)).Should(BeTrue())
		sw := watchTask(ns, task.Name)

		// Nodes come and go (autoscaling, spot instances): at most 10 churned nodes at a time.
		const churns, alive = 200, 10
		largest := 0
		for i := range churns {
			Expect(c.AddNode(ctx, fmt.Sprintf("flux-churn-%03d", i), "windows", map[string]string{poolLabel: "flux"})).To(Succeed())
			if i >= alive {
				Expect(client.IgnoreNotFound(k8s.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("flux-churn-%03d", i-alive)}}))).To(Succeed())
			}
			if i%10 == 0 {
				largest = max(largest, len(get(task).Status.Nodes))
			}
			time.Sleep(20 * time.Millisecond)
		}
		for i := churns - alive; i < churns; i++ {
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("flux-churn-%03d", i)}}))).To(Succeed())
		}
		Eventually(func() int { return len(get(task).Status.Nodes) }, 2*time.Minute).Should(Equal(len(stable)),
			"the entries of deleted nodes are dropped once their pods are gone")
		Eventually(conditionTrue(task, ntv1.ConditionReady)).Should(BeTrue())
		st := get(task).Status
		Expect(st.Targets).To(BeEquivalentTo(len(stable)))
		writes, bytes, peak := sw.result()
		AddReportEntry("200 node churns", fmt.Sprintf("at most %d entries seen during the churn, %d at the end; %d status writes, %d KB sent to a watcher, largest object %d bytes",
			largest, len(st.Nodes), writes, bytes/1000, peak))
		// Without the drop, the status ends with 205 entries; with it, what is seen during the
		// churn is the nodes alive plus those whose loss is being recorded and whose pods are
		// being deleted (each step waits for a status write, at most one a second).
		Expect(largest).To(BeNumerically("<", churns/2), "the status stays flat")
	})
})
