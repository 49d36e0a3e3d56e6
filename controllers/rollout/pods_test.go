package rollout

import (
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/internal/testutil"
)

// golden compares got with testdata/name (go test ./controllers/rollout -run Golden -update rewrites it).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	testutil.Golden(t, filepath.Join("testdata", name), got)
}

func toYAML(t *testing.T, obj any) []byte {
	b, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGoldenScriptPod(t *testing.T) {
	task := newTask(func(t *ntv1.NodeTask) {
		t.Spec.Env = []corev1.EnvVar{{Name: "LOG_LEVEL", Value: "debug"}}
		t.Spec.Tolerations = []corev1.Toleration{{Key: "os", Value: "windows", Effect: corev1.TaintEffectNoSchedule}}
		t.Spec.PodLabels = map[string]string{"team": "platform"}
		t.Spec.PodAnnotations = map[string]string{"example.com/ticket": "OPS-42"}
		t.Spec.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}}
	})
	b := PodBuilder{DefaultScriptImage: ntv1.DefaultScriptImage}
	golden(t, "pod_script.golden.yaml", toYAML(t, b.Pod(task, 3, Revision(&task.Spec), PodRequest{Node: "akswin000001", NodeUID: "0b5a8c1e-7f2d-4c55-9a51-3f1f2c7d9e10", Attempt: 2})))
}

// TestGoldenCheckPods: the pods of a task with spec.check (the check before the claim,
// attempt 0, and the check-fix-recheck pod) and its script ConfigMap with both scripts.
func TestGoldenCheckPods(t *testing.T) {
	task := checkTask(false, func(t *ntv1.NodeTask) {
		t.Spec.Drain, t.Spec.Reboot = &ntv1.DrainSpec{}, ntv1.RebootIfRequired
		t.Spec.RebootExitCodes = []int32{3010, 1641}
	})
	b := PodBuilder{DefaultScriptImage: ntv1.DefaultScriptImage}
	rev := Revision(&task.Spec)
	req := PodRequest{Node: "akswin000001", NodeUID: "0b5a8c1e-7f2d-4c55-9a51-3f1f2c7d9e10"}
	check, fix := req, req
	fix.Attempt = 1
	golden(t, "pod_check.golden.yaml", toYAML(t, b.Pod(task, 1, rev, check)))
	golden(t, "pod_check_fix.golden.yaml", toYAML(t, b.Pod(task, 1, rev, fix)))
	golden(t, "configmap_check.golden.yaml", toYAML(t, ScriptConfigMap(task, 1, rev,
		ScriptTexts{Script: "Set-NetFirewallProfile -Name Domain -Enabled True\n", Check: *task.Spec.Check.Inline + "\n"})))
}

// TestGoldenRebootPod: the restart pod carries the task's podLabels and podAnnotations like
// every other pod of the task (admission policies and exemptions keyed on them see it too),
// and the operator's own labels and boot-ID annotation.
func TestGoldenRebootPod(t *testing.T) {
	task := newTask(func(t *ntv1.NodeTask) {
		t.Spec.Reboot = ntv1.RebootAlways
		t.Spec.PodLabels = map[string]string{"team": "platform"}
		t.Spec.PodAnnotations = map[string]string{"example.com/ticket": "OPS-42", ntv1.AnnotationBootID: "not the user's"}
	})
	b := PodBuilder{DefaultScriptImage: ntv1.DefaultScriptImage}
	pod := b.RebootPod(task, 3, Revision(&task.Spec), RebootRequest{
		PodRequest: PodRequest{Node: "akswin000001", NodeUID: "0b5a8c1e-7f2d-4c55-9a51-3f1f2c7d9e10", Attempt: 1}, BootID: "7"})
	golden(t, "pod_reboot.golden.yaml", toYAML(t, pod))
	if pod.Labels["team"] != "platform" || pod.Annotations["example.com/ticket"] != "OPS-42" || pod.Annotations[ntv1.AnnotationBootID] != "7" {
		t.Errorf("restart pod metadata: labels %v, annotations %v", pod.Labels, pod.Annotations)
	}
}

func TestGoldenContainerPod(t *testing.T) {
	task := newTask(func(t *ntv1.NodeTask) {
		t.Spec.Script = nil
		t.Spec.Container = &ntv1.ContainerSpec{Image: "registry.example.com/diag:1.4", Command: []string{"collect.exe"}, Args: []string{"--all"}}
		t.Spec.RunAsUserName = `NT AUTHORITY\Local service`
		t.Spec.ServiceAccountName = "diagnostics"
		t.Spec.TimeoutSeconds = ptr.To[int32](90)
	})
	b := PodBuilder{DefaultScriptImage: ntv1.DefaultScriptImage}
	golden(t, "pod_container.golden.yaml", toYAML(t, b.Pod(task, 1, Revision(&task.Spec), PodRequest{Node: "akswin000001", Attempt: 1})))
}

func TestGoldenScriptConfigMap(t *testing.T) {
	task := newTask()
	cm := ScriptConfigMap(task, 1, Revision(&task.Spec), ScriptTexts{Script: "Write-Output 'héllo'\n"})
	golden(t, "configmap_script.golden.yaml", toYAML(t, cm))
	golden(t, "run.ps1.golden", []byte(cm.Data[wrapperKey]))
}

func TestScriptEncodingAndInterpreters(t *testing.T) {
	g := NewWithT(t)
	ps := ScriptConfigMap(newTask(), 1, "r", ScriptTexts{Script: "\ufeffWrite-Output x"})
	g.Expect(ps.Data["script.ps1"]).To(Equal("\ufeffWrite-Output x"), "exactly one BOM, for Windows PowerShell 5.1")
	cmd := ScriptConfigMap(newTask(func(t *ntv1.NodeTask) { t.Spec.Script.Interpreter = ntv1.InterpreterCmd }), 1, "r", ScriptTexts{Script: "echo x"})
	g.Expect(cmd.Data).To(HaveKeyWithValue("script.cmd", "echo x"), "no BOM: cmd.exe would read it as a command")
	g.Expect(cmd.Data).NotTo(HaveKey("script.ps1"))
	g.Expect(*cmd.Immutable).To(BeTrue())
	// The wrapper runs scripts with -File, never -Command (cmd /c wrapping breaks -Command).
	g.Expect(wrapperScript).To(ContainSubstring("'-File'"))
	g.Expect(wrapperScript).NotTo(ContainSubstring("'-Command'"))
	g.Expect(strings.Join(wrapperCommand, " ")).To(ContainSubstring(`-File %CONTAINER_SANDBOX_MOUNT_POINT%\nodetask\run.ps1`))

	// Batch files get CRLF line endings, whatever the spec held.
	batch := ScriptConfigMap(newTask(func(t *ntv1.NodeTask) { t.Spec.Script.Interpreter = ntv1.InterpreterCmd }), 1, "r",
		ScriptTexts{Script: "@echo off\ngoto :end\r\n:end\necho done\n"})
	g.Expect(batch.Data["script.cmd"]).To(Equal("@echo off\r\ngoto :end\r\n:end\r\necho done\r\n"))
}

// TestWrapperReportsCompletion checks what the wrapper must do on a real node (it cannot run
// here): mark completion the way the operator parses it, decode output as UTF-8, and write
// the termination message only where the kubelet reads it.
func TestWrapperReportsCompletion(t *testing.T) {
	g := NewWithT(t)
	g.Expect(wrapperScript).To(ContainSubstring("`n"+CompletionMarker+"$code\""), "the marker the operator parses")
	g.Expect(wrapperScript).To(ContainSubstring("[Console]::OutputEncoding = New-Object System.Text.UTF8Encoding($false)"))
	g.Expect(wrapperScript).To(ContainSubstring(`$paths = @(Join-Path $env:CONTAINER_SANDBOX_MOUNT_POINT 'dev\termination-log')`))
	g.Expect(wrapperScript).To(ContainSubstring(`if ($env:CONTAINER_SANDBOX_MOUNT_POINT.TrimEnd('\') -eq 'C:\hpc') { $paths += 'C:\dev\termination-log' }`),
		"C:\\dev is the kubelet's file only in bind-filter mode")
	g.Expect(wrapperScript).NotTo(ContainSubstring("catch { }\n}"), "a failed write is reported, not swallowed")
}

func TestSplitCompletionMarker(t *testing.T) {
	cases := []struct {
		msg, want string
		completed bool
	}{
		{"done\nnodetask: exit code 0", "done", true},
		{"\nnodetask: exit code 0", "", true},
		{"nodetask: exit code -1073741510", "", true},
		{"line 1\nline 2\nnodetask: exit code 3", "line 1\nline 2", true},
		{"stopped half way", "stopped half way", false},
		{"nodetask: exit code 0\nmore output", "nodetask: exit code 0\nmore output", false},
		{"nodetask: exit code zero", "nodetask: exit code zero", false},
	}
	for _, tc := range cases {
		g := NewWithT(t)
		got, completed := splitCompletionMarker(tc.msg)
		g.Expect(got).To(Equal(tc.want), tc.msg)
		g.Expect(completed).To(Equal(tc.completed), tc.msg)
	}
}

func TestNames(t *testing.T) {
	g := NewWithT(t)
	long := newTask(func(t *ntv1.NodeTask) { t.Name = strings.Repeat("a", 250) })
	req := PodRequest{Node: "node", NodeUID: "machine-1", Attempt: 1}
	g.Expect(validation.IsDNS1123Subdomain(PodName(long, 1, "rev", req))).To(BeEmpty())
	g.Expect(validation.IsDNS1123Subdomain(ScriptConfigMapName(long, 1, "0123456789"))).To(BeEmpty())
	g.Expect(validation.IsValidLabelValue(TaskLabelValue(long.Name))).To(BeEmpty())
	g.Expect(TaskLabelValue(long.Name)).NotTo(Equal(TaskLabelValue(long.Name[:249] + "b")))
	task := newTask()
	name := PodName(task, 1, "r", req)
	g.Expect(PodName(task, 1, "r", req)).To(Equal(name), "names are deterministic")
	for what, other := range map[string]string{
		"attempt":  PodName(task, 1, "r", PodRequest{Node: "node", NodeUID: "machine-1", Attempt: 2}),
		"revision": PodName(task, 1, "r2", req),
		"run":      PodName(task, 2, "r", req),
		"machine":  PodName(task, 1, "r", PodRequest{Node: "node", NodeUID: "machine-2", Attempt: 1}),
		"task UID": PodName(newTask(func(t *ntv1.NodeTask) { t.UID = "other" }), 1, "r", req),
	} {
		g.Expect(other).NotTo(Equal(name), what)
	}
	g.Expect(ScriptConfigMapName(task, 2, "r")).NotTo(Equal(ScriptConfigMapName(task, 1, "r")))
}

func TestRevision(t *testing.T) {
	g := NewWithT(t)
	base := newTask()
	rev := Revision(&base.Spec)
	g.Expect(rev).To(HaveLen(revisionLength))
	for name, mutate := range map[string]func(*ntv1.NodeTask){
		"script":     func(t *ntv1.NodeTask) { t.Spec.Script.Inline = ptr.To("other") },
		"env":        func(t *ntv1.NodeTask) { t.Spec.Env = []corev1.EnvVar{{Name: "A", Value: "1"}} },
		"user":       func(t *ntv1.NodeTask) { t.Spec.RunAsUserName = "Administrators" },
		"rerunToken": func(t *ntv1.NodeTask) { t.Spec.RerunToken = "2" },
		"podLabels":  func(t *ntv1.NodeTask) { t.Spec.PodLabels = map[string]string{"a": "b"} },
	} {
		task := newTask(mutate)
		g.Expect(Revision(&task.Spec)).NotTo(Equal(rev), name)
	}
	for name, mutate := range map[string]func(*ntv1.NodeTask){
		"suspend":  func(t *ntv1.NodeTask) { t.Spec.Suspend = true },
		"selector": func(t *ntv1.NodeTask) { t.Spec.NodeNames = []string{"x"} },
		"rollout":  func(t *ntv1.NodeTask) { t.Spec.Rollout.MaxFailures = nil },
		"newNodes": func(t *ntv1.NodeTask) { t.Spec.NewNodes = ntv1.NewNodesIgnore },
		"timeout":  func(t *ntv1.NodeTask) { t.Spec.TimeoutSeconds = ptr.To[int32](5) },
		"tolerates": func(t *ntv1.NodeTask) {
			t.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
		},
	} {
		task := newTask(mutate)
		g.Expect(Revision(&task.Spec)).To(Equal(rev), name)
	}
	// What runs does change with a check and with Audit.
	g.Expect(Revision(&checkTask(false).Spec)).NotTo(Equal(rev))
	g.Expect(Revision(&checkTask(true).Spec)).NotTo(Equal(Revision(&checkTask(false).Spec)))
}

// TestRevisionSurvivesUpgrade: a field added to the API with a CRD default must not change
// the revision of a task stored before it existed, or upgrading the operator would run every
// task again on every node. The API server fills spec.mode (Apply) into every task it reads
// after the upgrade.
func TestRevisionSurvivesUpgrade(t *testing.T) {
	g := NewWithT(t)
	before := newTask()
	after := newTask(func(t *ntv1.NodeTask) { t.Spec.Mode = ntv1.ModeApply })
	g.Expect(Revision(&after.Spec)).To(Equal(Revision(&before.Spec)))
	// The revision of this spec, as the release before spec.mode computed it.
	g.Expect(Revision(&before.Spec)).To(Equal(revisionBeforeCheck))
}

// revisionBeforeCheck is Revision(newTask().Spec) as v0.1.0 computed it.
const revisionBeforeCheck = "bbfa914901"
