package argocd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

// scheduleCheckDir is the NodeTaskSchedule health check's folder, laid out as in Argo CD's
// repository. Its testdata are schedules the real controller wrote against a real API server
// (envtest, with a fake clock), managedFields left out.
var scheduleCheckDir = filepath.Join("resource_customizations", "nodetask.io", "NodeTaskSchedule")

func readFileIn(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readScheduleHealthTests(t *testing.T) healthTests {
	t.Helper()
	var tests healthTests
	if err := yaml.UnmarshalStrict(readFileIn(t, scheduleCheckDir, "health_test.yaml"), &tests); err != nil {
		t.Fatal(err)
	}
	return tests
}

// scheduleKstatusWant is what kstatus (Flux's wait) makes of each state; docs/schedules.md
// lists the same.
var scheduleKstatusWant = map[string]status.Status{
	"new.yaml":               status.InProgressStatus,
	"spec-changed.yaml":      status.InProgressStatus,
	"scheduled.yaml":         status.CurrentStatus,
	"running.yaml":           status.InProgressStatus,
	"healthy.yaml":           status.CurrentStatus,
	"no-targets.yaml":        status.InProgressStatus,
	"suspended.yaml":         status.InProgressStatus,
	"last-run-failed.yaml":   status.FailedStatus,
	"invalid-time-zone.yaml": status.FailedStatus,
}

// TestScheduleHealthCheck runs every case of the schedule's health_test.yaml as Argo CD's
// own test does (status and message must match exactly), and checks that each testdata file
// has a case and a kstatus expectation.
func TestScheduleHealthCheck(t *testing.T) {
	script := string(readFileIn(t, scheduleCheckDir, "health.lua"))
	tests := readScheduleHealthTests(t)
	tested := map[string]bool{}
	for _, tc := range tests.Tests {
		tested[tc.InputPath] = true
		t.Run(tc.InputPath, func(t *testing.T) {
			obj := readObject(t, filepath.Join(scheduleCheckDir, tc.InputPath))
			got, err := runHealthCheck(script, obj)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.HealthStatus {
				t.Errorf("got %+v, health_test.yaml says %+v", got, tc.HealthStatus)
			}
			res, err := status.Compute(obj)
			if err != nil {
				t.Fatal(err)
			}
			if want, ok := scheduleKstatusWant[filepath.Base(tc.InputPath)]; !ok || res.Status != want {
				t.Errorf("kstatus says %s (%s), want %s", res.Status, res.Message, want)
			}
		})
	}
	files, err := filepath.Glob(filepath.Join(scheduleCheckDir, "testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if rel := filepath.ToSlash(filepath.Join("testdata", filepath.Base(f))); !tested[rel] {
			t.Errorf("%s has no case in health_test.yaml", rel)
		}
	}
	if len(files) != len(scheduleKstatusWant) {
		t.Errorf("%d testdata files, %d kstatus expectations", len(files), len(scheduleKstatusWant))
	}
}

// TestScheduleHealthCheckNeedsEachRule removes each rule in turn: some case must notice.
func TestScheduleHealthCheckNeedsEachRule(t *testing.T) {
	script := string(readFileIn(t, scheduleCheckDir, "health.lua"))
	tests := readScheduleHealthTests(t)
	for _, rule := range []string{
		"if obj.status == nil or obj.status.observedGeneration == nil or",
		`if stalled ~= nil and stalled.status == "True" then`,
		"if obj.spec ~= nil and obj.spec.suspend == true then",
		`if ready ~= nil and ready.status == "True" then`,
	} {
		t.Run(rule, func(t *testing.T) {
			mutant, ok := removeBlock(script, rule)
			if !ok {
				t.Fatalf("health.lua no longer has the rule %q", rule)
			}
			for _, tc := range tests.Tests {
				got, err := runHealthCheck(mutant, readObject(t, filepath.Join(scheduleCheckDir, tc.InputPath)))
				if err != nil || got != tc.HealthStatus {
					return
				}
			}
			t.Errorf("health_test.yaml passes without the rule %q", rule)
		})
	}
}

// TestScheduleArgoCDConfigMapSnippet: argocd-cm carries the schedule's script as it is.
func TestScheduleArgoCDConfigMapSnippet(t *testing.T) {
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(readFileIn(t, filepath.Join("..", "..", "config", "argocd"), "argocd-cm.yaml"), &cm); err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSpace(string(readFileIn(t, scheduleCheckDir, "health.lua")))
	if got := cm.Data["resource.customizations.health.nodetask.io_NodeTaskSchedule"]; strings.TrimSpace(got) != want {
		t.Errorf("config/argocd/argocd-cm.yaml does not hold the schedule's health.lua as it is; run make argocd-cm")
	}
}

// TestPrintScheduleHealth prints what the check says of each testdata file (go test -v -run
// TestPrintScheduleHealth), to write health_test.yaml after a deliberate change.
func TestPrintScheduleHealth(t *testing.T) {
	if os.Getenv("PRINT_HEALTH") == "" {
		t.Skip("PRINT_HEALTH is unset")
	}
	script := string(readFileIn(t, scheduleCheckDir, "health.lua"))
	var out healthTests
	for _, name := range []string{"new", "spec-changed", "scheduled", "running", "no-targets", "suspended", "healthy", "last-run-failed", "invalid-time-zone"} {
		got, err := runHealthCheck(script, readObject(t, filepath.Join(scheduleCheckDir, "testdata", name+".yaml")))
		if err != nil {
			t.Fatal(err)
		}
		out.Tests = append(out.Tests, struct {
			HealthStatus healthStatus `json:"healthStatus"`
			InputPath    string       `json:"inputPath"`
		}{got, "testdata/" + name + ".yaml"})
	}
	b, err := yaml.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Print(string(b))
}
