package main

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// TestLongestProgressGap: the gap runs from creation to the first event with progress, an
// event that repeats the progress before it does not end a gap, and nothing after the first
// Ready counts.
func TestLongestProgressGap(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	ps := func(s float64, p progress) progressSample {
		return progressSample{at: t0.Add(time.Duration(s * float64(time.Second))), progress: p}
	}
	reconciling := "Ready=False/Progressing,Reconciling=True/Progressing"
	started := progress{pending: 5, conditions: reconciling}
	running := progress{running: 5, conditions: reconciling}
	done := progress{succeeded: 5, conditions: "Ready=True/Succeeded,Reconciling=False/Succeeded", ready: true}
	for _, tc := range []struct {
		name    string
		samples []progressSample
		want    time.Duration
	}{
		{"none", nil, 0},
		{"from creation to the first progress", []progressSample{
			ps(0.1, progress{}), // the ADDED event: no status yet
			ps(3, started), ps(4, running), ps(5, done),
		}, 3 * time.Second},
		{"a repeated progress does not end a gap", []progressSample{
			ps(1, started), ps(2, started), ps(8, started), ps(9, running), ps(10, done),
		}, 8 * time.Second},
		{"until Ready only", []progressSample{
			ps(1, started), ps(2, running), ps(4, done), ps(60, progress{}), ps(70, done),
		}, 2 * time.Second},
		{"the last gap ends at Ready", []progressSample{
			ps(1, started), ps(2, running), ps(2.5, progress{running: 4, succeeded: 1, conditions: reconciling}),
			ps(7.5, done),
		}, 5 * time.Second},
		{"a condition's reason alone is progress", []progressSample{
			ps(1, started), ps(4, progress{pending: 5, conditions: "Ready=False/Waiting,Reconciling=True/Progressing"}), ps(5, done),
		}, 3 * time.Second},
	} {
		if got := longestProgressGap(t0, tc.samples); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestProgressOf: the counts and each condition's status and reason, whatever the order of the
// conditions; the message and the times do not count.
func TestProgressOf(t *testing.T) {
	task := &ntv1.NodeTask{Status: ntv1.NodeTaskStatus{Targets: 3, Pending: 1, Running: 1, Succeeded: 1, Conditions: []metav1.Condition{
		{Type: ntv1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: "Progressing", Message: "1 of 3"},
		{Type: ntv1.ConditionReady, Status: metav1.ConditionFalse, Reason: "Progressing"},
	}}}
	p := progressOf(task)
	if p.conditions != "Ready=False/Progressing,Reconciling=True/Progressing" || p.ready || p.pending != 1 || p.running != 1 || p.succeeded != 1 {
		t.Errorf("progress: %+v", p)
	}
	task.Status.Conditions[0].Message, task.Status.Conditions[0].LastTransitionTime = "2 of 3", metav1.Now()
	if progressOf(task) != p {
		t.Error("a message or a time changed the progress")
	}
	task.Status.Conditions[1].Status, task.Status.Conditions[1].Reason = metav1.ConditionTrue, "Succeeded"
	if q := progressOf(task); !q.ready || q == p {
		t.Errorf("Ready: %+v", q)
	}
}

// TestStatusWriteMetrics: the manager's status and result slice counters, by their names; a
// manager without slices has no slice series, which reads as 0.
func TestStatusWriteMetrics(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(`# HELP nodetask_status_writes_total Status writes.
# TYPE nodetask_status_writes_total counter
nodetask_status_writes_total 13
nodetask_status_write_bytes_total 8.757248e+06
# TYPE nodetask_result_slice_writes_total counter
nodetask_result_slice_writes_total 50
nodetask_result_slice_write_bytes_total 1.2e+06
`))
	if err != nil {
		t.Fatal(err)
	}
	if m["nodetask_status_writes_total"] != 13 || m["nodetask_status_write_bytes_total"] != 8757248 ||
		m["nodetask_result_slice_writes_total"] != 50 || m["nodetask_result_slice_write_bytes_total"] != 1.2e6 {
		t.Errorf("metrics: %v", m)
	}
	old, err := parseMetrics(strings.NewReader("nodetask_status_writes_total 4\nnodetask_status_write_bytes_total 100\n"))
	if err != nil {
		t.Fatal(err)
	}
	if old["nodetask_result_slice_writes_total"] != 0 || old["nodetask_result_slice_write_bytes_total"] != 0 {
		t.Errorf("absent slice metrics: %v", old)
	}
}

// TestSumItems: the final size of the slices is the sum of each item's JSON, not the list's.
func TestSumItems(t *testing.T) {
	n, size, err := sumItems([]byte(`{"kind":"NodeResultSliceList","apiVersion":"nodetask.io/v1alpha1","metadata":{"resourceVersion":"7"},"items":[{"a":1},{"bb":"xy"}]}`))
	if err != nil || n != 2 || size != len(`{"a":1}`)+len(`{"bb":"xy"}`) {
		t.Errorf("sumItems: %d items, %d bytes, %v", n, size, err)
	}
	if n, size, err := sumItems([]byte(`{"items":[]}`)); err != nil || n != 0 || size != 0 {
		t.Errorf("empty list: %d, %d, %v", n, size, err)
	}
}

// TestStatusCostOf: the ratio counts the task's and the slices' bytes on both sides, the rate
// all writes per minute until Ready, the lag Ready after the last pod finished.
func TestStatusCostOf(t *testing.T) {
	r := result{ended: 60 * time.Second, ready: 61500 * time.Millisecond, writes: 13, written: 8000 << 10, sliceWrites: 28,
		sliceWritten: 1000 << 10, objectBytes: 800 << 10, sliceBytes: 100 << 10}
	s := statusCostOf(r, &taskWatch{}, time.Now())
	if s.readyLag != 1500*time.Millisecond || s.writtenPerFinal != 10 || s.writesPerMinute != 40 {
		t.Errorf("status cost: %+v", s)
	}
}

// TestRequestTime: the API server's request durations of one resource, subresource and verb,
// summed over the other labels, between two scrapes.
func TestRequestTime(t *testing.T) {
	before, _ := parseMetrics(strings.NewReader(`apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="nodetask.io",resource="nodetasks",scope="resource",subresource="status",verb="PUT",version="v1alpha1"} 2
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="nodetask.io",resource="nodetasks",scope="resource",subresource="status",verb="PUT",version="v1alpha1"} 1
`))
	after, _ := parseMetrics(strings.NewReader(`apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="nodetask.io",resource="nodetasks",scope="resource",subresource="status",verb="PUT",version="v1alpha1"} 6
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="nodetask.io",resource="nodetasks",scope="resource",subresource="status",verb="PUT",version="v1alpha1"} 4
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="nodetask.io",resource="nodetasks",scope="resource",subresource="",verb="PUT",version="v1alpha1"} 9
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="POST",version="v1"} 10
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="POST",version="v1"} 2.5
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="POST",version="v1",le="1"} 10
`))
	if n, s := requestTime(before, after, "nodetasks", "status", "PUT"); n != 4 || s != 3 {
		t.Errorf("status PUTs: %v in %v s", n, s)
	}
	if n, s := requestTime(before, after, "pods", "", "POST"); n != 10 || s != 2.5 {
		t.Errorf("pod POSTs: %v in %v s", n, s)
	}
}

// TestRequestCodes: the status PUTs by code, other resources and subresources left out.
func TestRequestCodes(t *testing.T) {
	after, _ := parseMetrics(strings.NewReader(`apiserver_request_total{code="200",component="apiserver",dry_run="",group="nodetask.io",resource="nodetasks",scope="resource",subresource="status",verb="PUT",version="v1alpha1"} 14
apiserver_request_total{code="409",component="apiserver",dry_run="",group="nodetask.io",resource="nodetasks",scope="resource",subresource="status",verb="PUT",version="v1alpha1"} 11
apiserver_request_total{code="200",component="apiserver",dry_run="",group="nodetask.io",resource="nodetasks",scope="resource",subresource="",verb="PUT",version="v1alpha1"} 3
`))
	got := requestCodes(map[string]float64{}, after, "nodetasks", "status", "PUT")
	if len(got) != 2 || got["200"] != 14 || got["409"] != 11 {
		t.Errorf("codes: %v", got)
	}
}
