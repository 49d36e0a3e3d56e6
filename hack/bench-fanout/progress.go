package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/test/cluster"
)

// progress is what one event of the task shows a watcher of its progress: the counts and
// each condition's status and reason. Two events with equal progress look the same on a
// `kubectl get -w` or a dashboard.
type progress struct {
	pending, running, succeeded, failed int32
	// conditions lists each condition as type=status/reason, sorted by type.
	conditions string
	ready      bool
}

// progressOf reads a task's progress.
func progressOf(t *ntv1.NodeTask) progress {
	conds := make([]string, 0, len(t.Status.Conditions))
	for _, c := range t.Status.Conditions {
		conds = append(conds, fmt.Sprintf("%s=%s/%s", c.Type, c.Status, c.Reason))
	}
	slices.Sort(conds)
	return progress{
		pending: t.Status.Pending, running: t.Status.Running, succeeded: t.Status.Succeeded, failed: t.Status.Failed,
		conditions: strings.Join(conds, ","),
		ready:      meta.IsStatusConditionTrue(t.Status.Conditions, ntv1.ConditionReady),
	}
}

// progressSample is an event of the task: when the watcher got it, and what it showed.
type progressSample struct {
	at       time.Time
	progress progress
	// size is the object's JSON size (timeline only).
	size int
}

// longestProgressGap returns the longest time a watcher of the task saw no new progress:
// the longest gap between two successive events that show a different progress, from the
// task's creation (the zero progress: no counts, no conditions) until the first event that
// shows Ready True. Events that repeat the progress before them (a write of other fields, or
// the current object again when a watch starts anew) do not end a gap. Samples after the
// first Ready are left out; without a Ready sample the gaps until the last change count.
func longestProgressGap(created time.Time, samples []progressSample) time.Duration {
	var longest time.Duration
	last, shown := created, progress{}
	for _, s := range samples {
		if s.progress == shown {
			continue
		}
		longest = max(longest, s.at.Sub(last))
		last, shown = s.at, s.progress
		if s.progress.ready {
			break
		}
	}
	return longest
}

// taskWatch records every event of one task from before its creation until it is first seen
// Ready: as `kubectl get -w`, `kubectl wait` or Argo CD would see it. A watch, not polling:
// polling a 5000-node task's 800 KB object every few milliseconds would load the API server
// the task is waiting on.
type taskWatch struct {
	mu      sync.Mutex
	samples []progressSample
	// events counts the task's watch events until Ready; eventBytes sums their objects'
	// JSON sizes (json.Marshal of the decoded object: what the watcher was sent, give or
	// take the event's envelope).
	events     int
	eventBytes int64
	readyAt    time.Time
	ready      chan struct{}
	stop       context.CancelFunc
}

// watchTask starts watching the task (which need not exist yet).
func watchTask(ctx context.Context, c *cluster.Cluster, task *ntv1.NodeTask) (*taskWatch, error) {
	wc, err := client.NewWithWatch(c.Config, client.Options{Scheme: c.Client.Scheme()})
	if err != nil {
		return nil, err
	}
	tw := &taskWatch{ready: make(chan struct{})}
	ctx, tw.stop = context.WithCancel(ctx)
	opts := []client.ListOption{client.InNamespace(task.Namespace), client.MatchingFields{"metadata.name": task.Name}}
	w, err := wc.Watch(ctx, &ntv1.NodeTaskList{}, opts...)
	if err != nil {
		tw.stop()
		return nil, err
	}
	go func() {
		defer func() { w.Stop() }()
		for {
			for ev := range w.ResultChan() {
				t, ok := ev.Object.(*ntv1.NodeTask)
				if !ok {
					continue
				}
				if tw.record(time.Now(), t) {
					return
				}
			}
			// The API server may end a watch: watch again (a Ready missed meanwhile comes
			// with the first event, as the watch starts with the current object).
			if ctx.Err() != nil {
				return
			}
			if w, err = wc.Watch(ctx, &ntv1.NodeTaskList{}, opts...); err != nil {
				return
			}
		}
	}()
	return tw, nil
}

// record adds one event, and reports whether it showed Ready.
func (tw *taskWatch) record(at time.Time, t *ntv1.NodeTask) bool {
	p := progressOf(t)
	size := 0
	if raw, err := json.Marshal(t); err == nil {
		size = len(raw)
	}
	tw.mu.Lock()
	defer tw.mu.Unlock()
	tw.samples = append(tw.samples, progressSample{at: at, progress: p, size: size})
	tw.events++
	tw.eventBytes += int64(size)
	if p.ready {
		tw.readyAt = at
		close(tw.ready)
	}
	return p.ready
}

// waitReady returns the time the task was first seen Ready.
func (tw *taskWatch) waitReady(ctx context.Context, timeout time.Duration) (time.Time, error) {
	select {
	case <-tw.ready:
		tw.mu.Lock()
		defer tw.mu.Unlock()
		return tw.readyAt, nil
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	case <-time.After(timeout):
		return time.Time{}, fmt.Errorf("the NodeTask is not Ready %s after its pods finished", timeout)
	}
}

// stats returns the longest progress gap since created, the events and their bytes.
func (tw *taskWatch) stats(created time.Time) (gap time.Duration, events int, eventBytes int64) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return longestProgressGap(created, tw.samples), tw.events, tw.eventBytes
}

// printTimeline writes the task's events until Ready, one a line: the time since created, the
// counts (pending/running/succeeded/failed), the conditions and the object's size; an event
// that shows no new progress is marked "same".
func (tw *taskWatch) printTimeline(w io.Writer, prefix string, created time.Time) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	shown := progress{}
	for _, s := range tw.samples {
		p := s.progress
		same := ""
		if p == shown {
			same = "  (same)"
		}
		shown = p
		conditions := p.conditions
		if conditions == "" {
			conditions = "-"
		}
		fmt.Fprintf(w, "%s%7.2f s  %d/%d/%d/%d  %s  %d KB%s\n", prefix, s.at.Sub(created).Seconds(),
			p.pending, p.running, p.succeeded, p.failed, conditions, s.size>>10, same)
	}
}

// requestTime returns how many requests of a resource, subresource and verb the API server
// served between two scrapes of its metrics, and the seconds they took in all.
func requestTime(before, after map[string]float64, resource, subresource, verb string) (count, seconds float64) {
	match := func(series string) string {
		if labelValue(series, "resource") == resource && labelValue(series, "subresource") == subresource && labelValue(series, "verb") == verb {
			return "match"
		}
		return ""
	}
	count = countDelta(before, after, "apiserver_request_duration_seconds_count", match)["match"]
	seconds = countDelta(before, after, "apiserver_request_duration_seconds_sum", match)["match"]
	return count, seconds
}

// requestCodes returns how many requests of a resource, subresource and verb the API server
// answered between two scrapes of its metrics, by HTTP code.
func requestCodes(before, after map[string]float64, resource, subresource, verb string) map[string]float64 {
	return countDelta(before, after, "apiserver_request_total", func(series string) string {
		if labelValue(series, "resource") == resource && labelValue(series, "subresource") == subresource && labelValue(series, "verb") == verb {
			return labelValue(series, "code")
		}
		return ""
	})
}

// sliceBytes returns how many NodeResultSlices of the task there are and the sum of their
// JSON sizes as the API server sends them; none (and no error) if the kind does not exist.
func sliceBytes(ctx context.Context, rc rest.Interface, ns, task string) (count, size int, err error) {
	raw, err := rc.Get().AbsPath("/apis/nodetask.io/v1alpha1/namespaces", ns, "noderesultslices").
		Param("labelSelector", "nodetask.io/task="+task).DoRaw(ctx)
	if apierrors.IsNotFound(err) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	return sumItems(raw)
}

// sumItems returns the number of items of a raw list and the sum of their JSON lengths.
func sumItems(raw []byte) (count, size int, err error) {
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return 0, 0, err
	}
	for _, item := range list.Items {
		size += len(item)
	}
	return len(list.Items), size, nil
}

// statusCost is what a NodeTask's status writes cost until Ready, and what a watcher of the
// task saw of them.
type statusCost struct {
	// readyLag is Ready's time after the last pod finished.
	readyLag time.Duration
	// writtenPerFinal is the bytes written (task and slices) per byte of the final objects.
	writtenPerFinal float64
	// writesPerMinute counts all writes (task and slices) per minute from creation to Ready.
	writesPerMinute float64
	// gap is the longest time the watcher saw no new progress (longestProgressGap).
	gap        time.Duration
	events     int
	eventBytes int64
	// eachLag and eachRatio list every round's readyLag and writtenPerFinal (medians only).
	eachLag, eachRatio string
}

// statusCostOf computes a NodeTask's status cost from its measures (the writes, the objects'
// sizes, ended and ready) and the task's watch; created is when the task was created.
func statusCostOf(r result, tw *taskWatch, created time.Time) statusCost {
	var s statusCost
	s.readyLag = r.ready - r.ended
	if final := r.objectBytes + r.sliceBytes; final > 0 {
		s.writtenPerFinal = (r.written + r.sliceWritten) / float64(final)
	}
	if r.ready > 0 {
		s.writesPerMinute = (r.writes + r.sliceWrites) / r.ready.Minutes()
	}
	s.gap, s.events, s.eventBytes = tw.stats(created)
	return s
}

// medianStatus returns the median of each status measure over the rounds, and lists each
// round's Ready lag and ratio.
func medianStatus(runs []result) statusCost {
	var m statusCost
	m.readyLag = median(runs, func(r result) time.Duration { return r.status.readyLag })
	m.gap = median(runs, func(r result) time.Duration { return r.status.gap })
	m.events = int(median(runs, func(r result) time.Duration { return time.Duration(r.status.events) }))
	m.eventBytes = int64(median(runs, func(r result) time.Duration { return time.Duration(r.status.eventBytes) }))
	m.writtenPerFinal = medianFloat(runs, func(r result) float64 { return r.status.writtenPerFinal })
	m.writesPerMinute = medianFloat(runs, func(r result) float64 { return r.status.writesPerMinute })
	var lags, ratios []string
	for _, r := range runs {
		lags = append(lags, fmt.Sprintf("%.2f", r.status.readyLag.Seconds()))
		ratios = append(ratios, fmt.Sprintf("%.1f", r.status.writtenPerFinal))
	}
	m.eachLag, m.eachRatio = strings.Join(lags, " "), strings.Join(ratios, " ")
	return m
}

// medianFloat is median for a measure that is not a duration.
func medianFloat(runs []result, of func(result) float64) float64 {
	values := make([]float64, len(runs))
	for i, r := range runs {
		values[i] = of(r)
	}
	slices.Sort(values)
	return values[len(values)/2]
}

// isNodeTask tells the NodeTask contenders (with --compare-manager-arg, two) from the others.
func isNodeTask(r result) bool { return strings.HasPrefix(r.name, "NodeTask") }

// printStatusCost prints, for each NodeTask contender, what its status writes cost until
// Ready: the writes of the task and of its NodeResultSlices, the bytes written and the final
// objects' size, and what a watcher of the task saw. With several rounds, each round's Ready
// lag and ratio follow.
func printStatusCost(w io.Writer, results []result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Status writes until Ready\ttask writes\tslice writes\tKB written\tfinal KB (task + slices)\twritten / final\twrites/min\tReady lag (s)\tlongest progress gap (s)\twatch events (KB sent)")
	for _, r := range results {
		if !isNodeTask(r) {
			continue
		}
		s := r.status
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%d + %d (%d slices)\t%.1fx\t%.1f\t%.2f\t%.2f\t%d (%d)\n", r.name,
			r.writes, r.sliceWrites, (r.written+r.sliceWritten)/1024, r.objectBytes>>10, r.sliceBytes>>10, r.slices,
			s.writtenPerFinal, s.writesPerMinute, s.readyLag.Seconds(), s.gap.Seconds(), s.events, s.eventBytes>>10)
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "(Ready lag: Ready seen by a watch of the task after the last pod was seen finished; progress gap: the longest")
	fmt.Fprintln(w, "time, from creation to Ready, between two watch events showing different counts or conditions.)")
	if roundsFlag <= 1 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Each round\tReady lag (s)\twritten / final")
	for _, r := range results {
		if isNodeTask(r) {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.name, r.status.eachLag, r.status.eachRatio)
		}
	}
	_ = tw.Flush()
}
