package e2e

import (
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/internal/testutil"
)

var nsCounter atomic.Int32

// namespace creates a namespace for one test; privileged unless said otherwise.
func namespace(privileged bool) string {
	name := fmt.Sprintf("e2e-%d", nsCounter.Add(1))
	level := "privileged"
	if !privileged {
		level = "baseline"
	}
	Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": level,
	}}})).To(Succeed())
	return name
}

// addPool creates n Windows nodes labelled with their own pool and waits until they are Ready.
func addPool(pool string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%04d", pool, i)
		Expect(c.AddNode(ctx, names[i], "windows", map[string]string{poolLabel: pool})).To(Succeed())
	}
	Eventually(func() int { return readyNodes(pool) }, 3*time.Minute).Should(Equal(n))
	return names
}

func readyNodes(pool string) int {
	n := 0
	for _, node := range poolNodes(pool) {
		if ready(&node) {
			n++
		}
	}
	return n
}

func newTask(ns, name, pool string, mutate ...func(*ntv1.NodeTask)) *ntv1.NodeTask {
	t := &ntv1.NodeTask{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: ntv1.NodeTaskSpec{
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{poolLabel: pool}},
			Script:       &ntv1.ScriptSpec{Inline: ptr.To("Get-Service kubelet | Format-List Name,Status")},
		},
	}
	for _, m := range mutate {
		m(t)
	}
	Expect(k8s.Create(ctx, t)).To(Succeed())
	return t
}

func annotate(kv ...string) func(*ntv1.NodeTask) {
	return func(t *ntv1.NodeTask) {
		if t.Spec.PodAnnotations == nil {
			t.Spec.PodAnnotations = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			t.Spec.PodAnnotations[kv[i]] = kv[i+1]
		}
	}
}

func get(t *ntv1.NodeTask) *ntv1.NodeTask { return testutil.FetchTask(ctx, k8s, t) }

func conditionTrue(t *ntv1.NodeTask, typ string) func() bool {
	return func() bool { return meta.IsStatusConditionTrue(get(t).Status.Conditions, typ) }
}

func pods(ns string) []corev1.Pod {
	var list corev1.PodList
	Expect(k8s.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
	return list.Items
}

// eventNotes returns the notes of the events with this reason in the namespace.
func eventNotes(ns, reason string) []string {
	var list eventsv1.EventList
	Expect(k8s.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
	var out []string
	for _, e := range list.Items {
		if e.Reason == reason {
			out = append(out, e.Note)
		}
	}
	return out
}

// entry returns the node's entry in the stored status; an empty one if it has none.
func entry(t *ntv1.NodeTask, node string) ntv1.NodeStatus {
	return testutil.StoredEntry(ctx, k8s, t, node)
}

var _ = Describe("NodeTask on a simulated Windows cluster", func() {
	It("runs on every Windows node and none of the Linux nodes, and kubectl wait returns", func() {
		ns := namespace(true)
		task := newTask(ns, "inventory", mainPool)
		kubectl, err := exec.LookPath("kubectl")
		if err == nil {
			out, err := exec.Command(kubectl, "--kubeconfig", c.Kubeconfig, "wait", "-n", ns,
				"--for=condition=Ready", "nodetask/inventory", "--timeout=120s").CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), string(out))
		}
		Eventually(conditionTrue(task, ntv1.ConditionReady)).Should(BeTrue())
		st := get(task).Status
		Expect(st.Targets).To(BeEquivalentTo(windowsNodes))
		Expect(st.Succeeded).To(BeEquivalentTo(windowsNodes))
		for _, e := range st.Nodes {
			Expect(e.Name).To(HavePrefix("win-"))
			Expect(e.Output).To(Equal("simulated run on " + e.Name + " exited 0"))
		}
		for _, p := range pods(ns) {
			Expect(p.Spec.NodeName).To(HavePrefix("win-"), "no pod on a Linux node")
		}
		Expect(pods(ns)).To(HaveLen(windowsNodes))
	})

	It("stops after more failures than maxFailures and reports each failing node", func() {
		ns := namespace(true)
		task := newTask(ns, "fragile", mainPool,
			annotate("sim.nodetask.io/exit-code-win-0002", "3", "sim.nodetask.io/exit-code-win-0005", "4"),
			func(t *ntv1.NodeTask) {
				t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
				t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromInt32(1))
			})
		Eventually(conditionTrue(task, ntv1.ConditionStalled), 2*time.Minute).Should(BeTrue())
		st := get(task).Status
		Expect(meta.FindStatusCondition(st.Conditions, ntv1.ConditionStalled).Reason).To(Equal(ntv1.ReasonFailureBudgetExceeded))
		Expect(st.Failed).To(BeEquivalentTo(2))
		Expect(st.Succeeded).To(BeEquivalentTo(4), "win-0000..0005 ran in name order, one at a time")
		Expect(entry(task, "win-0002").ExitCode).To(HaveValue(BeEquivalentTo(3)))
		Expect(entry(task, "win-0005").ExitCode).To(HaveValue(BeEquivalentTo(4)))
		Consistently(func() int { return len(pods(ns)) }, "3s").Should(Equal(6), "no node after the second failure starts")
	})

	It("reports Timeout for a hung script and shows ImagePullBackOff while an image cannot be pulled", func() {
		ns := namespace(true)
		hung := newTask(ns, "hung", mainPool, annotate("sim.nodetask.io/hang", "true"), func(t *ntv1.NodeTask) {
			t.Spec.NodeNames = []string{"win-0000"}
			t.Spec.TimeoutSeconds = ptr.To[int32](3)
		})
		pull := newTask(ns, "no-image", mainPool, annotate("sim.nodetask.io/image-pull-error", "true"), func(t *ntv1.NodeTask) {
			t.Spec.NodeNames = []string{"win-0001"}
			t.Spec.TimeoutSeconds = ptr.To[int32](4)
		})
		Eventually(func() string { return entry(pull, "win-0001").Reason }).Should(Equal("ImagePullBackOff"))
		Expect(entry(pull, "win-0001").Phase).To(Equal(ntv1.NodeRunning))
		Eventually(func() string { return entry(hung, "win-0000").Reason }).Should(Equal(ntv1.NodeReasonTimeout))
		Eventually(func() string { return entry(pull, "win-0001").Reason }).Should(Equal(ntv1.NodeReasonTimeout))
		Expect(entry(hung, "win-0000").ExitCode).To(BeNil(), "a killed Windows job's exit code says nothing")
		Eventually(conditionTrue(hung, ntv1.ConditionStalled)).Should(BeTrue())
	})

	It("records a script stopped on the way (exit 0 without the completion marker) as Interrupted, not a success", func() {
		ns := namespace(true)
		task := newTask(ns, "interrupted", mainPool, annotate("sim.nodetask.io/interrupted", "true"), func(t *ntv1.NodeTask) {
			t.Spec.NodeNames = []string{"win-0003"}
		})
		Eventually(func() string { return entry(task, "win-0003").Reason }).Should(Equal(ntv1.NodeReasonInterrupted))
		e := entry(task, "win-0003")
		Expect(e.Phase).To(Equal(ntv1.NodeFailed))
		Expect(e.Output).To(Equal("simulated run on win-0003 exited 0"))
		Eventually(conditionTrue(task, ntv1.ConditionStalled)).Should(BeTrue())
		Expect(get(task).Status.Succeeded).To(BeZero())
	})

	It("records exit code 3010 as a success that needs a reboot, and leaves the node alone", func() {
		ns := namespace(true)
		task := newTask(ns, "needs-restart", mainPool, annotate("sim.nodetask.io/exit-code", "3010",
			"sim.nodetask.io/message", "Install-WindowsFeature: a restart is required"), func(t *ntv1.NodeTask) {
			t.Spec.NodeNames = []string{"win-0004", "win-0005"}
		})
		Eventually(conditionTrue(task, ntv1.ConditionReady)).Should(BeTrue())
		st := get(task).Status
		Expect(st.Succeeded).To(BeEquivalentTo(2))
		for _, n := range []string{"win-0004", "win-0005"} {
			e := entry(task, n)
			Expect(e.Reason).To(Equal(ntv1.NodeReasonRebootRequired))
			Expect(e.ExitCode).To(HaveValue(BeEquivalentTo(3010)))
		}
		Expect(meta.FindStatusCondition(st.Conditions, ntv1.ConditionReady).Message).To(ContainSubstring("2 must restart to finish"))
	})

	It("starts nodes only once its maintenance window opens, a minute after the task is created", func() {
		ns := namespace(true)
		opens := time.Now().UTC().Add(time.Minute).Truncate(time.Minute)
		if time.Until(opens) < 20*time.Second {
			opens = opens.Add(time.Minute) // time to see it closed first
		}
		task := newTask(ns, "windowed", mainPool, func(t *ntv1.NodeTask) {
			t.Spec.NodeNames = []string{"win-0006"}
			t.Spec.Window = &ntv1.MaintenanceWindow{Start: opens.Format("15:04"), End: opens.Add(time.Hour).Format("15:04")}
		})
		Eventually(func() string {
			c := meta.FindStatusCondition(get(task).Status.Conditions, ntv1.ConditionReconciling)
			if c == nil {
				return ""
			}
			return c.Reason
		}).Should(Equal(ntv1.ReasonOutsideMaintenanceWindow))
		Expect(meta.FindStatusCondition(get(task).Status.Conditions, ntv1.ConditionReconciling).Message).To(ContainSubstring(opens.Format(time.RFC3339)))
		Expect(pods(ns)).To(BeEmpty())
		// Nothing else changes: the operator's own requeue at the opening starts the node.
		Eventually(conditionTrue(task, ntv1.ConditionReady), 3*time.Minute, time.Second).Should(BeTrue())
		p := pods(ns)
		Expect(p).To(HaveLen(1))
		Expect(p[0].CreationTimestamp.Time).To(BeTemporally(">=", opens))
	})

	It("survives kill -9 of the manager mid-rollout with no duplicate pod and a correct status", func() {
		ns := namespace(true)
		task := newTask(ns, "resilient", mainPool, annotate("sim.nodetask.io/duration", "2s"), func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(4))
		})
		Eventually(func() int32 { return get(task).Status.Succeeded }).Should(BeNumerically(">=", 4))
		killManager()
		time.Sleep(3 * time.Second) // pods finish while no controller runs
		startManager()
		Eventually(conditionTrue(task, ntv1.ConditionReady), 3*time.Minute).Should(BeTrue())
		st := get(task).Status
		Expect(st.Succeeded).To(BeEquivalentTo(windowsNodes))
		perNode := map[string]int{}
		for _, p := range pods(ns) {
			perNode[p.Spec.NodeName]++
		}
		Expect(perNode).To(HaveLen(windowsNodes))
		for node, n := range perNode {
			Expect(n).To(Equal(1), "node %s got %d pods", node, n)
		}
		for _, e := range st.Nodes {
			Expect(e.Attempts).To(BeEquivalentTo(1))
			Expect(e.Phase).To(Equal(ntv1.NodeSucceeded))
		}
	})

	It("gives a node that joins later the task, and records NodeLost for a node deleted mid-run", func() {
		ns := namespace(true)
		names := addPool("churn", 2)
		task := newTask(ns, "churn", "churn", annotate("sim.nodetask.io/duration", "4s"),
			func(t *ntv1.NodeTask) { t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromString("100%")) })
		Eventually(func() int { return len(pods(ns)) }).Should(Equal(2))
		Expect(k8s.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: names[1]}})).To(Succeed())
		// The loss is recorded (and reported) before the pod is deleted; then the entry of
		// the deleted node goes, so that node churn does not grow the status.
		Eventually(func() []string { return eventNotes(ns, "NodeFailed") }).Should(ContainElement(ContainSubstring(names[1])))
		Eventually(func() string { return entry(task, names[1]).Name }).Should(BeEmpty())
		Eventually(conditionTrue(task, ntv1.ConditionReady)).Should(BeTrue())
		Expect(get(task).Status.Targets).To(BeEquivalentTo(1))

		Expect(c.AddNode(ctx, "churn-new", "windows", map[string]string{poolLabel: "churn"})).To(Succeed())
		Eventually(func() ntv1.NodePhase { return entry(task, "churn-new").Phase }).Should(Equal(ntv1.NodeSucceeded))
		Eventually(conditionTrue(task, ntv1.ConditionReady)).Should(BeTrue())
		Expect(get(task).Status.Targets).To(BeEquivalentTo(2))
	})

	It("re-runs every node after a spec change, and deleting the task removes its pods", func() {
		ns := namespace(true)
		addPool("rev", 3)
		task := newTask(ns, "versioned", "rev")
		Eventually(conditionTrue(task, ntv1.ConditionReady)).Should(BeTrue())
		first := get(task).Status.Revision
		Eventually(func() error {
			t := get(task)
			t.Spec.Script.Inline = ptr.To("Restart-Service kubelet")
			return k8s.Update(ctx, t)
		}).Should(Succeed())
		Eventually(func() string { return get(task).Status.Revision }).ShouldNot(Equal(first))
		Eventually(conditionTrue(task, ntv1.ConditionReady)).Should(BeTrue())
		Expect(pods(ns)).To(HaveLen(6))
		var cms corev1.ConfigMapList
		Eventually(func() []corev1.ConfigMap {
			Expect(k8s.List(ctx, &cms, client.InNamespace(ns), client.HasLabels{"nodetask.io/run"})).To(Succeed())
			return cms.Items
		}).Should(HaveLen(1), "one immutable script ConfigMap per run; those of finished runs are deleted")
		Expect(cms.Items[0].Labels["nodetask.io/run"]).To(Equal("2"))

		Expect(k8s.Delete(ctx, get(task))).To(Succeed())
		Eventually(func() int { return len(pods(ns)) }).Should(Equal(0), "the garbage collector removes the pods")
		Eventually(func() int {
			Expect(k8s.List(ctx, &cms, client.InNamespace(ns), client.HasLabels{"nodetask.io/run"})).To(Succeed())
			return len(cms.Items)
		}).Should(Equal(0))
	})

	It("is Stalled in a namespace whose Pod Security level does not allow HostProcess pods", func() {
		ns := namespace(false)
		task := newTask(ns, "not-allowed", mainPool)
		Eventually(conditionTrue(task, ntv1.ConditionStalled)).Should(BeTrue())
		cond := meta.FindStatusCondition(get(task).Status.Conditions, ntv1.ConditionStalled)
		Expect(cond.Reason).To(Equal(ntv1.ReasonPodSecurityRejected))
		Expect(cond.Message).To(ContainSubstring("pod-security.kubernetes.io/enforce=privileged"))
		Expect(pods(ns)).To(BeEmpty())
	})

	It("answers its readiness probe once its caches have synced", func() {
		Eventually(func() (int, error) {
			resp, err := http.Get("http://" + probeAddr + "/readyz")
			if err != nil {
				return 0, err
			}
			defer resp.Body.Close()
			return resp.StatusCode, nil
		}).Should(Equal(http.StatusOK))
	})

	It("completes a task on 500 nodes", func() {
		ns := namespace(true)
		start := time.Now()
		addPool("big", 500)
		By(fmt.Sprintf("500 nodes Ready in %s", time.Since(start).Round(time.Second)))
		start = time.Now()
		sw := watchTask(ns, "fleet")
		task := newTask(ns, "fleet", "big", func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("50%"))
		})
		Eventually(conditionTrue(task, ntv1.ConditionReady), 5*time.Minute, time.Second).Should(BeTrue())
		writes, bytes, peak := sw.result()
		AddReportEntry("500-node rollout status writes", fmt.Sprintf("%d status writes, %d KB sent to a watcher, largest object %d bytes", writes, bytes/1000, peak))
		t := get(task)
		st := t.Status
		Expect(st.Succeeded).To(BeEquivalentTo(500))
		By("the 500 results are in two NodeResultSlices, not in the task")
		Expect(st.ResultSlices).To(BeEquivalentTo(2))
		Expect(st.Nodes).To(BeEmpty())
		Expect(peak).To(BeNumerically("<", 8<<10), "the task object stays small")
		var slices ntv1.NodeResultSliceList
		Expect(k8s.List(ctx, &slices, client.InNamespace(ns))).To(Succeed())
		var from []*ntv1.NodeResultSlice
		for i := range slices.Items {
			Expect(metav1.IsControlledBy(&slices.Items[i], t)).To(BeTrue())
			from = append(from, &slices.Items[i])
		}
		entries := ntv1.MergeResultSlices(&st, from)
		Expect(entries).To(HaveLen(500))
		for _, e := range entries {
			Expect(e.Phase).To(Equal(ntv1.NodeSucceeded), e.Name)
		}
		By("kubectl nodetask status reads them from the slices")
		run := plugin("", "status", "fleet", "-n", ns)
		Expect(run.code).To(BeZero(), run.stderr)
		rows := 0
		for _, line := range strings.Split(run.stdout, "\n") {
			if strings.HasPrefix(line, "big-") && strings.Contains(line, "Succeeded") {
				rows++
			}
		}
		Expect(rows).To(Equal(500), run.stdout)
		AddReportEntry("500-node rollout", fmt.Sprintf("Ready after %s (maxConcurrent 50%%, 1s simulated run per node)", time.Since(start).Round(time.Second)))
		for _, p := range pods(ns) {
			Expect(strings.HasPrefix(p.Spec.NodeName, "big-")).To(BeTrue())
		}
	})
})
