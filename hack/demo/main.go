// Command demo shows the NodeTask operator at work on a simulated cluster: it starts a local
// control plane with KWOK-simulated Windows and Linux nodes, runs the manager as its own
// process, applies a sample NodeTask, and prints the progress and the per-node results.
// `make demo` runs it; `make demo KEEP=1` leaves everything running for kubectl.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/test/cluster"
)

func main() {
	var (
		opts    cluster.Options
		manager string
		plugin  string
		samples string
		keep    bool
		timeout time.Duration
		sim     simulation
	)
	opts.AddFlags(flag.CommandLine, "bin/demo")
	flag.IntVar(&opts.WindowsNodes, "windows-nodes", 5, "Simulated Windows nodes.")
	flag.IntVar(&opts.LinuxNodes, "linux-nodes", 2, "Simulated Linux nodes.")
	flag.StringVar(&manager, "manager", "bin/manager", "The manager binary.")
	flag.StringVar(&plugin, "plugin", "bin/kubectl-nodetask", "The kubectl plugin binary (make plugin).")
	flag.StringVar(&samples, "sample", "config/samples/nodetask_v1alpha1_inline_script.yaml", "The NodeTask to apply.")
	flag.BoolVar(&keep, "keep", false, "Leave the cluster and the manager running until interrupted.")
	flag.DurationVar(&timeout, "timeout", 3*time.Minute, "How long to wait for the task.")
	flag.StringVar(&sim.exitCode, "simulate-exit-code", "", "Make the simulated nodes exit with this code (a pod annotation only the simulation reads).")
	flag.IntVar(&sim.workloads, "workloads", 0, "Run this many workload pods on the Windows nodes first (for a task that drains).")
	flag.Parse()
	opts.TaintWindows = true
	opts.Log = os.Stdout

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts, manager, plugin, samples, keep, timeout, sim); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

// simulation says what the demo adds for the simulated cluster's sake.
type simulation struct {
	exitCode  string
	workloads int
}

func run(ctx context.Context, opts cluster.Options, manager, plugin, sample string, keep bool, timeout time.Duration, sim simulation) error {
	c, err := cluster.StartFresh(ctx, opts)
	if c != nil {
		defer func() {
			fmt.Println("[demo] stopping the manager, kwok and the control plane")
			_ = c.Stop()
		}()
	}
	if err != nil {
		return err
	}

	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "nodetask-system"}}); err != nil {
		return err
	}
	fmt.Println("[demo] starting the manager as its own process (leader election on); log:", filepath.Join(opts.WorkDir, "manager.log"))
	if _, err := c.StartProcess("manager", manager, "--leader-elect", "--leader-election-namespace=nodetask-system",
		"--metrics-bind-address=0", "--health-probe-bind-address=0"); err != nil {
		return err
	}

	objs, err := readObjects(filepath.Join(filepath.Dir(sample), "namespace.yaml"), sample)
	if err != nil {
		return err
	}
	if err := startWorkloads(ctx, c, sim.workloads); err != nil {
		return err
	}
	var task *unstructured.Unstructured
	for _, obj := range objs {
		if obj.GetKind() == "NodeTask" && sim.exitCode != "" {
			if err := unstructured.SetNestedField(obj.Object, sim.exitCode, "spec", "podAnnotations", "sim.nodetask.io/exit-code"); err != nil {
				return err
			}
			fmt.Printf("[demo] the simulated nodes will exit %s (annotation sim.nodetask.io/exit-code)\n", sim.exitCode)
		}
		fmt.Printf("[demo] applying %s %s\n", obj.GetKind(), obj.GetName())
		if err := c.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		if obj.GetKind() == "NodeTask" {
			task = obj
		}
	}
	if task == nil {
		return fmt.Errorf("%s holds no NodeTask", sample)
	}
	key := client.ObjectKeyFromObject(task)

	fmt.Printf("[demo] watching nodetask/%s in namespace %s\n", key.Name, key.Namespace)
	deadline := time.Now().Add(timeout)
	var last string
	var nt ntv1.NodeTask
	for {
		if err := c.Client.Get(ctx, key, &nt); err != nil {
			return err
		}
		line := progress(&nt)
		if line != last {
			fmt.Printf("  %s  %s\n", time.Now().Format("15:04:05"), line)
			last = line
		}
		ready := meta.IsStatusConditionTrue(nt.Status.Conditions, ntv1.ConditionReady)
		stalled := meta.IsStatusConditionTrue(nt.Status.Conditions, ntv1.ConditionStalled)
		if ready || stalled {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the task is not done after %s; see %s", timeout, filepath.Join(opts.WorkDir, "manager.log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}

	fmt.Println()
	printKubectl(c.Kubeconfig, "get", "nodetasks", "-A", "-o", "wide")
	fmt.Println()
	if nt.Spec.Drain != nil || nt.Spec.Cordon || nt.Spec.Reboot != "" && nt.Spec.Reboot != ntv1.RebootNever {
		printKubectl(c.Kubeconfig, "get", "nodes", "-l", "kubernetes.io/os=windows",
			"-o", "custom-columns=NODE:.metadata.name,UNSCHEDULABLE:.spec.unschedulable,READY:.status.conditions[?(@.type=='Ready')].status,BOOT-ID:.status.nodeInfo.bootID")
		restarts, maxDown := c.Restarts()
		fmt.Printf("Restarts per node: %v; most nodes restarting at once: %d\n", restarts, maxDown)
		var left corev1.PodList
		if err := c.Client.List(ctx, &left, client.InNamespace("shop")); err != nil {
			return err
		}
		fmt.Printf("Workload pods left on the nodes (namespace shop): %d of %d (evicted by the drain)\n\n", len(left.Items), sim.workloads)
	}
	if err := printLinuxUntouched(ctx, c); err != nil {
		return err
	}
	// The per-node results, as a person reads them: the kubectl plugin.
	fmt.Printf("\n$ kubectl nodetask status %s -n %s\n", key.Name, key.Namespace)
	status := exec.CommandContext(ctx, plugin, "--kubeconfig", c.Kubeconfig, "status", key.Name, "-n", key.Namespace)
	status.Stdout, status.Stderr = os.Stdout, os.Stderr
	if err := status.Run(); err != nil {
		return fmt.Errorf("kubectl nodetask status: %w", err)
	}

	if keep {
		fmt.Printf("\nThe cluster and the manager keep running. In another shell:\n\n  export KUBECONFIG=%s\n  kubectl get nodetasks -A -o wide\n  %s status -A\n\nPress Ctrl-C to stop everything.\n", absPath(c.Kubeconfig), absPath(plugin))
		<-ctx.Done()
		return nil
	}
	if !meta.IsStatusConditionTrue(nt.Status.Conditions, ntv1.ConditionReady) {
		return errors.New("the task did not become Ready")
	}
	return nil
}

func progress(nt *ntv1.NodeTask) string {
	st := nt.Status
	cond := meta.FindStatusCondition(st.Conditions, ntv1.ConditionReady)
	ready := "Ready=?"
	if cond != nil {
		ready = fmt.Sprintf("Ready=%s (%s)", cond.Status, cond.Reason)
	}
	return fmt.Sprintf("targets %d  pending %d  running %d  succeeded %d  failed %d  %s",
		st.Targets, st.Pending, st.Running, st.Succeeded, st.Failed, ready)
}

func printLinuxUntouched(ctx context.Context, c *cluster.Cluster) error {
	var pods corev1.PodList
	if err := c.Client.List(ctx, &pods); err != nil {
		return err
	}
	var linux corev1.NodeList
	if err := c.Client.List(ctx, &linux, client.MatchingLabels{corev1.LabelOSStable: "linux"}); err != nil {
		return err
	}
	names := map[string]bool{}
	for _, n := range linux.Items {
		names[n.Name] = true
	}
	onLinux := 0
	for _, p := range pods.Items {
		if names[p.Spec.NodeName] {
			onLinux++
		}
	}
	fmt.Printf("Pods on the %d Linux nodes: %d\n", len(linux.Items), onLinux)
	return nil
}

// startWorkloads runs n pods on the Windows nodes, round robin, as a Deployment's would run:
// a task with spec.drain evicts them.
func startWorkloads(ctx context.Context, c *cluster.Cluster, n int) error {
	if n == 0 {
		return nil
	}
	var nodes corev1.NodeList
	if err := c.Client.List(ctx, &nodes, client.MatchingLabels{corev1.LabelOSStable: "windows"}); err != nil {
		return err
	}
	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	fmt.Printf("[demo] starting %d workload pods in namespace shop on the Windows nodes\n", n)
	for i := range n {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: fmt.Sprintf("web-%d", i), Labels: map[string]string{"app": "web"},
				// The simulated kubelet keeps it running until it is evicted.
				Annotations: map[string]string{"sim.nodetask.io/hang": "true"}},
			Spec: corev1.PodSpec{
				NodeName:    nodes.Items[i%len(nodes.Items)].Name,
				Tolerations: []corev1.Toleration{{Key: "os", Value: "windows", Effect: corev1.TaintEffectNoSchedule}},
				Containers:  []corev1.Container{{Name: "web", Image: "mcr.microsoft.com/windows/servercore/iis:windowsservercore-ltsc2022"}},
			},
		}
		if err := c.Client.Create(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return nil
}

func printKubectl(kubeconfig string, args ...string) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		return
	}
	cmd := exec.Command(kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	fmt.Println("$ kubectl " + strings.Join(args, " "))
	_ = cmd.Run()
}

func readObjects(paths ...string) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := reader.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, err
			}
			obj := &unstructured.Unstructured{}
			if err := utilyaml.Unmarshal(doc, &obj.Object); err != nil {
				return nil, err
			}
			if obj.GetKind() != "" {
				objs = append(objs, obj)
			}
		}
	}
	return objs, nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
