package main

import (
	"strings"
	"testing"
)

// TestParseMetricsAndCountDelta: the schedule benchmark's request counts come from these two
// scrapes of Prometheus text; a label value with a space or a brace, a timestamp after the
// value and comments must not shift what is counted.
func TestParseMetricsAndCountDelta(t *testing.T) {
	before, err := parseMetrics(strings.NewReader(`# HELP rest_client_requests_total Number of HTTP requests
# TYPE rest_client_requests_total counter
rest_client_requests_total{code="200",host="127.0.0.1:6443",method="GET"} 10
rest_client_requests_total{code="201",host="127.0.0.1:6443",method="POST"} 3
nodetask_status_writes_total 4
`))
	if err != nil {
		t.Fatal(err)
	}
	after, err := parseMetrics(strings.NewReader(`rest_client_requests_total{code="200",host="127.0.0.1:6443",method="GET"} 15 1700000000000
rest_client_requests_total{code="201",host="127.0.0.1:6443",method="POST"} 8
rest_client_requests_total{code="409",host="127.0.0.1:6443",method="POST"} 1
apiserver_request_total{code="201",dry_run="All",resource="pods",subresource="",verb="POST"} 2
apiserver_request_total{code="200",resource="nodetasks",subresource="status",verb="PUT",note="a } b"} 7
nodetask_status_writes_total 9
`))
	if err != nil {
		t.Fatal(err)
	}
	if after["nodetask_status_writes_total"] != 9 {
		t.Errorf("unlabelled sample: %v", after)
	}
	byMethod := countDelta(before, after, "rest_client_requests_total", func(s string) string { return labelValue(s, "method") })
	if byMethod["GET"] != 5 || byMethod["POST"] != 6 || len(byMethod) != 2 {
		t.Errorf("by method: %v", byMethod)
	}
	series := `apiserver_request_total{code="201",dry_run="All",resource="pods",subresource="",verb="POST"}`
	if labelValue(series, "code") != "201" || labelValue(series, "dry_run") != "All" || labelValue(series, "subresource") != "" || labelValue(series, "run") != "" {
		t.Errorf("labelValue of %s", series)
	}
	if got := sortedByCount(map[string]float64{"b": 1, "a": 1, "c": 3}); strings.Join(got, "") != "cab" {
		t.Errorf("sortedByCount: %v", got)
	}
}
