package v1alpha1_test

import (
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// The Windows Update recipe (docs/windows-update.md) is two PowerShell scripts in one
// ConfigMap and two schedules that use them. Nothing here runs PowerShell; these tests keep
// the pieces consistent with each other: the same selection in both scripts (the operator
// copies only the named key into a pod, so each script carries its own copy), the exit codes
// the docs promise, and schedules that name the right keys and select the same updates.

const wuSamplesDir = "../../config/samples"

func wuReadSample(t *testing.T, name string, into any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(wuSamplesDir, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func wuScripts(t *testing.T) map[string]string {
	t.Helper()
	var cm corev1.ConfigMap
	wuReadSample(t, "windows_update_configmap.yaml", &cm)
	if cm.Name != "windows-update" || cm.Namespace != "windows-ops" {
		t.Fatalf("ConfigMap %s/%s, want windows-ops/windows-update", cm.Namespace, cm.Name)
	}
	for _, key := range []string{"check.ps1", "fix.ps1"} {
		if strings.TrimSpace(cm.Data[key]) == "" {
			t.Fatalf("the ConfigMap has no %s", key)
		}
	}
	return cm.Data
}

// wuSelectionBlock is the text from the "selection: begin" line to the "selection: end" line.
func wuSelectionBlock(t *testing.T, key, script string) string {
	t.Helper()
	begin := strings.Index(script, "# ---- selection: begin")
	end := strings.Index(script, "# ---- selection: end ----")
	if begin < 0 || end < begin {
		t.Fatalf("%s has no selection block", key)
	}
	return script[begin:end]
}

func TestWindowsUpdateScriptsShareTheirSelection(t *testing.T) {
	scripts := wuScripts(t)
	check := wuSelectionBlock(t, "check.ps1", scripts["check.ps1"])
	fix := wuSelectionBlock(t, "fix.ps1", scripts["fix.ps1"])
	if check != fix {
		t.Errorf("the selection blocks of check.ps1 and fix.ps1 differ: a node could pass the recheck with updates the fix never looked at (or the reverse)\ncheck.ps1:\n%s\nfix.ps1:\n%s", check, fix)
	}
	for _, name := range []string{"WU_CATEGORIES", "WU_ACCEPT_KBS", "WU_REJECT_KBS", "IsInstalled=0 and IsHidden=0 and Type='Software'"} {
		if !strings.Contains(check, name) {
			t.Errorf("the selection block does not use %s", name)
		}
	}
}

func TestWindowsUpdateScriptsAreASCII(t *testing.T) {
	// Windows PowerShell 5.1 reads a script file without a byte order mark in the ANSI code
	// page: anything but ASCII would depend on the host's language.
	for key, script := range wuScripts(t) {
		for i, r := range script {
			if r > 0x7e || (r < 0x20 && r != '\n') {
				t.Errorf("%s: character %q at offset %d is not printable ASCII", key, r, i)
				break
			}
		}
	}
}

var wuExitStatement = regexp.MustCompile(`\bexit\s+(\d+)`)

// wuExitCodes are the codes of the script's exit statements, comment lines left out.
func wuExitCodes(script string) []int {
	var codes []int
	for _, line := range strings.Split(script, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, m := range wuExitStatement.FindAllStringSubmatch(line, -1) {
			code, _ := strconv.Atoi(m[1])
			if !slices.Contains(codes, code) {
				codes = append(codes, code)
			}
		}
	}
	slices.Sort(codes)
	return codes
}

func TestWindowsUpdateExitCodes(t *testing.T) {
	scripts := wuScripts(t)
	// The check: 0 compliant, 1 (check.nonCompliantExitCode's default) non-compliant, 2 and
	// 3 errors, which the operator records as CheckFailed.
	if got, want := wuExitCodes(scripts["check.ps1"]), []int{0, 1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("check.ps1 exits with %v, want %v (docs/windows-update.md)", got, want)
	}
	// The fix: never 1 (PowerShell's own code for a terminating error), 3010 only for
	// "installed, restart needed".
	if got, want := wuExitCodes(scripts["fix.ps1"]), []int{0, 2, 3, 4, 5, 3010}; !slices.Equal(got, want) {
		t.Errorf("fix.ps1 exits with %v, want %v (docs/windows-update.md)", got, want)
	}
	for key, script := range scripts {
		if !strings.Contains(script, "trap {") {
			t.Errorf("%s has no trap: an unexpected error would exit 1, which reads as non-compliant", key)
		}
	}
}

func wuSelectionEnv(env []corev1.EnvVar) map[string]string {
	s := map[string]string{}
	for _, e := range env {
		if e.Name == "WU_CATEGORIES" || e.Name == "WU_ACCEPT_KBS" || e.Name == "WU_REJECT_KBS" {
			s[e.Name] = e.Value
		}
	}
	return s
}

func TestWindowsUpdateSchedulesUseTheRecipe(t *testing.T) {
	scripts := wuScripts(t)
	ref := func(r *ntv1.ConfigMapKeyReference) string {
		if r == nil {
			return ""
		}
		if _, ok := scripts[r.Key]; !ok || r.Name != "windows-update" {
			t.Errorf("configMapKeyRef %s/%s is not a key of the windows-update ConfigMap", r.Name, r.Key)
		}
		return r.Key
	}

	var patch, audit ntv1.NodeTaskSchedule
	wuReadSample(t, "nodetaskschedule_v1alpha1_weekly_patch.yaml", &patch)
	wuReadSample(t, "nodetaskschedule_v1alpha1_daily_audit.yaml", &audit)

	p := patch.Spec.Template.Spec
	if p.Check == nil || ref(p.Check.ConfigMapKeyRef) != "check.ps1" {
		t.Error("weekly-patch: spec.check must be check.ps1 of the windows-update ConfigMap")
	}
	if p.Script == nil || ref(p.Script.ConfigMapKeyRef) != "fix.ps1" {
		t.Error("weekly-patch: spec.script must be fix.ps1 of the windows-update ConfigMap")
	}
	if p.Reboot != ntv1.RebootIfRequired || p.Drain == nil || p.Window == nil {
		t.Error("weekly-patch: keep drain, reboot IfRequired and the window")
	}

	a := audit.Spec.Template.Spec
	if a.Mode != ntv1.ModeAudit {
		t.Errorf("daily audit: mode %q, want Audit", a.Mode)
	}
	if a.Check == nil || ref(a.Check.ConfigMapKeyRef) != "check.ps1" {
		t.Error("daily audit: spec.check must be check.ps1 of the windows-update ConfigMap")
	}

	ps, as := wuSelectionEnv(p.Env), wuSelectionEnv(a.Env)
	if len(ps) == 0 || !maps.Equal(ps, as) {
		t.Errorf("the weekly patch selects %v and the daily audit %v: the audit would report drift the patch never repairs (or the reverse)", ps, as)
	}
}
