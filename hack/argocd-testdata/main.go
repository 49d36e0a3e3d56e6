// Command argocd-testdata drives NodeTasks on the simulated cluster (a real control plane,
// KWOK-simulated Windows nodes, the manager as its own process) into every state a GitOps
// tool must tell apart, and writes each object, as `kubectl get -o yaml` shows it less its
// managedFields, into the Argo CD health check's testdata folder. `make argocd-testdata`
// runs it; the health check's tests and the kstatus conformance test read the files.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/test/cluster"
)

const (
	poolLabel = "gitops.nodetask.io/pool"
	namespace = "windows-ops"
)

func main() {
	var (
		opts    cluster.Options
		manager string
		out     string
	)
	opts.AddFlags(flag.CommandLine, "bin/argocd-testdata")
	flag.StringVar(&manager, "manager", "bin/manager", "The manager binary.")
	flag.StringVar(&out, "out", "integrations/argocd/resource_customizations/nodetask.io/NodeTask/testdata", "Folder to write the objects into.")
	flag.Parse()
	opts.Log = os.Stdout

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts, manager, out); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-testdata failed:", err)
		os.Exit(1)
	}
}

// gen holds the running cluster and the folder the objects go to.
type gen struct {
	c   *cluster.Cluster
	out string
}

func run(ctx context.Context, opts cluster.Options, manager, out string) error {
	c, err := cluster.StartFresh(ctx, opts)
	if c != nil {
		defer func() { _ = c.Stop() }()
	}
	if err != nil {
		return err
	}
	g := &gen{c: c, out: out}
	for _, ns := range []struct{ name, level string }{{namespace, "privileged"}, {"baseline-ns", "baseline"}, {"nodetask-system", "privileged"}} {
		if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.name,
			Labels: map[string]string{"pod-security.kubernetes.io/enforce": ns.level}}}); err != nil {
			return err
		}
	}
	for _, pool := range []string{"fleet", "flaky", "slow", "paused", "fragile", "mixed", "audit", "drift", "gated"} {
		for i := range 3 {
			if err := c.AddNode(ctx, fmt.Sprintf("%s-%d", pool, i), "windows", map[string]string{poolLabel: pool}); err != nil {
				return err
			}
		}
	}
	for i := range 2 {
		if err := c.AddNode(ctx, fmt.Sprintf("guarded-%d", i), "windows", map[string]string{poolLabel: "guarded"}); err != nil {
			return err
		}
	}
	if err := c.AddNode(ctx, "waiting-0", "windows", map[string]string{poolLabel: "waiting"}); err != nil {
		return err
	}
	// A Windows node no kubelet (no KWOK) reports for: it never becomes Ready.
	if err := c.Client.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "waiting-1", Labels: map[string]string{
		corev1.LabelOSStable: "windows", poolLabel: "waiting"}}}); err != nil {
		return err
	}
	if err := c.WaitNodesReady(ctx, 9*3+2+1, 2*time.Minute); err != nil {
		return err
	}
	// The object the health check of health-check-failing.yaml reads. No scheduler runs, so
	// its pod stays Pending and status.availableReplicas stays unset: the check never holds.
	if err := c.Client.Create(ctx, ingressDeployment()); err != nil {
		return err
	}
	mgr, err := c.StartProcess("manager", manager, "--leader-elect", "--leader-election-namespace=nodetask-system",
		"--metrics-bind-address=0", "--health-probe-bind-address=0")
	if err != nil {
		return err
	}

	steps := []struct {
		file  string
		task  *ntv1.NodeTask
		until func(*ntv1.NodeTask) bool
		then  func(*ntv1.NodeTask) error
	}{
		{"healthy.yaml", task("node-inventory", "fleet"), condition(ntv1.ConditionReady, ntv1.ReasonSucceeded), nil},
		{"healthy-with-failures.yaml", task("tls-rotation", "mixed", simulate("sim.nodetask.io/exit-code-mixed-1", "5"), func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromInt32(1))
		}), condition(ntv1.ConditionReady, ntv1.ReasonSucceeded), nil},
		{"audit-noncompliant.yaml", task("audit-firewall", "audit", simulate("sim.nodetask.io/check-exit-code-audit-1", "1"), func(t *ntv1.NodeTask) {
			t.Spec.Script, t.Spec.Mode = nil, ntv1.ModeAudit
			t.Spec.Check = &ntv1.CheckSpec{Inline: ptr.To("if ((Get-NetFirewallProfile -Name Domain).Enabled) { exit 0 }; exit 1")}
		}), condition(ntv1.ConditionReady, ntv1.ReasonNonCompliant), nil},
		{"remediated.yaml", task("enforce-firewall", "drift", simulate("sim.nodetask.io/check-exit-code-drift-1", "1"), func(t *ntv1.NodeTask) {
			t.Spec.Script = &ntv1.ScriptSpec{Inline: ptr.To("Set-NetFirewallProfile -Name Domain -Enabled True")}
			t.Spec.Check = &ntv1.CheckSpec{Inline: ptr.To("if ((Get-NetFirewallProfile -Name Domain).Enabled) { exit 0 }; exit 1")}
		}), condition(ntv1.ConditionReady, ntv1.ReasonSucceeded), nil},
		{"progressing.yaml", task("install-agent", "slow", simulate("sim.nodetask.io/duration", "1h"), func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
		}), func(t *ntv1.NodeTask) bool { return t.Status.Running == 1 }, nil},
		{"awaiting-approval.yaml", task("cumulative-update", "gated", func(t *ntv1.NodeTask) {
			t.Spec.Rollout.FirstBatch = ptr.To(intstr.FromInt32(1))
			t.Spec.Rollout.PauseAfterFirstBatch = true
		}), condition(ntv1.ConditionReconciling, ntv1.ReasonAwaitingApproval), nil},
		{"health-check-failing.yaml", task("rotate-certificates", "guarded", func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
			t.Spec.Rollout.HealthChecks = []ntv1.HealthCheck{{
				Name:       "ingress-available",
				Object:     ntv1.HealthCheckObject{APIVersion: "apps/v1", Kind: "Deployment", Name: "ingress"},
				Expression: "has(object.status.availableReplicas) && object.status.availableReplicas >= 1",
			}}
		}), func(t *ntv1.NodeTask) bool {
			// Evaluated (not "not evaluated yet"): the Deployment was read and the expression is false.
			return condition(ntv1.ConditionReconciling, ntv1.ReasonHealthCheckFailing)(t) && t.Status.Rollout != nil &&
				len(t.Status.Rollout.HealthChecks) == 1 && t.Status.Rollout.HealthChecks[0].Message == "the expression is false"
		}, nil},
		{"retry-backoff.yaml", task("set-registry", "flaky", simulate("sim.nodetask.io/exit-code", "1"), func(t *ntv1.NodeTask) {
			t.Spec.NodeNames = []string{"flaky-0"}
			t.Spec.Retries = ptr.To[int32](3)
		}), condition(ntv1.ConditionReconciling, ntv1.ReasonRetryBackoff), nil},
		{"waiting-for-nodes.yaml", task("collect-logs", "waiting"), condition(ntv1.ConditionReconciling, ntv1.ReasonWaitingForNodes), nil},
		{"failure-budget-exceeded.yaml", task("patch-kb", "fragile", simulate("sim.nodetask.io/exit-code", "3", "sim.nodetask.io/message", "KB5034439 failed to install: 0x80070643"), func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
		}), condition(ntv1.ConditionStalled, ntv1.ReasonFailureBudgetExceeded), nil},
		{"pod-security-rejected.yaml", task("not-privileged", "fleet", func(t *ntv1.NodeTask) { t.Namespace = "baseline-ns" }),
			condition(ntv1.ConditionStalled, ntv1.ReasonPodSecurityRejected), nil},
		{"configmap-missing.yaml", task("from-configmap", "fleet", func(t *ntv1.NodeTask) {
			t.Spec.Script = &ntv1.ScriptSpec{ConfigMapKeyRef: &ntv1.ConfigMapKeyReference{Name: "node-scripts", Key: "harden.ps1"}}
		}), condition(ntv1.ConditionStalled, ntv1.ReasonConfigMapNotFound), nil},
		{"no-targets.yaml", task("gpu-drivers", "gpu"), condition(ntv1.ConditionReady, ntv1.ReasonNoTargets), nil},
		{"suspended.yaml", task("defender-scan", "paused", simulate("sim.nodetask.io/duration", "2s"), func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(1))
		}), func(t *ntv1.NodeTask) bool { return t.Status.Succeeded >= 1 }, func(t *ntv1.NodeTask) error {
			// Suspended, with the running pod finished: nothing is in flight.
			return g.update(ctx, t, func(t *ntv1.NodeTask) { t.Spec.Suspend = true }, func(t *ntv1.NodeTask) bool {
				c := meta.FindStatusCondition(t.Status.Conditions, ntv1.ConditionReconciling)
				return condition(ntv1.ConditionReady, ntv1.ReasonSuspended)(t) && c != nil && c.Status == metav1.ConditionFalse
			})
		}},
	}
	for _, s := range steps {
		fmt.Println("[argocd-testdata]", s.file)
		if err := c.Client.Create(ctx, s.task); err != nil {
			return err
		}
		if err := g.wait(ctx, s.task, s.until); err != nil {
			return fmt.Errorf("%s: %w", s.file, err)
		}
		if s.then != nil {
			if err := s.then(s.task); err != nil {
				return fmt.Errorf("%s: %w", s.file, err)
			}
		}
		if err := g.write(ctx, s.task, s.file); err != nil {
			return err
		}
	}

	// With the manager stopped, a new task has no status yet, and a changed spec is not observed.
	if err := mgr.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if err := mgr.Wait(30 * time.Second); err != nil {
		return err
	}
	fresh := task("first-apply", "fleet")
	if err := c.Client.Create(ctx, fresh); err != nil {
		return err
	}
	if err := g.write(ctx, fresh, "new.yaml"); err != nil {
		return err
	}
	healthy := steps[0].task
	if err := g.update(ctx, healthy, func(t *ntv1.NodeTask) { t.Spec.RerunToken = "2026-11-28" }, nil); err != nil {
		return err
	}
	return g.write(ctx, healthy, "spec-changed.yaml")
}

// task is a NodeTask in the gitops namespace that selects one pool.
func task(name, pool string, mutate ...func(*ntv1.NodeTask)) *ntv1.NodeTask {
	t := &ntv1.NodeTask{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: ntv1.NodeTaskSpec{
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{poolLabel: pool}},
			Script:       &ntv1.ScriptSpec{Inline: ptr.To("Get-Service kubelet | Format-List Name,Status")},
			Rollout:      ntv1.RolloutSpec{MaxConcurrent: ptr.To(intstr.FromString("100%"))},
		},
	}
	for _, m := range mutate {
		m(t)
	}
	return t
}

// ingressDeployment is a Deployment in the gitops namespace for a health check to read.
func ingressDeployment() *appsv1.Deployment {
	labels := map[string]string{"app": "ingress"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "ingress", Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{corev1.LabelOSStable: "linux"},
					Containers:   []corev1.Container{{Name: "ingress", Image: "registry.k8s.io/ingress-nginx/controller:v1.12.0"}},
				},
			},
		},
	}
}

// simulate sets pod annotations that choose the simulated outcome (test/kwok/windows-kubelet.yaml).
func simulate(kv ...string) func(*ntv1.NodeTask) {
	return func(t *ntv1.NodeTask) {
		if t.Spec.PodAnnotations == nil {
			t.Spec.PodAnnotations = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			t.Spec.PodAnnotations[kv[i]] = kv[i+1]
		}
	}
}

// condition is true once the task's condition of this type has this reason, for the
// generation the task has now.
func condition(typ, reason string) func(*ntv1.NodeTask) bool {
	return func(t *ntv1.NodeTask) bool {
		c := meta.FindStatusCondition(t.Status.Conditions, typ)
		return c != nil && c.Reason == reason && t.Status.ObservedGeneration == t.Generation
	}
}

func (g *gen) wait(ctx context.Context, t *ntv1.NodeTask, until func(*ntv1.NodeTask) bool) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := g.c.Client.Get(ctx, client.ObjectKeyFromObject(t), t); err != nil {
			return err
		}
		if until(t) {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the task did not reach the state in 2 minutes")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (g *gen) update(ctx context.Context, t *ntv1.NodeTask, mutate func(*ntv1.NodeTask), until func(*ntv1.NodeTask) bool) error {
	for {
		if err := g.c.Client.Get(ctx, client.ObjectKeyFromObject(t), t); err != nil {
			return err
		}
		mutate(t)
		err := g.c.Client.Update(ctx, t)
		if err == nil {
			break
		}
		if !apierrors.IsConflict(err) {
			return err
		}
	}
	if until == nil {
		return nil
	}
	return g.wait(ctx, t, until)
}

// write stores the object as `kubectl get -o yaml` shows it, without managedFields: read as
// unstructured, so that every field the API server returns (defaults included) is kept.
func (g *gen) write(ctx context.Context, t *ntv1.NodeTask, file string) error {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(ntv1.GroupVersion.WithKind("NodeTask"))
	if err := g.c.Client.Get(ctx, client.ObjectKeyFromObject(t), u); err != nil {
		return err
	}
	unstructured.RemoveNestedField(u.Object, "metadata", "managedFields")
	b, err := yaml.Marshal(u.Object)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(g.out, file), b, 0o644)
}
