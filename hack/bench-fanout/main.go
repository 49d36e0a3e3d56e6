// Command bench-fanout measures how fast work fans out to N simulated Windows nodes, one
// contender after the other on the same cluster: a bare client (the API server's limit:
// pods bound by nodeName, 16 workers, no client-side rate limit), a DaemonSet at
// kube-controller-manager's and kube-scheduler's defaults, and a NodeTask with the manager at
// its defaults. Times come from watches started (and synced) before each contender's work is
// applied. It prints one table with each contender's ratio to the bare client.
// `make bench-fanout N=1000`; not part of CI (it takes minutes).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/test/cluster"
)

// managerArgs are extra manager flags.
var managerArgs stringList

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var (
		opts    cluster.Options
		manager string
		n       int
	)
	flag.StringVar(&opts.AssetsDir, "assets", "bin/k8s/1.37.2", "Folder with kube-apiserver, etcd, kube-controller-manager and kube-scheduler.")
	flag.StringVar(&opts.KwokBinary, "kwok", "bin/kwok-v0.8.0", "The kwok binary.")
	flag.StringVar(&opts.KwokConfig, "kwok-config", "test/kwok/windows-kubelet.yaml", "KWOK stages that play a Windows kubelet.")
	flag.StringVar(&opts.CRDDir, "crds", "config/crd/bases", "Folder with the CRDs.")
	flag.StringVar(&opts.WorkDir, "work-dir", "bin/bench-fanout", "Folder for the kubeconfig and the logs.")
	flag.StringVar(&manager, "manager", "bin/manager", "The manager binary.")
	flag.IntVar(&n, "nodes", 1000, "Simulated Windows nodes.")
	flag.Var(&managerArgs, "manager-arg", "An extra manager flag (repeatable), to compare settings with the defaults.")
	flag.Parse()
	opts.WindowsNodes = n
	opts.Log = os.Stderr
	// nodelifecycle removes the not-ready taint the API server gives a new node, as in a real
	// cluster; without it no DaemonSet pod would be placed.
	opts.ExtraControllers = []string{"daemonset", "nodelifecycle"}
	opts.Scheduler = filepath.Join(opts.AssetsDir, "kube-scheduler")
	opts.DefaultClientLimits = true

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := run(ctx, opts, manager, n); err != nil {
		fmt.Fprintln(os.Stderr, "bench-fanout:", err)
		os.Exit(1)
	}
}

// result is one contender's times, from the moment its work was applied.
type result struct {
	name            string
	created, ended  time.Duration
	endedWhat       string
	ready           time.Duration
	writes, written float64
	peakRSS         int64
	// objectBytes is the NodeTask's size as the API server sends it once Ready.
	objectBytes int
}

func run(ctx context.Context, opts cluster.Options, manager string, n int) error {
	start := time.Now()
	c, err := cluster.StartFresh(ctx, opts)
	if c != nil {
		defer c.Stop()
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "[bench] %d Windows nodes Ready after %s\n", n, time.Since(start).Round(time.Second))
	if err := waitUntainted(ctx, c); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "[bench] no node has the not-ready taint after %s\n", time.Since(start).Round(time.Second))
	var results []result

	bare, err := benchBare(ctx, c, n)
	if err != nil {
		return err
	}
	results = append(results, bare)
	ds, err := benchDaemonSet(ctx, c, n)
	if err != nil {
		return err
	}
	results = append(results, ds)
	nt, err := benchNodeTask(ctx, c, manager, n)
	if err != nil {
		return err
	}
	results = append(results, nt)

	fmt.Printf("\nFan-out to %d simulated Windows nodes (%s, %d CPUs, %s)\n\n", n, time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.GOOS)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "contender\tpods created (s)\tvs bare\tall pods finished (s)\tvs bare\tReady (s)")
	for _, r := range results {
		ready := "-"
		if r.ready > 0 {
			ready = fmt.Sprintf("%.1f", r.ready.Seconds())
		}
		fmt.Fprintf(w, "%s\t%.1f\t%.2fx\t%.1f%s\t%.2fx\t%s\n", r.name, r.created.Seconds(), ratio(r.created, bare.created),
			r.ended.Seconds(), r.endedWhat, ratio(r.ended, bare.ended), ready)
	}
	_ = w.Flush()
	if len(managerArgs) > 0 {
		fmt.Printf("\nManager flags besides the defaults: %s", managerArgs.String())
	}
	fmt.Printf("\nNodeTask: %.0f status writes, %.0f KB written, the object %d KB once Ready; manager peak RSS %d MiB\n",
		nt.writes, nt.written/1024, nt.objectBytes>>10, nt.peakRSS>>20)
	fmt.Println("(A DaemonSet's pods never finish: its \"finished\" column is the time until all ran.)")
	return nil
}

// waitUntainted removes the not-ready taint the API server gives every new node from the
// nodes that are Ready, as the node lifecycle controller does (which at its default 20 QPS
// takes minutes for 1000 nodes), and waits until none is left: a settled cluster, as the
// contenders would meet it.
func waitUntainted(ctx context.Context, c *cluster.Cluster) error {
	for deadline := time.Now().Add(10 * time.Minute); ; {
		var nodes corev1.NodeList
		if err := c.Client.List(ctx, &nodes); err != nil {
			return err
		}
		var tainted []*corev1.Node
		for i := range nodes.Items {
			for _, t := range nodes.Items[i].Spec.Taints {
				if t.Key == corev1.TaintNodeNotReady {
					tainted = append(tainted, &nodes.Items[i])
				}
			}
		}
		if len(tainted) == 0 {
			return nil
		}
		work := make(chan *corev1.Node)
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for node := range work {
					base := node.DeepCopy()
					node.Spec.Taints = slices.DeleteFunc(node.Spec.Taints, func(t corev1.Taint) bool { return t.Key == corev1.TaintNodeNotReady })
					// Conflicts are left for the next round.
					_ = c.Client.Patch(ctx, node, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
				}
			})
		}
		for _, node := range tainted {
			work <- node
		}
		close(work)
		wg.Wait()
		if time.Now().After(deadline) {
			return fmt.Errorf("%d nodes still have the %s taint", len(tainted), corev1.TaintNodeNotReady)
		}
		time.Sleep(time.Second)
	}
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return a.Seconds() / b.Seconds()
}

// podWatch records, from an informer synced before the work starts, when the last of n pods
// in a namespace appeared and when the last reached one of the phases. An informer, not a
// bare watch: under this load the API server may close a watch it finds slow, and the
// informer's reflector watches again where it stopped.
type podWatch struct {
	mu                 sync.Mutex
	seen, done         map[string]bool
	lastSeen, lastDone time.Time
	n                  int
	phases             map[corev1.PodPhase]bool
	fin                chan struct{}
	finOnce            sync.Once
	stop               context.CancelFunc
}

func watchPods(ctx context.Context, cs kubernetes.Interface, ns string, n int, phases ...corev1.PodPhase) (*podWatch, error) {
	pw := &podWatch{seen: map[string]bool{}, done: map[string]bool{}, n: n, phases: map[corev1.PodPhase]bool{},
		fin: make(chan struct{})}
	for _, p := range phases {
		pw.phases[p] = true
	}
	ctx, pw.stop = context.WithCancel(ctx)
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	inf := factory.Core().V1().Pods().Informer()
	on := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		now := time.Now()
		pw.mu.Lock()
		defer pw.mu.Unlock()
		if !pw.seen[pod.Name] {
			pw.seen[pod.Name], pw.lastSeen = true, now
		}
		if pw.phases[pod.Status.Phase] && !pw.done[pod.Name] {
			pw.done[pod.Name], pw.lastDone = true, now
		}
		if len(pw.done) >= n {
			pw.finOnce.Do(func() { close(pw.fin) })
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: on, UpdateFunc: func(_, o any) { on(o) }}); err != nil {
		return nil, err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil, fmt.Errorf("the pod informer of namespace %s did not sync", ns)
	}
	return pw, nil
}

func (pw *podWatch) wait(ctx context.Context, timeout time.Duration) error {
	defer pw.stop()
	select {
	case <-pw.fin:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(timeout):
		pw.mu.Lock()
		defer pw.mu.Unlock()
		return fmt.Errorf("after %s: %d pods seen, %d finished of %d", timeout, len(pw.seen), len(pw.done), pw.n)
	}
}

func (pw *podWatch) times(t0 time.Time) (created, ended time.Duration) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	return pw.lastSeen.Sub(t0), pw.lastDone.Sub(t0)
}

func windowsNodes(ctx context.Context, c *cluster.Cluster) ([]string, error) {
	var nodes corev1.NodeList
	if err := c.Client.List(ctx, &nodes, client.MatchingLabels{corev1.LabelOSStable: "windows"}); err != nil {
		return nil, err
	}
	names := make([]string, len(nodes.Items))
	for i := range nodes.Items {
		names[i] = nodes.Items[i].Name
	}
	return names, nil
}

func namespace(ctx context.Context, c *cluster.Cluster, name string) error {
	return c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "privileged"}}})
}

// clearPods deletes a contender's pods at once, so that the next one starts on idle nodes.
func clearPods(ctx context.Context, c *cluster.Cluster, ns string) error {
	return c.Client.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns), client.GracePeriodSeconds(0))
}

// hostProcessPod is the shape of pod every contender runs: a HostProcess container that
// runs one second (the KWOK stages' default) and exits 0.
func hostProcessPod(name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName:      node,
			RestartPolicy: corev1.RestartPolicyNever,
			HostNetwork:   true,
			OS:            &corev1.PodOS{Name: corev1.Windows},
			SecurityContext: &corev1.PodSecurityContext{WindowsOptions: &corev1.WindowsSecurityContextOptions{
				HostProcess: ptr.To(true), RunAsUserName: ptr.To(ntv1.DefaultRunAsUserName)}},
			Containers: []corev1.Container{{Name: "task", Image: ntv1.DefaultScriptImage,
				Command: []string{"powershell.exe", "-Command", "exit 0"}}},
		},
	}
}

func benchBare(ctx context.Context, c *cluster.Cluster, n int) (result, error) {
	const ns = "bench-bare"
	if err := namespace(ctx, c, ns); err != nil {
		return result{}, err
	}
	cfg := rest.CopyConfig(c.Config)
	cfg.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter() // no client-side limit
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return result{}, err
	}
	nodes, err := windowsNodes(ctx, c)
	if err != nil {
		return result{}, err
	}
	pw, err := watchPods(ctx, cs, ns, n, corev1.PodSucceeded, corev1.PodFailed)
	if err != nil {
		return result{}, err
	}
	fmt.Fprintln(os.Stderr, "[bench] bare client: 16 workers, no rate limit")
	t0 := time.Now()
	work := make(chan string)
	var wg sync.WaitGroup
	var errs []error
	var mu sync.Mutex
	for range 16 {
		wg.Go(func() {
			for node := range work {
				pod := hostProcessPod("bare-"+node, node)
				if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, node := range nodes {
		work <- node
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		return result{}, fmt.Errorf("%d creates failed, the first: %w", len(errs), errs[0])
	}
	if err := pw.wait(ctx, 10*time.Minute); err != nil {
		return result{}, err
	}
	created, ended := pw.times(t0)
	return result{name: "bare client", created: created, ended: ended}, clearPods(ctx, c, ns)
}

func benchDaemonSet(ctx context.Context, c *cluster.Cluster, n int) (result, error) {
	const ns = "bench-daemonset"
	if err := namespace(ctx, c, ns); err != nil {
		return result{}, err
	}
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return result{}, err
	}
	pw, err := watchPods(ctx, cs, ns, n, corev1.PodRunning)
	if err != nil {
		return result{}, err
	}
	tmpl := hostProcessPod("", "")
	tmpl.Spec.NodeName, tmpl.Spec.RestartPolicy = "", corev1.RestartPolicyAlways
	tmpl.Spec.NodeSelector = map[string]string{corev1.LabelOSStable: "windows"}
	labels := map[string]string{"app": "bench"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bench"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				// A DaemonSet's pod runs on: the simulated kubelet keeps it running.
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{"sim.nodetask.io/hang": "true"}},
				Spec:       tmpl.Spec,
			},
		},
	}
	fmt.Fprintln(os.Stderr, "[bench] DaemonSet: kube-controller-manager and kube-scheduler at their defaults")
	t0 := time.Now()
	if err := c.Client.Create(ctx, ds); err != nil {
		return result{}, err
	}
	if err := pw.wait(ctx, 15*time.Minute); err != nil {
		return result{}, err
	}
	created, ended := pw.times(t0)
	if err := c.Client.Delete(ctx, ds); err != nil {
		return result{}, err
	}
	return result{name: "DaemonSet", created: created, ended: ended, endedWhat: " (running)"}, clearPods(ctx, c, ns)
}

func benchNodeTask(ctx context.Context, c *cluster.Cluster, manager string, n int) (result, error) {
	const ns = "bench-nodetask"
	if err := namespace(ctx, c, ns); err != nil {
		return result{}, err
	}
	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "nodetask-system"}}); err != nil {
		return result{}, err
	}
	probe, err := cluster.FreeAddr()
	if err != nil {
		return result{}, err
	}
	metricsAddr, err := cluster.FreeAddr()
	if err != nil {
		return result{}, err
	}
	args := append([]string{"--leader-elect", "--leader-election-namespace=nodetask-system",
		"--metrics-bind-address=" + metricsAddr, "--metrics-secure=false", "--health-probe-bind-address=" + probe}, managerArgs...)
	proc, err := c.StartProcess("manager", manager, args...)
	if err != nil {
		return result{}, err
	}
	// Caches synced before the work is applied, as for the other contenders.
	if err := waitHTTP(ctx, "http://"+probe+"/readyz", 2*time.Minute); err != nil {
		return result{}, err
	}
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return result{}, err
	}
	pw, err := watchPods(ctx, cs, ns, n, corev1.PodSucceeded, corev1.PodFailed)
	if err != nil {
		return result{}, err
	}
	task := &ntv1.NodeTask{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bench"},
		Spec: ntv1.NodeTaskSpec{
			Script:  &ntv1.ScriptSpec{Inline: ptr.To("exit 0")},
			Rollout: ntv1.RolloutSpec{MaxConcurrent: ptr.To(intstr.FromString("100%"))},
		},
	}
	with := ""
	if len(managerArgs) > 0 {
		with = " and " + managerArgs.String()
	}
	fmt.Fprintf(os.Stderr, "[bench] NodeTask: the manager at its defaults%s, maxConcurrent 100%%\n", with)
	t0 := time.Now()
	if err := c.Client.Create(ctx, task); err != nil {
		return result{}, err
	}
	if err := pw.wait(ctx, 15*time.Minute); err != nil {
		return result{}, err
	}
	created, ended := pw.times(t0)
	var ready time.Duration
	for deadline := time.Now().Add(5 * time.Minute); ; {
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(task), task); err != nil {
			return result{}, err
		}
		if meta.IsStatusConditionTrue(task.Status.Conditions, ntv1.ConditionReady) {
			ready = time.Since(t0)
			break
		}
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("the NodeTask is not Ready 5 minutes after its pods finished")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := result{name: "NodeTask", created: created, ended: ended, ready: ready, peakRSS: peakRSS(proc.Pid())}
	if raw, err := cs.RESTClient().Get().AbsPath("/apis/nodetask.io/v1alpha1/namespaces", ns, "nodetasks", task.Name).DoRaw(ctx); err == nil {
		r.objectBytes = len(raw)
	}
	m, err := scrape("http://" + metricsAddr + "/metrics")
	if err != nil {
		return result{}, err
	}
	r.writes, r.written = m["nodetask_status_writes_total"], m["nodetask_status_write_bytes_total"]
	proc.Stop(10 * time.Second)
	return r, nil
}

func waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url) //nolint:gosec // loopback
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s", url, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// scrape reads the unlabelled samples of a Prometheus text endpoint.
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url) //nolint:gosec // loopback
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// peakRSS reads the process's peak resident set size (VmHWM) from /proc.
func peakRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	data, _ := io.ReadAll(f)
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
