// Command bench-fanout measures how fast work fans out to N simulated Windows nodes, one
// contender after the other on the same cluster: a bare client (the API server's limit:
// pods bound by nodeName, 16 workers, no client-side rate limit), a DaemonSet at
// kube-controller-manager's and kube-scheduler's defaults, and a NodeTask with the manager at
// its defaults. Times come from watches started (and synced) before each contender's work is
// applied. It prints one table with each contender's ratio to the bare client, then what the
// NodeTask's status writes cost until Ready (writes, bytes written per byte of the final
// objects, Ready's lag after the last pod, the longest time a watcher saw no new progress).
// `make bench-fanout N=1000`; not part of CI (it takes minutes).
//
// With --schedules K it measures NodeTaskSchedules instead: K schedules that fire at the same
// minute, each running on every one of the N nodes, and prints the time from the fire minute
// until every run is Ready, the manager's peak RSS and CPU, and the API requests
// (`make bench-schedules`; see runSchedules).
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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
	"github.com/nodetask/nodetask-operator/test/cluster"
)

// managerArgs are extra manager flags; compareArgs, when set, add a second NodeTask
// contender with these flags on top, to compare two settings in the same rounds.
var managerArgs, compareArgs stringList

// roundsFlag is how many times the fast contenders run; skipDaemonSet leaves the DaemonSet
// out, skipBareTaskPods the bare client with the task's pods.
var (
	roundsFlag       int
	skipDaemonSet    bool
	skipBareTaskPods bool
)

// profileDir, when set, receives the manager's CPU profile of the first profileSeconds after
// the task is created, and its heap profile once the task is Ready.
var (
	profileDir     string
	profileSeconds int
)

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var (
		opts    cluster.Options
		manager string
		n       int
		k       int
	)
	opts.AddFlags(flag.CommandLine, "bin/bench-fanout")
	flag.StringVar(&manager, "manager", "bin/manager", "The manager binary.")
	flag.IntVar(&n, "nodes", 1000, "Simulated Windows nodes.")
	flag.StringVar(&profileDir, "profile-dir", "", "Write the manager's CPU profile (cpu.pprof) and its heap profile once Ready (heap.pprof) here, in the first round (with --schedules: from the fire minute, and once every run is Ready); not under --work-dir, which the next run clears.")
	flag.IntVar(&profileSeconds, "profile-seconds", 15, "Length of the manager's CPU profile, from the task's creation.")
	flag.IntVar(&roundsFlag, "rounds", 1, "Run the bare clients and the NodeTask this many times and show the medians (single runs on a small machine vary by a third).")
	flag.BoolVar(&skipDaemonSet, "skip-daemonset", false, "Leave the DaemonSet out (it takes 50 s at 1000 nodes).")
	flag.BoolVar(&skipBareTaskPods, "skip-bare-taskpods", false, "Leave out the bare client with the task's pods (the bare client with the smallest pod stays: the ratios are to it).")
	flag.Var(&managerArgs, "manager-arg", "An extra manager flag (repeatable), to compare settings with the defaults.")
	flag.Var(&compareArgs, "compare-manager-arg", "A manager flag (repeatable) for a second NodeTask contender run in the same rounds.")
	flag.IntVar(&k, "schedules", 0, "Instead of the fan-out contenders, this many NodeTaskSchedules firing at the same minute on every node (no kube-scheduler needed).")
	flag.Parse()
	// The API server's warnings to the benchmark's clients, if any, go to standard error.
	ctrllog.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	opts.WindowsNodes = n
	opts.Log = os.Stderr
	// nodelifecycle removes the not-ready taint the API server gives a new node, as in a real
	// cluster; without it no DaemonSet pod would be placed.
	opts.ExtraControllers = []string{"daemonset", "nodelifecycle"}
	opts.Scheduler = filepath.Join(opts.AssetsDir, "kube-scheduler")
	opts.DefaultClientLimits = true

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if k > 0 {
		// NodeTask pods are bound by nodeName: no scheduler, and no DaemonSet.
		opts.ExtraControllers, opts.Scheduler = []string{"nodelifecycle"}, ""
		if err := runSchedules(ctx, opts, manager, n, k); err != nil {
			fmt.Fprintln(os.Stderr, "bench-fanout:", err)
			os.Exit(1)
		}
		return
	}
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
	// The NodeTask's status writes: sliceWrites and sliceWritten are the writes of its
	// NodeResultSlices (and their bytes), slices and sliceBytes the slices it has once Ready
	// and their size; status is what the writes cost and what a watcher of the task saw.
	sliceWrites, sliceWritten float64
	slices, sliceBytes        int
	status                    statusCost
	// cpu is the CPU time each process used from the start until the last pod appeared.
	cpu cpuSample
	// each lists the creation time of every round, for the median's result.
	each string
}

// medians returns, for each contender of the rounds (in the first round's order), the median
// of each of its measures over the rounds it ran in.
func medians(rounds [][]result) []result {
	var out []result
	for _, first := range rounds[0] {
		var runs []result
		for _, round := range rounds {
			for _, r := range round {
				if r.name == first.name {
					runs = append(runs, r)
				}
			}
		}
		m := first
		m.created = median(runs, func(r result) time.Duration { return r.created })
		m.ended = median(runs, func(r result) time.Duration { return r.ended })
		m.ready = median(runs, func(r result) time.Duration { return r.ready })
		m.writes = float64(median(runs, func(r result) time.Duration { return time.Duration(r.writes) }))
		m.written = float64(median(runs, func(r result) time.Duration { return time.Duration(r.written) }))
		m.objectBytes = int(median(runs, func(r result) time.Duration { return time.Duration(r.objectBytes) }))
		m.sliceWrites = float64(median(runs, func(r result) time.Duration { return time.Duration(r.sliceWrites) }))
		m.sliceWritten = float64(median(runs, func(r result) time.Duration { return time.Duration(r.sliceWritten) }))
		m.slices = int(median(runs, func(r result) time.Duration { return time.Duration(r.slices) }))
		m.sliceBytes = int(median(runs, func(r result) time.Duration { return time.Duration(r.sliceBytes) }))
		m.status = medianStatus(runs)
		m.cpu = cpuSample{}
		for name := range first.cpu {
			m.cpu[name] = median(runs, func(r result) time.Duration { return r.cpu[name] })
		}
		var each []string
		for _, r := range runs {
			m.peakRSS = max(m.peakRSS, r.peakRSS)
			each = append(each, fmt.Sprintf("%.1f", r.created.Seconds()))
		}
		m.each = strings.Join(each, " ")
		out = append(out, m)
	}
	return out
}

// median returns the median of one measure (the upper middle of an even count).
func median(runs []result, of func(result) time.Duration) time.Duration {
	values := make([]time.Duration, len(runs))
	for i, r := range runs {
		values[i] = of(r)
	}
	slices.Sort(values)
	return values[len(values)/2]
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
	if err := settle(ctx); err != nil {
		return err
	}
	// Each round runs the bare client, the bare client with the task's pods (unless
	// --skip-bare-taskpods) and the NodeTask once (the DaemonSet, 50 times slower, runs in
	// the first round only); the table shows
	// each contender's median round, and every round's creation time.
	var rounds [][]result
	for round := 1; round <= roundsFlag; round++ {
		var results []result
		bare, err := benchBareMinimal(ctx, c, n, round)
		if err != nil {
			return err
		}
		results = append(results, bare)
		if !skipBareTaskPods {
			taskPods, err := benchBareTaskPods(ctx, c, n, round)
			if err != nil {
				return err
			}
			results = append(results, taskPods)
		}
		if round == 1 && !skipDaemonSet {
			ds, err := benchDaemonSet(ctx, c, n)
			if err != nil {
				return err
			}
			results = append(results, ds)
		}
		if len(compareArgs) > 0 {
			// The variant first in odd rounds, second in even ones, so that neither always
			// meets the cluster the other left behind.
			variant := func() error {
				r, err := benchNodeTask(ctx, c, manager, n, round, "NodeTask, "+compareArgs.String(), append(slices.Clone(managerArgs), compareArgs...))
				results = append(results, r)
				return err
			}
			if round%2 == 1 {
				if err := variant(); err != nil {
					return err
				}
			}
			nt, err := benchNodeTask(ctx, c, manager, n, round, "NodeTask", managerArgs)
			if err != nil {
				return err
			}
			results = append(results, nt)
			if round%2 == 0 {
				if err := variant(); err != nil {
					return err
				}
			}
		} else {
			nt, err := benchNodeTask(ctx, c, manager, n, round, "NodeTask", managerArgs)
			if err != nil {
				return err
			}
			results = append(results, nt)
		}
		rounds = append(rounds, results)
	}
	results := medians(rounds)
	bare := results[0]
	nt := results[slices.IndexFunc(results, func(r result) bool { return r.name == "NodeTask" })]

	fmt.Printf("\nFan-out to %d simulated Windows nodes (%s, %d CPUs, %s)\n\n", n, time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.GOOS)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	header := "contender\tpods created (s)\tvs bare\tall pods finished (s)\tvs bare\tReady (s)"
	if roundsFlag > 1 {
		header += "\tcreated (s), each round"
	}
	fmt.Fprintln(w, header)
	for _, r := range results {
		ready := "-"
		if r.ready > 0 {
			ready = fmt.Sprintf("%.1f", r.ready.Seconds())
		}
		fmt.Fprintf(w, "%s\t%.1f\t%.2fx\t%.1f%s\t%.2fx\t%s", r.name, r.created.Seconds(), ratio(r.created, bare.created),
			r.ended.Seconds(), r.endedWhat, ratio(r.ended, bare.ended), ready)
		if roundsFlag > 1 {
			fmt.Fprintf(w, "\t%s", r.each)
		}
		fmt.Fprintln(w)
	}
	_ = w.Flush()
	if len(managerArgs) > 0 {
		fmt.Printf("\nManager flags besides the defaults: %s", managerArgs.String())
	}
	if roundsFlag > 1 {
		fmt.Printf("\nMedians of %d rounds (the DaemonSet: one round).", roundsFlag)
	}
	fmt.Printf("\nNodeTask: %.0f status writes, %.0f KB written, the object %d KB once Ready; manager peak RSS %d MiB\n",
		nt.writes, nt.written/1024, nt.objectBytes>>10, nt.peakRSS>>20)
	fmt.Println("(A DaemonSet's pods never finish: its \"finished\" column is the time until all ran.)")
	fmt.Println()
	printStatusCost(os.Stdout, results)
	fmt.Println()
	printCPU(os.Stdout, results)
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
	// t0 is when the contender's work was applied; cpu0 and cpu1 are CPU samples taken then
	// and when the last pod appeared.
	t0         time.Time
	cpu0, cpu1 cpuSample
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
			if len(pw.seen) == n {
				pw.cpu1 = sampleCPU()
			}
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

// start marks the moment the contender's work is applied, and returns it.
func (pw *podWatch) start() time.Time {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	pw.t0, pw.cpu0 = time.Now(), sampleCPU()
	return pw.t0
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

// result returns the contender's times since start, and the CPU each process used until the
// last pod appeared.
func (pw *podWatch) result(name string) result {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	return result{name: name, created: pw.lastSeen.Sub(pw.t0), ended: pw.lastDone.Sub(pw.t0), cpu: pw.cpu1.since(pw.cpu0)}
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

// clearPods deletes a contender's pods at once and waits until the cluster has settled, so
// that the next contender starts on idle nodes and an idle control plane, not while the API
// server, kwok and kube-controller-manager still work through thousands of deletions.
func clearPods(ctx context.Context, c *cluster.Cluster, ns string) error {
	// The collection delete of 5000 pods may outlast the API server's request timeout (the
	// stream is then reset): ask again, what was deleted stays deleted.
	for attempt := 1; ; attempt++ {
		err := c.Client.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns), client.GracePeriodSeconds(0))
		if err == nil {
			break
		}
		if attempt == 3 || ctx.Err() != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "[bench] deleting the pods of %s: %v; again\n", ns, err)
		time.Sleep(5 * time.Second)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; {
		var left corev1.PodList
		if err := c.Client.List(ctx, &left, client.InNamespace(ns), client.Limit(1)); err != nil {
			return err
		}
		if len(left.Items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pods of namespace %s still there 2 minutes after their deletion", ns)
		}
		time.Sleep(time.Second)
	}
	return settle(ctx)
}

// settle waits until the benchmark's processes together use less than a quarter of a CPU
// for a second (at most a minute).
func settle(ctx context.Context) error {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		before := sampleCPU()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		var used time.Duration
		for _, d := range sampleCPU().since(before) {
			used += d
		}
		if used < 250*time.Millisecond {
			return nil
		}
	}
	fmt.Fprintln(os.Stderr, "[bench] the cluster did not settle within a minute; going on")
	return nil
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

// benchBare creates one pod per Windows node straight through the API, bound by nodeName,
// with 16 workers and no client-side rate limit: the API server's limit for pods of that
// shape. ns is the namespace the pods go to (made by the caller), pod makes a node's pod.
func benchBare(ctx context.Context, c *cluster.Cluster, name, ns string, n int, pod func(node string) *corev1.Pod) (result, error) {
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
	fmt.Fprintf(os.Stderr, "[bench] %s: 16 workers, no rate limit\n", name)
	pw.start()
	work := make(chan string)
	var wg sync.WaitGroup
	var errs []error
	var mu sync.Mutex
	for range 16 {
		wg.Go(func() {
			for node := range work {
				if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod(node), metav1.CreateOptions{}); err != nil {
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
	return pw.result(name), clearPods(ctx, c, ns)
}

// benchBareMinimal is the bare client with the smallest HostProcess pod.
func benchBareMinimal(ctx context.Context, c *cluster.Cluster, n, round int) (result, error) {
	ns := fmt.Sprintf("bench-bare-%d", round)
	if err := namespace(ctx, c, ns); err != nil {
		return result{}, err
	}
	return benchBare(ctx, c, "bare client", ns, n, func(node string) *corev1.Pod { return hostProcessPod("bare-"+node, node) })
}

// benchBareTaskPods is the bare client creating the very pods the manager makes for the
// benchmark's task (labels, environment, script volume, owner reference): what those pods cost
// the API server, without the controller. The task they belong to is suspended and deleted
// before the manager starts.
func benchBareTaskPods(ctx context.Context, c *cluster.Cluster, n, round int) (result, error) {
	ns := fmt.Sprintf("bench-bare-taskpods-%d", round)
	if err := namespace(ctx, c, ns); err != nil {
		return result{}, err
	}
	task := benchTask(ns)
	task.Spec.Suspend = true
	if err := c.Client.Create(ctx, task); err != nil {
		return result{}, err
	}
	builder := rollout.PodBuilder{DefaultScriptImage: ntv1.DefaultScriptImage}
	// Stand-ins of the lengths the manager uses.
	const revision, nodeUID = "0123456789", types.UID("00000000-0000-4000-8000-000000000000")
	r, err := benchBare(ctx, c, "bare client, the task's pods", ns, n, func(node string) *corev1.Pod {
		return builder.Pod(task, 1, revision, rollout.PodRequest{Node: node, NodeUID: nodeUID, Attempt: 1})
	})
	if err != nil {
		return r, err
	}
	return r, c.Client.Delete(ctx, task)
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
	pw.start()
	if err := c.Client.Create(ctx, ds); err != nil {
		return result{}, err
	}
	if err := pw.wait(ctx, 15*time.Minute); err != nil {
		return result{}, err
	}
	r := pw.result("DaemonSet")
	r.endedWhat = " (running)"
	if err := c.Client.Delete(ctx, ds); err != nil {
		return result{}, err
	}
	return r, clearPods(ctx, c, ns)
}

// benchNodeTask runs the manager with the given extra flags, applies a task on every node,
// and measures until the task is Ready; then it deletes the task and its pods, so that the
// next round's manager starts on the same cluster as this one did.
func benchNodeTask(ctx context.Context, c *cluster.Cluster, manager string, n, round int, name string, extra []string) (result, error) {
	ns := fmt.Sprintf("bench-nodetask-%d", round)
	if name != "NodeTask" {
		ns += "-variant" // the --compare-manager-arg contender of the same round
	}
	if err := namespace(ctx, c, ns); err != nil {
		return result{}, err
	}
	profile := profileDir != "" && round == 1 && name == "NodeTask"
	proc, metricsAddr, pprofAddr, err := startManager(ctx, c, manager, extra, profile)
	if err != nil {
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
	task := benchTask(ns)
	// Ready, and the progress on the way, are timed by a watch (see taskWatch).
	tw, err := watchTask(ctx, c, task)
	if err != nil {
		return result{}, err
	}
	defer tw.stop()
	with := ""
	if len(extra) > 0 {
		with = " and " + strings.Join(extra, " ")
	}
	fmt.Fprintf(os.Stderr, "[bench] %s: the manager at its defaults%s, maxConcurrent 100%%\n", name, with)
	apiBefore, err := apiserverMetrics(ctx, cs)
	if err != nil {
		return result{}, err
	}
	t0 := pw.start()
	if err := c.Client.Create(ctx, task); err != nil {
		return result{}, err
	}
	cpuProfile := make(chan error, 1)
	if profile {
		go func() {
			cpuProfile <- saveURL(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, profileSeconds), filepath.Join(profileDir, "cpu.pprof"))
		}()
	} else {
		cpuProfile <- nil
	}
	if err := pw.wait(ctx, 15*time.Minute); err != nil {
		return result{}, err
	}
	r := pw.result(name)
	readyAt, err := tw.waitReady(ctx, 5*time.Minute)
	if err != nil {
		return result{}, err
	}
	r.ready, r.peakRSS = readyAt.Sub(t0), peakRSS(proc.Pid())
	// The writes until Ready, and the objects as they are then: before the heap profile
	// and before waiting for the CPU profile to end.
	m, err := scrape("http://" + metricsAddr + "/metrics")
	if err != nil {
		return result{}, err
	}
	r.writes, r.written = m["nodetask_status_writes_total"], m["nodetask_status_write_bytes_total"]
	r.sliceWrites, r.sliceWritten = m["nodetask_result_slice_writes_total"], m["nodetask_result_slice_write_bytes_total"]
	if raw, err := cs.RESTClient().Get().AbsPath("/apis/nodetask.io/v1alpha1/namespaces", ns, "nodetasks", task.Name).DoRaw(ctx); err == nil {
		r.objectBytes = len(raw)
	}
	if r.slices, r.sliceBytes, err = sliceBytes(ctx, cs.RESTClient(), ns, task.Name); err != nil {
		return result{}, fmt.Errorf("listing the task's NodeResultSlices: %w", err)
	}
	r.status = statusCostOf(r, tw, t0)
	// What the watcher saw, and the reconciles behind it: on standard error, to read the
	// table's gap and lag by.
	fmt.Fprintf(os.Stderr, "[bench] %s: the task's watch events until Ready (time after creation, pending/running/succeeded/failed, conditions, size); pods created at %.2f s, finished at %.2f s:\n",
		name, r.created.Seconds(), r.ended.Seconds())
	tw.printTimeline(os.Stderr, "[bench]   ", t0)
	byController := func(series string) string { return labelValue(series, "controller") }
	reconciles := countDelta(nil, m, "controller_runtime_reconcile_total", byController)["nodetask"]
	reconcileTime := countDelta(nil, m, "controller_runtime_reconcile_time_seconds_sum", byController)["nodetask"]
	fmt.Fprintf(os.Stderr, "[bench] %s: %.0f reconciles of the task until Ready, %.1f s in all\n", name, reconciles, reconcileTime)
	if apiAfter, err := apiserverMetrics(ctx, cs); err == nil {
		puts, putTime := requestTime(apiBefore, apiAfter, "nodetasks", "status", "PUT")
		posts, postTime := requestTime(apiBefore, apiAfter, "pods", "", "POST")
		var codes []string
		byCode := requestCodes(apiBefore, apiAfter, "nodetasks", "status", "PUT")
		for _, code := range sortedByCount(byCode) {
			codes = append(codes, fmt.Sprintf("%.0f %s", byCode[code], code))
		}
		fmt.Fprintf(os.Stderr, "[bench] %s: the API server until Ready: %.0f PUTs of nodetasks/status (codes: %s), %.0f ms each on average; %.0f POSTs of pods, %.0f ms each\n",
			name, puts, strings.Join(codes, ", "), 1000*putTime/max(puts, 1), posts, 1000*postTime/max(posts, 1))
	}
	if profile {
		if err := saveURL("http://"+pprofAddr+"/debug/pprof/heap?gc=1", filepath.Join(profileDir, "heap.pprof")); err != nil {
			return result{}, err
		}
		// The CPU profile covers the first profileSeconds from the task's creation: the
		// benchmark waits for it before deleting the task, so that it ends on an idle
		// manager, not on the deletion's work.
		if length := time.Duration(profileSeconds) * time.Second; length < r.ready {
			fmt.Fprintf(os.Stderr, "[bench] the CPU profile ended %.1f s before Ready: it misses the end of the rollout; raise --profile-seconds above %.0f\n", (r.ready - length).Seconds(), r.ready.Seconds())
		} else if left := length - time.Since(t0); left > 0 {
			fmt.Fprintf(os.Stderr, "[bench] waiting %s for the CPU profile (--profile-seconds %d; Ready after %.1f s)\n", left.Round(time.Second), profileSeconds, r.ready.Seconds())
		}
	}
	if err := <-cpuProfile; err != nil {
		return result{}, err
	}
	if profile {
		fmt.Fprintf(os.Stderr, "[bench] profiles in %s: go tool pprof -top bin/manager %s/cpu.pprof\n", profileDir, profileDir)
	}
	proc.Stop(10 * time.Second)
	if err := c.Client.Delete(ctx, task); err != nil {
		return result{}, err
	}
	return r, clearPods(ctx, c, ns)
}

// startManager starts the manager as its own process with leader election (as deployed),
// plain-HTTP metrics, and the extra flags, and waits until it is ready (its caches synced),
// so that the work applied next meets a manager as a running cluster would have it. It
// returns the process and the metrics address, and the pprof address when profile is set.
func startManager(ctx context.Context, c *cluster.Cluster, manager string, extra []string, profile bool) (proc *cluster.Process, metricsAddr, pprofAddr string, err error) {
	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "nodetask-system"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, "", "", err
	}
	probe, err := cluster.FreeAddr()
	if err != nil {
		return nil, "", "", err
	}
	if metricsAddr, err = cluster.FreeAddr(); err != nil {
		return nil, "", "", err
	}
	if pprofAddr, err = cluster.FreeAddr(); err != nil {
		return nil, "", "", err
	}
	args := append([]string{"--leader-elect", "--leader-election-namespace=nodetask-system",
		"--metrics-bind-address=" + metricsAddr, "--metrics-secure=false", "--health-probe-bind-address=" + probe}, extra...)
	if profile {
		args = append(args, "--pprof-bind-address="+pprofAddr)
	}
	if proc, err = c.StartProcess("manager", manager, args...); err != nil {
		return nil, "", "", err
	}
	if err := waitHTTP(ctx, "http://"+probe+"/readyz", 2*time.Minute); err != nil {
		return nil, "", "", err
	}
	return proc, metricsAddr, pprofAddr, nil
}

// benchTask is the task the benchmark runs: a one-line script on every Windows node at once.
func benchTask(ns string) *ntv1.NodeTask {
	return &ntv1.NodeTask{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bench"},
		Spec: ntv1.NodeTaskSpec{
			Script:  &ntv1.ScriptSpec{Inline: ptr.To("exit 0")},
			Rollout: ntv1.RolloutSpec{MaxConcurrent: ptr.To(intstr.FromString("100%"))},
		},
	}
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

// saveURL writes what a GET of url returns to a file.
func saveURL(url, path string) error {
	resp, err := http.Get(url) //nolint:gosec // loopback
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// scrape reads the samples of a Prometheus text endpoint, by series: the name, with its
// labels as the endpoint writes them if it has any.
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url) //nolint:gosec // loopback
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return parseMetrics(resp.Body)
}

// parseMetrics reads Prometheus text samples by series (see scrape).
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		// Label values may hold spaces: the value follows the closing brace, if any.
		cut := strings.LastIndexByte(line, '}') + 1
		if cut == 0 {
			cut = strings.IndexByte(line, ' ')
		}
		if cut <= 0 || cut >= len(line) {
			continue
		}
		name, value := line[:cut], strings.TrimSpace(line[cut:])
		// A timestamp may follow the value.
		value, _, _ = strings.Cut(value, " ")
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
