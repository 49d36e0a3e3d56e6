package argocd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

// checkDir is the health check's folder, as it would sit in Argo CD's repository.
var checkDir = filepath.Join("resource_customizations", "nodetask.io", "NodeTask")

// healthStatus is what a health check returns, as Argo CD reads it.
type healthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// healthTests is Argo CD's health_test.yaml.
type healthTests struct {
	Tests []struct {
		HealthStatus healthStatus `json:"healthStatus"`
		InputPath    string       `json:"inputPath"`
	} `json:"tests"`
}

// argoHealthCodes are the statuses Argo CD accepts from a health check.
var argoHealthCodes = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

// runHealthCheck runs a health script on an object the way Argo CD's application controller
// does for a check configured in argocd-cm without useOpenLibs: a gopher-lua state with only
// the package, base and table libraries (no string library), the object as the global obj,
// decoded as Argo CD decodes unstructured objects, and a one-second limit.
func runHealthCheck(script string, obj *unstructured.Unstructured) (healthStatus, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return healthStatus{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, obj.Object))
	if err := l.DoString(script); err != nil {
		return healthStatus{}, err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return healthStatus{}, errors.New("the health check did not return a table")
	}
	hs := healthStatus{Status: lua.LVAsString(ret.RawGetString("status")), Message: lua.LVAsString(ret.RawGetString("message"))}
	if !argoHealthCodes[hs.Status] {
		return hs, errors.New("not an Argo CD health status: " + hs.Status)
	}
	return hs, nil
}

// decodeValue turns an unstructured value into a Lua value as Argo CD does: maps become
// tables keyed by strings, lists 1-indexed arrays, numbers Lua numbers, null nil.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

func readObject(t *testing.T, path string) *unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{}
	// The unstructured decoder keeps integers as int64, as the API server's client does.
	if err := obj.UnmarshalJSON(js); err != nil {
		t.Fatal(err)
	}
	return obj
}

func readScript(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(checkDir, "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func readHealthTests(t *testing.T) healthTests {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(checkDir, "health_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var tests healthTests
	if err := yaml.UnmarshalStrict(b, &tests); err != nil {
		t.Fatal(err)
	}
	return tests
}

// TestHealthCheck runs every case of health_test.yaml as Argo CD's own test does: status and
// message must match exactly.
func TestHealthCheck(t *testing.T) {
	script := readScript(t)
	tests := readHealthTests(t)
	if len(tests.Tests) == 0 {
		t.Fatal("health_test.yaml has no test")
	}
	for _, tc := range tests.Tests {
		t.Run(tc.InputPath, func(t *testing.T) {
			got, err := runHealthCheck(script, readObject(t, filepath.Join(checkDir, tc.InputPath)))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.HealthStatus {
				t.Errorf("got %+v, health_test.yaml says %+v", got, tc.HealthStatus)
			}
		})
	}
}

// TestEveryTestdataFileIsTested keeps testdata and health_test.yaml in step.
func TestEveryTestdataFileIsTested(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(checkDir, "testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tested := map[string]bool{}
	for _, tc := range readHealthTests(t).Tests {
		tested[tc.InputPath] = true
	}
	for _, f := range files {
		rel := filepath.ToSlash(filepath.Join("testdata", filepath.Base(f)))
		if !tested[rel] {
			t.Errorf("%s has no case in health_test.yaml", rel)
		}
	}
}

// TestArgoCDConfigMapSnippet checks that the argocd-cm snippet carries the same script, for
// the key Argo CD looks up, without asking for the open libraries.
func TestArgoCDConfigMapSnippet(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "config", "argocd", "argocd-cm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	if got := cm.Data["resource.customizations.health.nodetask.io_NodeTask"]; strings.TrimSpace(got) != strings.TrimSpace(readScript(t)) {
		t.Errorf("config/argocd/argocd-cm.yaml does not hold health.lua as it is; copy it again")
	}
	if v, ok := cm.Data["resource.customizations.useOpenLibs.nodetask.io_NodeTask"]; ok && v == "true" {
		t.Errorf("the check needs no open libraries; the snippet should not ask for them")
	}
}

// kstatusWant is what kstatus makes of each state; docs/gitops.md lists the same.
var kstatusWant = map[string]status.Status{
	"new.yaml":                   status.InProgressStatus,
	"spec-changed.yaml":          status.InProgressStatus,
	"progressing.yaml":           status.InProgressStatus,
	"retry-backoff.yaml":         status.InProgressStatus,
	"waiting-for-nodes.yaml":     status.InProgressStatus,
	"suspended.yaml":             status.InProgressStatus,
	"no-targets.yaml":            status.InProgressStatus,
	"awaiting-approval.yaml":     status.InProgressStatus, // Reconciling=True: a wait goes on through the pause
	"health-check-failing.yaml":  status.InProgressStatus, // Reconciling=True until failAfterSeconds makes it Stalled
	"healthy.yaml":               status.CurrentStatus,
	"healthy-with-failures.yaml": status.CurrentStatus,
	"remediated.yaml":            status.CurrentStatus,
	// The audit is done: Current for kstatus, Degraded for Argo CD (docs/compliance.md).
	"audit-noncompliant.yaml":      status.CurrentStatus,
	"failure-budget-exceeded.yaml": status.FailedStatus,
	"pod-security-rejected.yaml":   status.FailedStatus,
	"configmap-missing.yaml":       status.FailedStatus,
}

// TestKstatusConformance computes, for every object the simulated cluster produced, what
// kstatus (Flux's wait and healthChecks, kpt, cli-utils) makes of it.
func TestKstatusConformance(t *testing.T) {
	want := kstatusWant
	files, err := filepath.Glob(filepath.Join(checkDir, "testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(want) {
		t.Errorf("%d testdata files, %d expectations: add the new state here and to docs/gitops.md", len(files), len(want))
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			obj := readObject(t, f)
			res, err := status.Compute(obj)
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != want[name] {
				t.Errorf("kstatus says %s (%s), want %s", res.Status, res.Message, want[name])
			}
			conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
			if obj.GetGeneration() == 1 && len(conds) == 0 && name != "new.yaml" {
				t.Errorf("no conditions: Ready must exist from the first reconcile")
			}
			if len(conds) > 0 {
				types := map[string]string{}
				for _, c := range conds {
					m := c.(map[string]any)
					types[m["type"].(string)] = m["status"].(string)
				}
				for _, typ := range []string{"Ready", "Reconciling", "Stalled"} {
					if _, ok := types[typ]; !ok {
						t.Errorf("condition %s is missing", typ)
					}
				}
				if types["Stalled"] == "True" && types["Ready"] != "False" {
					t.Errorf("Stalled=True needs Ready=False")
				}
			}
		})
	}
}

// TestHealthCheckNeedsEachRule removes each rule of the check in turn and expects the cases
// of health_test.yaml to notice: no rule is there without a case that depends on it.
func TestHealthCheckNeedsEachRule(t *testing.T) {
	script := readScript(t)
	tests := readHealthTests(t)
	for _, rule := range []string{
		"if obj.status == nil or obj.status.observedGeneration == nil or", // a generation not yet observed
		`if stalled ~= nil and stalled.status == "True" then`,             // Stalled is Degraded
		"if obj.spec ~= nil and obj.spec.suspend == true then",            // suspended
		`if ready ~= nil and ready.status == "True" then`,                 // Ready is Healthy
		`reconciling.reason == "AwaitingApproval" then`,                   // waiting for approval is Suspended
		`if reconciling ~= nil and reconciling.status == "False"`,         // idle, with Ready's message
	} {
		t.Run(rule, func(t *testing.T) {
			mutant, ok := removeBlock(script, rule)
			if !ok {
				t.Fatalf("health.lua no longer has the rule %q", rule)
			}
			for _, tc := range tests.Tests {
				got, err := runHealthCheck(mutant, readObject(t, filepath.Join(checkDir, tc.InputPath)))
				if err != nil {
					t.Fatalf("the check without the rule does not run, so this proves nothing: %v", err)
				}
				if got != tc.HealthStatus {
					return // a case noticed
				}
			}
			t.Errorf("health_test.yaml passes without the rule %q", rule)
		})
	}
}

// removeBlock removes the Lua block that starts on the line holding start, up to and with
// the first line that is a bare "end".
func removeBlock(script, start string) (string, bool) {
	lines := strings.Split(script, "\n")
	for i, line := range lines {
		if !strings.Contains(line, start) {
			continue
		}
		for j := i + 1; j < len(lines); j++ {
			if strings.TrimSpace(lines[j]) == "end" {
				return strings.Join(append(lines[:i:i], lines[j+1:]...), "\n"), true
			}
		}
	}
	return script, false
}

// TestGitOpsDocsTable checks the table of docs/gitops.md against what the tests establish:
// every state's Argo CD health and kstatus status.
func TestGitOpsDocsTable(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "gitops.md"))
	if err != nil {
		t.Fatal(err)
	}
	argo := map[string]string{}
	for _, tc := range readHealthTests(t).Tests {
		argo[filepath.Base(tc.InputPath)] = tc.HealthStatus.Status
	}
	rows := 0
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 6 || !strings.HasSuffix(strings.Trim(strings.TrimSpace(cells[2]), "`"), ".yaml") {
			continue
		}
		file := strings.Trim(strings.TrimSpace(cells[2]), "`")
		rows++
		if got := strings.TrimSpace(cells[3]); got != argo[file] {
			t.Errorf("docs/gitops.md says Argo CD shows %s for %s; health_test.yaml says %s", got, file, argo[file])
		}
		obj := readObject(t, filepath.Join(checkDir, "testdata", file))
		res, err := status.Compute(obj)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(cells[4]); got != res.Status.String() {
			t.Errorf("docs/gitops.md says kstatus gives %s for %s; it gives %s", got, file, res.Status)
		}
	}
	if rows != len(argo) {
		t.Errorf("docs/gitops.md has %d states, health_test.yaml %d", rows, len(argo))
	}
}

// TestFreshTestdata checks objects the generator has just produced (ARGOCD_TESTDATA names
// their folder; `make test-argocd-testdata` sets it): each state must still give the Argo CD
// status and the kstatus status the committed testdata give. Messages may differ: they name
// pods whose names hash the task's UID.
func TestFreshTestdata(t *testing.T) {
	dir := os.Getenv("ARGOCD_TESTDATA")
	if dir == "" {
		t.Skip("ARGOCD_TESTDATA is unset; `make test-argocd-testdata` runs this")
	}
	script := readScript(t)
	argo := map[string]string{}
	for _, tc := range readHealthTests(t).Tests {
		argo[filepath.Base(tc.InputPath)] = tc.HealthStatus.Status
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(argo) {
		t.Errorf("the generator wrote %d objects, the committed testdata has %d", len(files), len(argo))
	}
	for _, f := range files {
		name := filepath.Base(f)
		obj := readObject(t, f)
		got, err := runHealthCheck(script, obj)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != argo[name] {
			t.Errorf("%s: Argo CD health %s (%s), the committed testdata gives %s", name, got.Status, got.Message, argo[name])
		}
		res, err := status.Compute(obj)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != kstatusWant[name] {
			t.Errorf("%s: kstatus %s, want %s", name, res.Status, kstatusWant[name])
		}
	}
}
