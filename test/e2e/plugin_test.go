package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
	"github.com/nodetask/nodetask-operator/test/cluster"
)

// pluginRun is one run of the kubectl-nodetask binary.
type pluginRun struct {
	stdout, stderr string
	code           int
}

// plugin runs bin/kubectl-nodetask against the simulated cluster, with stdin.
func plugin(stdin string, args ...string) pluginRun {
	GinkgoHelper()
	// No command of the plugin but wait may take long: a hung one fails the spec, not the suite.
	runCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(runCtx, env("PLUGIN"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &stdout, &stderr
	err := cmd.Run()
	run := pluginRun{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		run.code = exit.ExitCode()
	} else {
		Expect(err).NotTo(HaveOccurred())
	}
	GinkgoWriter.Printf("$ kubectl nodetask %s\n%s%s(exit %d)\n", strings.Join(args, " "), run.stdout, run.stderr, run.code)
	return run
}

// targetRows returns the rows of a `targets` table: node -> its TARGET and WHY columns.
func targetRows(out string) map[string]string {
	rows := map[string]string{}
	lines := strings.Split(out, "\n")
	for _, line := range lines[slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "NODE") })+1:] {
		if f := strings.Fields(line); len(f) >= 3 {
			rows[f[0]] = f[1] + " " + strings.Join(f[2:], " ")
		}
	}
	return rows
}

var _ = Describe("kubectl nodetask", func() {
	It("lists targets, shows status, reads logs, re-runs and waits against the simulated cluster", func() {
		const pool = "plugin"
		nodes := addPool(pool, 4)
		// One Windows node the tasks do not tolerate, and a Linux node with the pool's label.
		tainted := nodes[3]
		var node corev1.Node
		Expect(k8s.Get(ctx, client.ObjectKey{Name: tainted}, &node)).To(Succeed())
		node.Spec.Taints = append(node.Spec.Taints, corev1.Taint{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule})
		Expect(k8s.Update(ctx, &node)).To(Succeed())
		Expect(c.AddNode(ctx, "plugin-linux-0000", "linux", map[string]string{poolLabel: pool})).To(Succeed())
		ns := namespace(true)

		By("targets -f: a dry run of a manifest, before anything exists")
		manifest := &ntv1.NodeTask{
			TypeMeta:   metav1.TypeMeta{APIVersion: ntv1.GroupVersion.String(), Kind: "NodeTask"},
			ObjectMeta: metav1.ObjectMeta{Name: "inventory", Namespace: ns},
			Spec: ntv1.NodeTaskSpec{
				NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{poolLabel: pool}},
				Script:       &ntv1.ScriptSpec{Inline: ptr.To("Get-Service kubelet")},
				Rollout:      ntv1.RolloutSpec{MaxFailures: ptr.To(intstr.FromInt32(0))},
			},
		}
		data, err := yaml.Marshal(manifest)
		Expect(err).NotTo(HaveOccurred())
		file := filepath.Join(GinkgoT().TempDir(), "inventory.yaml")
		Expect(os.WriteFile(file, data, 0o644)).To(Succeed())
		run := plugin("", "targets", "-f", file)
		Expect(run.code).To(BeZero())
		rows := targetRows(run.stdout)
		for _, n := range nodes[:3] {
			Expect(rows).To(HaveKeyWithValue(n, "yes -"))
		}
		Expect(rows).To(HaveKeyWithValue(tainted, "no taint dedicated=gpu:NoSchedule not tolerated"))
		Expect(rows).To(HaveKeyWithValue("plugin-linux-0000", "no not a Windows node (kubernetes.io/os=linux)"))
		Expect(rows).To(HaveKeyWithValue("win-0000", "no spec.nodeSelector does not match"))
		Expect(pods(ns)).To(BeEmpty(), "a dry run creates nothing")

		By("wait: exit 0 once Ready; targets agrees with the controller's targets")
		Expect(k8s.Create(ctx, manifest.DeepCopy())).To(Succeed())
		run = plugin("", "wait", "inventory", "-n", ns, "--timeout", "2m")
		Expect(run.code).To(BeZero(), run.stderr)
		Expect(run.stdout).To(ContainSubstring("NodeTask " + ns + "/inventory is Ready"))
		Expect(run.stdout).To(ContainSubstring("3/3 (100%) finished"), "plain progress lines when stdout is not a terminal")
		task := get(manifest)
		var controllerTargets []string
		for _, e := range task.Status.Nodes {
			controllerTargets = append(controllerTargets, e.Name)
		}
		run = plugin("", "targets", "inventory", "-n", ns, "-o", "json")
		Expect(run.code).To(BeZero())
		var decisions []rollout.TargetDecision
		Expect(json.Unmarshal([]byte(run.stdout), &decisions)).To(Succeed())
		var pluginTargets []string
		for _, d := range decisions {
			if d.Target {
				pluginTargets = append(pluginTargets, d.Node)
			}
		}
		Expect(pluginTargets).To(Equal(controllerTargets))
		Expect(pluginTargets).To(Equal(nodes[:3]))

		By("status: the header and one row per node; -o json is the stored status")
		run = plugin("", "status", "inventory", "-n", ns)
		Expect(run.code).To(BeZero())
		Expect(run.stdout).To(ContainSubstring("Targets:     3: 3 succeeded, 0 failed, 0 running, 0 pending"))
		Expect(run.stdout).To(MatchRegexp(`Ready:\s+True`))
		for _, n := range nodes[:3] {
			Expect(run.stdout).To(MatchRegexp(n + `\s+Succeeded\s+0\s+-\s+1\s+\S+\s+simulated run on ` + n + ` exited 0`))
		}
		run = plugin("", "status", "inventory", "-n", ns, "-o", "json")
		var st ntv1.NodeTaskStatus
		Expect(json.Unmarshal([]byte(run.stdout), &st)).To(Succeed())
		Expect(st.Succeeded).To(BeEquivalentTo(3))

		By("logs: the pod log through pods/log while the pod exists, the kept output once it is gone")
		run = plugin("", "logs", "inventory", "-n", ns, "--node", nodes[0])
		Expect(run.code).To(BeZero(), run.stderr)
		Expect(run.stdout).To(ContainSubstring(cluster.ContainerLog))
		start := time.Now()
		run = plugin("", "logs", "inventory", "-n", ns, "--node", nodes[0], "-f")
		Expect(run.code).To(BeZero(), run.stderr)
		Expect(run.stdout).To(ContainSubstring(cluster.ContainerLog))
		Expect(time.Since(start)).To(BeNumerically("<", 30*time.Second), "-f returns at once for a finished pod")
		for _, p := range pods(ns) {
			if p.Spec.NodeName == nodes[0] {
				Expect(k8s.Delete(ctx, &p)).To(Succeed())
			}
		}
		Eventually(func() int {
			n := 0
			for _, p := range pods(ns) {
				if p.Spec.NodeName == nodes[0] {
					n++
				}
			}
			return n
		}).Should(BeZero())
		run = plugin("", "logs", "inventory", "-n", ns, "--node", nodes[0])
		Expect(run.code).To(BeZero(), run.stderr)
		Expect(run.stderr).To(ContainSubstring("is gone; this is the output tail kept in the NodeTask's status"))
		Expect(run.stdout).To(Equal("simulated run on " + nodes[0] + " exited 0\n"))

		By("rerun: nothing without a yes; with --yes, a server-side apply of rerunToken by its own field manager, and a second run")
		run = plugin("n\n", "rerun", "inventory", "-n", ns)
		Expect(run.code).NotTo(BeZero())
		Expect(run.stdout).To(ContainSubstring("will run again (run 2) on 3 nodes"))
		Expect(get(manifest).Spec.RerunToken).To(BeEmpty())
		run = plugin("", "rerun", "inventory", "-n", ns, "--yes")
		Expect(run.code).To(BeZero(), run.stderr)
		task = get(manifest)
		Expect(task.Spec.RerunToken).To(HavePrefix("rerun-"))
		Expect(slices.ContainsFunc(task.ManagedFields, func(f metav1.ManagedFieldsEntry) bool {
			return f.Manager == "kubectl-nodetask" && f.Operation == metav1.ManagedFieldsOperationApply &&
				f.FieldsV1 != nil && strings.Contains(string(f.FieldsV1.Raw), "rerunToken")
		})).To(BeTrue(), "spec.rerunToken is owned by the plugin's field manager")
		run = plugin("", "wait", "inventory", "-n", ns, "--timeout", "2m")
		Expect(run.code).To(BeZero(), run.stderr)
		Expect(get(manifest).Status.Run).To(BeEquivalentTo(2))

		By("wait: exit 1 with the failed nodes when the task stalls, exit 2 on a timeout")
		failing := newTask(ns, "fragile", pool, annotate("sim.nodetask.io/exit-code-"+nodes[1], "5"), func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromInt32(0))
		})
		run = plugin("", "wait", failing.Name, "-n", ns, "--timeout", "2m")
		Expect(run.code).To(Equal(1))
		Expect(run.stdout).To(ContainSubstring("is Stalled (" + ntv1.ReasonFailureBudgetExceeded + ")"))
		Expect(run.stdout).To(MatchRegexp(nodes[1] + `\s+Failed\s+5\s`))
		run = plugin("", "status", failing.Name, "-n", ns, "--failed")
		Expect(run.stdout).To(MatchRegexp(nodes[1] + `\s+Failed\s+5\s`))
		Expect(run.stdout).NotTo(ContainSubstring("Succeeded  "), "--failed shows only failed nodes")
		hanging := newTask(ns, "hanging", pool, annotate("sim.nodetask.io/hang", "true"), func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("100%"))
		})
		start = time.Now()
		run = plugin("", "wait", hanging.Name, "-n", ns, "--timeout", "3s")
		Expect(run.code).To(Equal(2))
		Expect(run.stderr).To(ContainSubstring("timed out after 3s"))
		Expect(time.Since(start)).To(BeNumerically("<", 30*time.Second))

		By("logs of a running pod")
		Eventually(func() ntv1.NodePhase { return entry(hanging, nodes[2]).Phase }).Should(Equal(ntv1.NodeRunning))
		run = plugin("", "logs", hanging.Name, "-n", ns, "--node", nodes[2])
		Expect(run.code).To(BeZero(), run.stderr)
		Expect(run.stdout).To(ContainSubstring(cluster.ContainerLog))

		By("status -A: one line per task")
		run = plugin("", "status", "-A")
		Expect(run.code).To(BeZero())
		Expect(run.stdout).To(MatchRegexp(ns + `\s+fragile\s+1\s+\d/3 \(\d+%\)\s+\d+\s+1\s+\d+\s+Stalled: FailureBudgetExceeded`))
		Expect(run.stdout).To(MatchRegexp(ns + `\s+inventory\s+2\s+3/3 \(100%\)\s+3\s+0\s+0\s+Ready`))
		Expect(run.stdout).To(MatchRegexp(ns + `\s+hanging\s+1\s+0/3 \(0%\)\s+0\s+0\s+3\s+Reconciling: Progressing`))
	})
})
