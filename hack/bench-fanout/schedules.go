package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/schedule"
	"github.com/nodetask/nodetask-operator/test/cluster"
)

// scheduleNamespace holds the schedule benchmark's schedules, runs and pods.
const scheduleNamespace = "bench-schedules"

// runWatch records, from a watch started before the fire time, when each run of the
// benchmark's schedules was first seen and when it was first seen Ready. A watch, as
// `kubectl wait` or Argo CD would see it: polling 20 runs of 250 nodes would add load to the
// API server the runs wait on.
type runWatch struct {
	mu      sync.Mutex
	created map[string]time.Time
	ready   map[string]time.Time
	want    int
	all     chan struct{}
	allOnce sync.Once
	// stop ends the watch.
	stop context.CancelFunc
}

func watchRuns(ctx context.Context, c *cluster.Cluster, ns string, want int) (*runWatch, error) {
	rw := &runWatch{created: map[string]time.Time{}, ready: map[string]time.Time{}, want: want, all: make(chan struct{})}
	ctx, rw.stop = context.WithCancel(ctx)
	wc, err := client.NewWithWatch(c.Config, client.Options{Scheme: c.Client.Scheme()})
	if err != nil {
		return nil, err
	}
	w, err := wc.Watch(ctx, &ntv1.NodeTaskList{}, client.InNamespace(ns))
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			for ev := range w.ResultChan() {
				t, ok := ev.Object.(*ntv1.NodeTask)
				if !ok {
					continue
				}
				now := time.Now()
				rw.mu.Lock()
				if _, seen := rw.created[t.Name]; !seen {
					rw.created[t.Name] = now
				}
				if _, seen := rw.ready[t.Name]; !seen && meta.IsStatusConditionTrue(t.Status.Conditions, ntv1.ConditionReady) {
					rw.ready[t.Name] = now
					if len(rw.ready) >= rw.want {
						rw.allOnce.Do(func() { close(rw.all) })
					}
				}
				rw.mu.Unlock()
			}
			w.Stop()
			// The API server may end a watch: watch again (it starts with the current
			// objects, so a run or a Ready missed meanwhile comes with the first events; its
			// time is then late by the gap, which the log would show).
			if ctx.Err() != nil {
				return
			}
			fmt.Fprintln(os.Stderr, "[bench] the NodeTask watch ended; watching again")
			again, err := wc.Watch(ctx, &ntv1.NodeTaskList{}, client.InNamespace(ns))
			if err != nil {
				fmt.Fprintln(os.Stderr, "[bench] watching NodeTasks again:", err)
				return
			}
			w = again
		}
	}()
	return rw, nil
}

// span returns the earliest and the latest of the times, each since t0.
func span(times map[string]time.Time, t0 time.Time) (first, last time.Duration) {
	first = -1
	for _, t := range times {
		d := t.Sub(t0)
		if first < 0 || d < first {
			first = d
		}
		last = max(last, d)
	}
	return max(first, 0), last
}

// benchSchedule is schedule i of the benchmark: one fixed minute of the day (UTC), so that
// each schedule fires exactly once while the benchmark runs, on every Windows node at once.
func benchSchedule(i int, fire time.Time) *ntv1.NodeTaskSchedule {
	fire = fire.UTC()
	return &ntv1.NodeTaskSchedule{
		ObjectMeta: metav1.ObjectMeta{Namespace: scheduleNamespace, Name: fmt.Sprintf("bench-%02d", i)},
		Spec: ntv1.NodeTaskScheduleSpec{
			Schedule: fmt.Sprintf("%d %d * * *", fire.Minute(), fire.Hour()),
			TimeZone: ptr.To("UTC"),
			// A fire a few seconds late (the manager busy with the others) still starts.
			StartingDeadlineSeconds:    ptr.To[int64](300),
			SuccessfulRunsHistoryLimit: ptr.To[int32](1),
			FailedRunsHistoryLimit:     ptr.To[int32](1),
			Template: ntv1.NodeTaskTemplate{Spec: ntv1.NodeTaskSpec{
				Script:  &ntv1.ScriptSpec{Inline: ptr.To("exit 0")},
				Rollout: ntv1.RolloutSpec{MaxConcurrent: ptr.To(intstr.FromString("100%"))},
			}},
		},
	}
}

// apiserverMetrics reads the API server's own metrics (as a cluster admin).
func apiserverMetrics(ctx context.Context, cs kubernetes.Interface) (map[string]float64, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	return parseMetrics(strings.NewReader(string(raw)))
}

// labelValue returns a label's value in a series key as scrape returns it.
func labelValue(series, label string) string {
	_, rest, ok := strings.Cut(series, "{"+label+`="`)
	if !ok {
		_, rest, ok = strings.Cut(series, ","+label+`="`)
	}
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// countDelta sums, per key that by gives a series of metric, how much it grew between the
// two scrapes; by returns "" for series to leave out.
func countDelta(before, after map[string]float64, metric string, by func(series string) string) map[string]float64 {
	out := map[string]float64{}
	for series, v := range after {
		if !strings.HasPrefix(series, metric+"{") {
			continue
		}
		if key := by(series); key != "" {
			if d := v - before[series]; d > 0 {
				out[key] += d
			}
		}
	}
	return out
}

// sortedByCount returns the keys, largest count first.
func sortedByCount(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}

// runSchedules is the schedule benchmark: the manager at its defaults, then k schedules that
// fire at the same minute, each on every one of the n Windows nodes (maxConcurrent 100%). It
// measures, from the fire minute, when the runs appear, when their pods are created and
// finish, and when every run is Ready; the manager's peak RSS, the CPU each process used, and
// the API requests the manager made (its client-go metrics) and the API server served (all
// clients) from just before the fire minute until every run was Ready.
func runSchedules(ctx context.Context, opts cluster.Options, manager string, n, k int) error {
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
	if err := namespace(ctx, c, scheduleNamespace); err != nil {
		return err
	}
	profile := profileDir != ""
	proc, metricsAddr, pprofAddr, err := startManager(ctx, c, manager, managerArgs, profile)
	if err != nil {
		return err
	}
	defer proc.Stop(10 * time.Second)
	if err := settle(ctx); err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	pw, err := watchPods(ctx, cs, scheduleNamespace, k*n, corev1.PodSucceeded, corev1.PodFailed)
	if err != nil {
		return err
	}
	rw, err := watchRuns(ctx, c, scheduleNamespace, k)
	if err != nil {
		return err
	}
	defer rw.stop()

	// The fire minute: the next whole minute that leaves the schedules time to be created
	// and their next time computed.
	fire := time.Now().Truncate(time.Minute).Add(time.Minute)
	if time.Until(fire) < 20*time.Second {
		fire = fire.Add(time.Minute)
	}
	var names []string
	for i := range k {
		s := benchSchedule(i, fire)
		if err := c.Client.Create(ctx, s); err != nil {
			return err
		}
		names = append(names, s.Name)
	}
	fmt.Fprintf(os.Stderr, "[bench] %d schedules (%q, UTC) fire at %s, in %s\n", k, benchSchedule(0, fire).Spec.Schedule,
		fire.UTC().Format(time.TimeOnly), time.Until(fire).Round(time.Second))

	// Counters just before the fire minute, when the schedules' creation has been reconciled.
	if d := time.Until(fire.Add(-2 * time.Second)); d > 0 {
		time.Sleep(d)
	}
	mgrBefore, err := scrape("http://" + metricsAddr + "/metrics")
	if err != nil {
		return err
	}
	apiBefore, err := apiserverMetrics(ctx, cs)
	if err != nil {
		return err
	}
	if d := time.Until(fire); d > 0 {
		time.Sleep(d)
	}
	// t0 is the fire minute itself (within the sleep's precision); CPU counts from here.
	pw.start()
	cpuProfile := make(chan error, 1)
	if profile {
		go func() {
			cpuProfile <- saveURL(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, profileSeconds), filepath.Join(profileDir, "cpu.pprof"))
		}()
	} else {
		cpuProfile <- nil
	}
	if err := pw.wait(ctx, 15*time.Minute); err != nil {
		return err
	}
	select {
	case <-rw.all:
	case <-time.After(5 * time.Minute):
		rw.mu.Lock()
		defer rw.mu.Unlock()
		return fmt.Errorf("%d of %d runs Ready 5 minutes after their pods finished", len(rw.ready), k)
	}
	cpuReady := sampleCPU()
	mgrAfter, err := scrape("http://" + metricsAddr + "/metrics")
	if err != nil {
		return err
	}
	apiAfter, err := apiserverMetrics(ctx, cs)
	if err != nil {
		return err
	}
	rss := peakRSS(proc.Pid())
	if profile {
		if err := saveURL("http://"+pprofAddr+"/debug/pprof/heap?gc=1", filepath.Join(profileDir, "heap.pprof")); err != nil {
			return err
		}
	}

	// Every schedule's own status records its run's success (the schedule's Ready): polled,
	// 20 small objects.
	var schedulesDone time.Duration
	for deadline := time.Now().Add(2 * time.Minute); ; {
		var list ntv1.NodeTaskScheduleList
		if err := c.Client.List(ctx, &list, client.InNamespace(scheduleNamespace)); err != nil {
			return err
		}
		done := 0
		for _, s := range list.Items {
			if s.Status.LastRunOutcome == ntv1.RunSucceeded && len(s.Status.Active) == 0 {
				done++
			}
		}
		if done == k {
			schedulesDone = time.Since(fire)
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d schedules record a succeeded run 2 minutes after every run was Ready", done, k)
		}
		time.Sleep(250 * time.Millisecond)
	}

	// After the schedules' time, which waiting for the profile would lengthen.
	if err := <-cpuProfile; err != nil {
		return err
	}

	// Exactly one run per schedule, named from the fire minute.
	var runs ntv1.NodeTaskList
	if err := c.Client.List(ctx, &runs, client.InNamespace(scheduleNamespace)); err != nil {
		return err
	}
	perSchedule := map[string][]string{}
	for _, t := range runs.Items {
		perSchedule[t.Labels[ntv1.LabelSchedule]] = append(perSchedule[t.Labels[ntv1.LabelSchedule]], t.Name)
	}
	for _, name := range names {
		if got, want := perSchedule[name], []string{schedule.RunName(name, fire)}; !slices.Equal(got, want) {
			return fmt.Errorf("schedule %s has the runs %v, want %v", name, got, want)
		}
	}
	if len(runs.Items) != k {
		return fmt.Errorf("%d NodeTasks in %s, want %d (one per schedule)", len(runs.Items), scheduleNamespace, k)
	}

	pr := pw.result("")
	rw.mu.Lock()
	firstCreated, lastCreated := span(rw.created, fire)
	firstReady, lastReady := span(rw.ready, fire)
	rw.mu.Unlock()
	cpu := cpuReady.since(pw.cpu0)

	byMethod := countDelta(mgrBefore, mgrAfter, "rest_client_requests_total", func(s string) string { return labelValue(s, "method") })
	byResource := countDelta(apiBefore, apiAfter, "apiserver_request_total", func(s string) string {
		res := labelValue(s, "resource")
		if sub := labelValue(s, "subresource"); sub != "" {
			res += "/" + sub
		}
		if res == "" {
			return ""
		}
		key := res + " " + labelValue(s, "verb")
		if labelValue(s, "dry_run") != "" {
			key += " (dry run)" // the manager's admission check of a run's pods
		}
		return key
	})

	out := os.Stdout
	fmt.Fprintf(out, "\n%d schedules firing at the same minute over %d simulated Windows nodes (%d pods; %s, %d CPUs, %s)\n\n",
		k, n, k*n, time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.GOOS)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "runs created\t%d (one per schedule, named from the fire minute)\n", len(runs.Items))
	fmt.Fprintln(tw, "since the fire minute (s):\t")
	fmt.Fprintf(tw, "  first run created, last run created\t%.1f, %.1f\n", firstCreated.Seconds(), lastCreated.Seconds())
	fmt.Fprintf(tw, "  all %d pods created\t%.1f\n", k*n, pr.created.Seconds())
	fmt.Fprintf(tw, "  all pods finished\t%.1f\n", pr.ended.Seconds())
	fmt.Fprintf(tw, "  first run Ready, every run Ready\t%.1f, %.1f\n", firstReady.Seconds(), lastReady.Seconds())
	fmt.Fprintf(tw, "  every schedule records its run Succeeded\t%.1f\n", schedulesDone.Seconds())
	fmt.Fprintf(tw, "manager peak RSS\t%d MiB\n", rss>>20)
	fmt.Fprintf(tw, "manager CPU, fire minute to every run Ready\t%.1f s\n", cpu["manager"].Seconds())
	var total float64
	var parts []string
	for _, m := range sortedByCount(byMethod) {
		total += byMethod[m]
		parts = append(parts, fmt.Sprintf("%s %.0f", m, byMethod[m]))
	}
	fmt.Fprintf(tw, "manager API requests, from 2 s before the fire minute to every run Ready\t%.0f (%s)\n", total, strings.Join(parts, ", "))
	fmt.Fprintf(tw, "manager status writes, all its life\t%.0f NodeTask (%.0f KB)\n",
		mgrAfter["nodetask_status_writes_total"], mgrAfter["nodetask_status_write_bytes_total"]/1024)
	_ = tw.Flush()

	fmt.Fprintln(out)
	printProcessCPU(out, "CPU seconds, fire minute to every run Ready", cpu, lastReady)

	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "API server requests, all clients (resource, verb)\tcount")
	for i, key := range sortedByCount(byResource) {
		if i == 12 {
			fmt.Fprintf(tw, "(%d more rows)\t\n", len(byResource)-12)
			break
		}
		fmt.Fprintf(tw, "%s\t%.0f\n", key, byResource[key])
	}
	_ = tw.Flush()
	return nil
}

// printProcessCPU prints the CPU seconds each process used, and how many the machine had in
// the time.
func printProcessCPU(w io.Writer, title string, cpu cpuSample, in time.Duration) {
	rows := make([]string, 0, len(cpu))
	for name := range cpu {
		rows = append(rows, name)
	}
	slices.Sort(rows)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, title+"\t")
	var all time.Duration
	for _, name := range rows {
		all += cpu[name]
		fmt.Fprintf(tw, "%s\t%.1f\n", name, cpu[name].Seconds())
	}
	fmt.Fprintf(tw, "all (of %d CPUs x the time)\t%.1f of %.1f\n", runtime.NumCPU(), all.Seconds(), float64(runtime.NumCPU())*in.Seconds())
	_ = tw.Flush()
}
