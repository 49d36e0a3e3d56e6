package v1alpha1_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

func validTask(name string) *ntv1.NodeTask {
	return &ntv1.NodeTask{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: ntv1.NodeTaskSpec{
			Script: &ntv1.ScriptSpec{Inline: ptr.To("Write-Output hello")},
		},
	}
}

// validCheck is an inline check with the defaults left to the API server.
func validCheck() *ntv1.CheckSpec {
	return &ntv1.CheckSpec{Inline: ptr.To("if (Test-Path C:\\ok) { exit 0 } else { exit 1 }")}
}

// auditOnly turns validTask into a valid Audit task: the check alone, no script.
func auditOnly(t *ntv1.NodeTask) {
	t.Spec.Script = nil
	t.Spec.Mode = ntv1.ModeAudit
	t.Spec.Check = validCheck()
}

// invalidCases are mistakes a user can make, and the words the API server must answer with.
// TestEveryRuleIsTested checks that every CEL rule of the CRD has a case here, so that
// removing any rule makes this suite fail.
var invalidCases = []struct {
	name    string
	mutate  func(*ntv1.NodeTask)
	message string
}{
	{"both script and container", func(t *ntv1.NodeTask) {
		t.Spec.Container = &ntv1.ContainerSpec{Image: "example.com/tool:1"}
	}, "set exactly one of spec.script"},
	{"a health check with both name and selector", func(t *ntv1.NodeTask) {
		t.Spec.Rollout.HealthChecks = []ntv1.HealthCheck{{Name: "ingress", Expression: "true", Object: ntv1.HealthCheckObject{
			APIVersion: "apps/v1", Kind: "Deployment", Name: "ingress",
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ingress"}}}}}
	}, "a health check's object needs exactly one of name or selector"},
	{"a health check with neither name nor selector", func(t *ntv1.NodeTask) {
		t.Spec.Rollout.HealthChecks = []ntv1.HealthCheck{{Name: "ingress", Expression: "true", Object: ntv1.HealthCheckObject{
			APIVersion: "apps/v1", Kind: "Deployment"}}}
	}, "a health check's object needs exactly one of name or selector"},
	{"a health check of a Secret", func(t *ntv1.NodeTask) {
		t.Spec.Rollout.HealthChecks = []ntv1.HealthCheck{{Name: "creds", Expression: "true", Object: ntv1.HealthCheckObject{
			APIVersion: "v1", Kind: "Secret", Name: "db"}}}
	}, "a health check cannot read Secrets"},
	{"a health check named with capitals", func(t *ntv1.NodeTask) {
		t.Spec.Rollout.HealthChecks = []ntv1.HealthCheck{{Name: "Ingress", Expression: "true", Object: ntv1.HealthCheckObject{
			APIVersion: "apps/v1", Kind: "Deployment", Name: "ingress"}}}
	}, "spec.rollout.healthChecks[0].name: Invalid value"},
	{"neither script nor container", func(t *ntv1.NodeTask) {
		t.Spec.Script = nil
	}, "set exactly one of spec.script"},
	{"both inline and configMapKeyRef", func(t *ntv1.NodeTask) {
		t.Spec.Script.ConfigMapKeyRef = &ntv1.ConfigMapKeyReference{Name: "scripts", Key: "a.ps1"}
	}, "set exactly one of script.inline"},
	{"neither inline nor configMapKeyRef", func(t *ntv1.NodeTask) {
		t.Spec.Script.Inline = nil
	}, "set exactly one of script.inline"},
	{"an empty inline script", func(t *ntv1.NodeTask) {
		t.Spec.Script.Inline = ptr.To("")
	}, "script.inline must not be empty"},
	{"a blank inline script", func(t *ntv1.NodeTask) {
		t.Spec.Script.Inline = ptr.To(" \n\t")
	}, "script.inline must not be empty"},
	{"runAsUserName in another domain", func(t *ntv1.NodeTask) {
		t.Spec.RunAsUserName = `CONTOSO\admin`
	}, "runAsUserName must be NT AUTHORITY"},
	{"runAsUserName with a forbidden character", func(t *ntv1.NodeTask) {
		t.Spec.RunAsUserName = "ops@contoso"
	}, "runAsUserName must be NT AUTHORITY"},
	{"runAsUserName longer than the API server allows", func(t *ntv1.NodeTask) {
		t.Spec.RunAsUserName = strings.Repeat("g", 105)
	}, "runAsUserName must be at most 104 characters"},
	{"runAsUserName with a control character", func(t *ntv1.NodeTask) {
		t.Spec.RunAsUserName = "node\tops"
	}, "runAsUserName must not contain control characters"},
	{"an env variable the operator sets", func(t *ntv1.NodeTask) {
		t.Spec.Env = []corev1.EnvVar{{Name: "NODETASK_INTERPRETER", Value: "Cmd"}}
	}, "env names must not start with NODETASK_"},
	{"a container command with a cmd metacharacter", func(t *ntv1.NodeTask) {
		t.Spec.Script = nil
		t.Spec.Container = &ntv1.ContainerSpec{Image: "example.com/tool:1", Command: []string{"tool.exe", "a&b"}}
	}, "container.command must not contain"},
	{"a container program path with a space", func(t *ntv1.NodeTask) {
		t.Spec.Script = nil
		t.Spec.Container = &ntv1.ContainerSpec{Image: "example.com/tool:1", Command: []string{`C:\Program Files\Tool\tool.exe`}}
	}, "container.command[0] must not contain a space"},
	{"container args with an environment variable", func(t *ntv1.NodeTask) {
		t.Spec.Script = nil
		t.Spec.Container = &ntv1.ContainerSpec{Image: "example.com/tool:1", Args: []string{"--path", "%PATH%"}}
	}, "container.args must not contain"},
	{"a window that opens and closes at once", func(t *ntv1.NodeTask) {
		t.Spec.Window = &ntv1.MaintenanceWindow{Start: "02:00", End: "02:00"}
	}, "window.start and window.end must differ"},
	{"a window time past midnight", func(t *ntv1.NodeTask) {
		t.Spec.Window = &ntv1.MaintenanceWindow{Start: "24:30", End: "02:00"}
	}, "spec.window.start"},
	{"a window on a day that does not exist", func(t *ntv1.NodeTask) {
		t.Spec.Window = &ntv1.MaintenanceWindow{Days: []ntv1.Weekday{"Funday"}, Start: "01:00", End: "02:00"}
	}, "spec.window.days[0]"},
	{"runAsUserName of dots only", func(t *ntv1.NodeTask) {
		t.Spec.RunAsUserName = ".."
	}, "runAsUserName must be NT AUTHORITY"},
	{"maxConcurrent 0", func(t *ntv1.NodeTask) {
		t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromInt32(0))
	}, "rollout.maxConcurrent must be a whole number of at least 1"},
	{`maxConcurrent "0%"`, func(t *ntv1.NodeTask) {
		t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("0%"))
	}, "rollout.maxConcurrent must be a whole number of at least 1"},
	{`maxConcurrent "101%"`, func(t *ntv1.NodeTask) {
		t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("101%"))
	}, "rollout.maxConcurrent must be a whole number of at least 1"},
	{"a nodeSelector expression with an unknown operator", func(t *ntv1.NodeTask) {
		t.Spec.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "pool", Operator: "Equals", Values: []string{"win22"}}}}
	}, "nodeSelector.matchExpressions[].operator must be one of In, NotIn, Exists, DoesNotExist"},
	{"a nodeSelector In expression without values", func(t *ntv1.NodeTask) {
		t.Spec.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "pool", Operator: metav1.LabelSelectorOpIn}}}
	}, "with operator In or NotIn needs at least one value"},
	{"a nodeSelector Exists expression with values", func(t *ntv1.NodeTask) {
		t.Spec.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "pool", Operator: metav1.LabelSelectorOpExists, Values: []string{"x"}}}}
	}, "with operator Exists or DoesNotExist must not have values"},
	{"maxConcurrent a malformed percentage", func(t *ntv1.NodeTask) {
		t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("25 percent"))
	}, "rollout.maxConcurrent must be a whole number of at least 1"},
	{"a negative maxFailures", func(t *ntv1.NodeTask) {
		t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromInt32(-1))
	}, "rollout.maxFailures must be a whole number of at least 0"},
	{`maxFailures "150%"`, func(t *ntv1.NodeTask) {
		t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromString("150%"))
	}, "rollout.maxFailures must be a whole number of at least 0"},
	{"firstBatch 0", func(t *ntv1.NodeTask) {
		t.Spec.Rollout.FirstBatch = ptr.To(intstr.FromInt32(0))
	}, "rollout.firstBatch must be a whole number of at least 1"},
	{"a negative firstBatch", func(t *ntv1.NodeTask) {
		t.Spec.Rollout.FirstBatch = ptr.To(intstr.FromInt32(-2))
	}, "rollout.firstBatch must be a whole number of at least 1"},
	{`firstBatch "0%"`, func(t *ntv1.NodeTask) {
		t.Spec.Rollout.FirstBatch = ptr.To(intstr.FromString("0%"))
	}, "rollout.firstBatch must be a whole number of at least 1"},
	{`firstBatch "101%"`, func(t *ntv1.NodeTask) {
		t.Spec.Rollout.FirstBatch = ptr.To(intstr.FromString("101%"))
	}, "rollout.firstBatch must be a whole number of at least 1"},
	{`firstBatch "2" (a number as a string)`, func(t *ntv1.NodeTask) {
		t.Spec.Rollout.FirstBatch = ptr.To(intstr.FromString("2"))
	}, "rollout.firstBatch must be a whole number of at least 1"},
	{"firstBatch a malformed percentage", func(t *ntv1.NodeTask) {
		t.Spec.Rollout.FirstBatch = ptr.To(intstr.FromString("10 %"))
	}, "rollout.firstBatch must be a whole number of at least 1"},
	{"pauseAfterFirstBatch without firstBatch", func(t *ntv1.NodeTask) {
		t.Spec.Rollout.PauseAfterFirstBatch = true
	}, "rollout.pauseAfterFirstBatch needs rollout.firstBatch"},
	{"pauseAfterFirstBatch and approvedRun without firstBatch", func(t *ntv1.NodeTask) {
		t.Spec.Rollout.PauseAfterFirstBatch = true
		t.Spec.Rollout.ApprovedRun = 1
	}, "rollout.pauseAfterFirstBatch needs rollout.firstBatch"},
	{"a negative approvedRun", func(t *ntv1.NodeTask) {
		t.Spec.Rollout.FirstBatch = ptr.To(intstr.FromInt32(1))
		t.Spec.Rollout.PauseAfterFirstBatch = true
		t.Spec.Rollout.ApprovedRun = -1
	}, "spec.rollout.approvedRun in body should be greater than or equal to 0"},
	{"a negative minReadySeconds", func(t *ntv1.NodeTask) {
		t.Spec.Rollout.MinReadySeconds = -1
	}, "spec.rollout.minReadySeconds in body should be greater than or equal to 0"},
	{"minReadySeconds over an hour", func(t *ntv1.NodeTask) {
		t.Spec.Rollout.MinReadySeconds = 3601
	}, "spec.rollout.minReadySeconds in body should be less than or equal to 3600"},
	{"timeoutSeconds 0", func(t *ntv1.NodeTask) {
		t.Spec.TimeoutSeconds = ptr.To[int32](0)
	}, "timeoutSeconds must be at least 1"},
	{"timeoutSeconds over a week", func(t *ntv1.NodeTask) {
		t.Spec.TimeoutSeconds = ptr.To[int32](604801)
	}, "timeoutSeconds must be at most 604800"},
	{"retries 11", func(t *ntv1.NodeTask) {
		t.Spec.Retries = ptr.To[int32](11)
	}, "retries must be between 0 and 10"},
	{"negative retries", func(t *ntv1.NodeTask) {
		t.Spec.Retries = ptr.To[int32](-1)
	}, "retries must be between 0 and 10"},
	{"a reserved pod label", func(t *ntv1.NodeTask) {
		t.Spec.PodLabels = map[string]string{"nodetask.io/task": "other"}
	}, "podLabels must not use the nodetask.io/ prefix"},
	{"an unknown interpreter", func(t *ntv1.NodeTask) {
		t.Spec.Script.Interpreter = "bash"
	}, `Unsupported value: "bash"`},
	{"an unknown newNodes policy", func(t *ntv1.NodeTask) {
		t.Spec.NewNodes = "Sometimes"
	}, `Unsupported value: "Sometimes"`},
	{"a reboot timeout under a minute", func(t *ntv1.NodeTask) {
		t.Spec.RebootTimeoutSeconds = ptr.To[int32](30)
	}, "rebootTimeoutSeconds must be between 60 and 86400"},
	{"an unknown reboot policy", func(t *ntv1.NodeTask) {
		t.Spec.Reboot = "Sometimes"
	}, `Unsupported value: "Sometimes"`},
	{"a drain timeout of 0", func(t *ntv1.NodeTask) {
		t.Spec.Drain = &ntv1.DrainSpec{TimeoutSeconds: ptr.To[int32](0)}
	}, "drain.timeoutSeconds must be between 1 and 86400"},
	{"a drain podSelector with an unknown operator", func(t *ntv1.NodeTask) {
		t.Spec.Drain = &ntv1.DrainSpec{PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "app", Operator: "Gt", Values: []string{"1"}}}}}
	}, "drain.podSelector.matchExpressions[].operator must be one of"},
	{"a drain podSelector In without values", func(t *ntv1.NodeTask) {
		t.Spec.Drain = &ntv1.DrainSpec{PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "app", Operator: metav1.LabelSelectorOpIn}}}}
	}, "drain.podSelector.matchExpressions[] with operator In or NotIn needs at least one value"},
	{"a drain podSelector Exists with values", func(t *ntv1.NodeTask) {
		t.Spec.Drain = &ntv1.DrainSpec{PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "app", Operator: metav1.LabelSelectorOpExists, Values: []string{"x"}}}}}
	}, "drain.podSelector.matchExpressions[] with operator Exists or DoesNotExist must not have values"},
	{"a container without image", func(t *ntv1.NodeTask) {
		t.Spec.Script = nil
		t.Spec.Container = &ntv1.ContainerSpec{}
	}, "spec.container.image"},
	{"a check with neither script nor container in mode Apply", func(t *ntv1.NodeTask) {
		t.Spec.Script = nil
		t.Spec.Check = validCheck()
	}, "only a task with mode Audit, which runs spec.check alone, may have neither"},
	{"a check with a container", func(t *ntv1.NodeTask) {
		t.Spec.Script = nil
		t.Spec.Container = &ntv1.ContainerSpec{Image: "example.com/tool:1"}
		t.Spec.Check = validCheck()
	}, "spec.check runs through the script wrapper, which a container task does not have"},
	{"mode Audit without a check", func(t *ntv1.NodeTask) {
		t.Spec.Script = nil
		t.Spec.Mode = ntv1.ModeAudit
	}, "mode Audit runs only spec.check: set spec.check"},
	{"mode Audit with a script", func(t *ntv1.NodeTask) {
		t.Spec.Mode = ntv1.ModeAudit
		t.Spec.Check = validCheck()
	}, "mode Audit changes nothing, so it runs no spec.script or spec.container"},
	{"mode Audit with a container", func(t *ntv1.NodeTask) {
		t.Spec.Script = nil
		t.Spec.Container = &ntv1.ContainerSpec{Image: "example.com/tool:1"}
		t.Spec.Mode = ntv1.ModeAudit
		t.Spec.Check = validCheck()
	}, "mode Audit changes nothing, so it runs no spec.script or spec.container"},
	{"mode Audit that cordons", func(t *ntv1.NodeTask) {
		auditOnly(t)
		t.Spec.Cordon = true
	}, "mode Audit changes nothing: it cannot cordon, drain or reboot nodes"},
	{"mode Audit that drains", func(t *ntv1.NodeTask) {
		auditOnly(t)
		t.Spec.Drain = &ntv1.DrainSpec{}
	}, "mode Audit changes nothing: it cannot cordon, drain or reboot nodes"},
	{"mode Audit that reboots IfRequired", func(t *ntv1.NodeTask) {
		auditOnly(t)
		t.Spec.Reboot = ntv1.RebootIfRequired
	}, "mode Audit changes nothing: it cannot cordon, drain or reboot nodes"},
	{"mode Audit that reboots Always", func(t *ntv1.NodeTask) {
		auditOnly(t)
		t.Spec.Reboot = ntv1.RebootAlways
	}, "mode Audit changes nothing: it cannot cordon, drain or reboot nodes"},
	{"check.nonCompliantExitCode one of the default rebootExitCodes", func(t *ntv1.NodeTask) {
		t.Spec.Check = validCheck()
		t.Spec.Check.NonCompliantExitCode = ptr.To[int32](3010)
	}, "check.nonCompliantExitCode must not be one of rebootExitCodes"},
	{"check.nonCompliantExitCode one of custom rebootExitCodes", func(t *ntv1.NodeTask) {
		t.Spec.RebootExitCodes = []int32{3010, 7}
		t.Spec.Check = validCheck()
		t.Spec.Check.NonCompliantExitCode = ptr.To[int32](7)
	}, "check.nonCompliantExitCode must not be one of rebootExitCodes"},
	{"check.nonCompliantExitCode defaulted to 1, one of rebootExitCodes", func(t *ntv1.NodeTask) {
		t.Spec.RebootExitCodes = []int32{1}
		t.Spec.Check = validCheck()
	}, "check.nonCompliantExitCode must not be one of rebootExitCodes"},
	{"a check with both inline and configMapKeyRef", func(t *ntv1.NodeTask) {
		t.Spec.Check = validCheck()
		t.Spec.Check.ConfigMapKeyRef = &ntv1.ConfigMapKeyReference{Name: "checks", Key: "test.ps1"}
	}, "set exactly one of check.inline"},
	{"a check with neither inline nor configMapKeyRef", func(t *ntv1.NodeTask) {
		t.Spec.Check = &ntv1.CheckSpec{Interpreter: ntv1.InterpreterPwsh}
	}, "set exactly one of check.inline"},
	{"an empty inline check", func(t *ntv1.NodeTask) {
		t.Spec.Check = &ntv1.CheckSpec{Inline: ptr.To("")}
	}, "check.inline must not be empty"},
	{"a blank inline check", func(t *ntv1.NodeTask) {
		t.Spec.Check = &ntv1.CheckSpec{Inline: ptr.To(" \r\n\t")}
	}, "check.inline must not be empty"},
	{"check.nonCompliantExitCode 0", func(t *ntv1.NodeTask) {
		t.Spec.Check = validCheck()
		t.Spec.Check.NonCompliantExitCode = ptr.To[int32](0)
	}, "check.nonCompliantExitCode must not be 0, which means compliant"},
	{"an unknown mode", func(t *ntv1.NodeTask) {
		t.Spec.Mode = "DryRun"
	}, `Unsupported value: "DryRun"`},
	{"an unknown check interpreter", func(t *ntv1.NodeTask) {
		t.Spec.Check = validCheck()
		t.Spec.Check.Interpreter = "bash"
	}, `Unsupported value: "bash"`},
}

func invalidEntries() []TableEntry {
	entries := make([]TableEntry, len(invalidCases))
	for i, c := range invalidCases {
		entries[i] = Entry(c.name, c.mutate, c.message)
	}
	return entries
}

var _ = Describe("NodeTask validation", func() {
	It("fills in the documented defaults", func() {
		task := validTask("defaults")
		Expect(k8sClient.Create(ctx, task)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, task)

		Expect(task.Spec.RunAsUserName).To(Equal(`NT AUTHORITY\SYSTEM`))
		Expect(task.Spec.TimeoutSeconds).To(HaveValue(BeEquivalentTo(600)))
		Expect(task.Spec.Retries).To(HaveValue(BeEquivalentTo(0)))
		Expect(task.Spec.Rollout.MaxConcurrent).To(HaveValue(Equal(intstr.FromString("25%"))))
		Expect(task.Spec.Rollout.MaxFailures).To(HaveValue(Equal(intstr.FromInt32(0))))
		Expect(task.Spec.NewNodes).To(Equal(ntv1.NewNodesRun))
		Expect(task.Spec.Script.Interpreter).To(Equal(ntv1.InterpreterPowerShell))
		Expect(task.Spec.RebootExitCodes).To(Equal([]int32{3010, 1641}))
		Expect(task.Spec.Window).To(BeNil())
		Expect(task.Spec.Reboot).To(Equal(ntv1.RebootNever))
		Expect(task.Spec.RebootTimeoutSeconds).To(HaveValue(BeEquivalentTo(1800)))
		Expect(task.Spec.Cordon).To(BeFalse())
		Expect(task.Spec.Drain).To(BeNil())
	})

	It("fills in the drain's defaults when spec.drain is set", func() {
		task := validTask("drain-defaults")
		task.Spec.Drain = &ntv1.DrainSpec{}
		Expect(k8sClient.Create(ctx, task)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, task)
		Expect(task.Spec.Drain.TimeoutSeconds).To(HaveValue(BeEquivalentTo(600)))
		Expect(task.Spec.Drain.UncordonOnFailure).To(BeFalse())
	})

	It("accepts every allowed runAsUserName form and percentages at the bounds", func() {
		for i, user := range []string{`NT AUTHORITY\SYSTEM`, `NT AUTHORITY\Local service`, `NT AUTHORITY\NetworkService`, "Administrators", "node-ops users"} {
			task := validTask("user-" + string(rune('a'+i)))
			task.Spec.RunAsUserName = user
			task.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("100%"))
			task.Spec.Rollout.MaxFailures = ptr.To(intstr.FromString("0%"))
			Expect(k8sClient.Create(ctx, task)).To(Succeed(), "runAsUserName %q", user)
			DeferCleanup(k8sClient.Delete, ctx, task)
		}
	})

	It("accepts a first batch, a pause with an approval and minReadySeconds as documented", func() {
		for name, mutate := range map[string]func(*ntv1.NodeTask){
			"first-batch-2": func(t *ntv1.NodeTask) {
				t.Spec.Rollout.FirstBatch = ptr.To(intstr.FromInt32(2))
			},
			"first-batch-10-percent": func(t *ntv1.NodeTask) {
				t.Spec.Rollout.FirstBatch = ptr.To(intstr.FromString("10%"))
			},
			"first-batch-bounds": func(t *ntv1.NodeTask) {
				t.Spec.Rollout.FirstBatch = ptr.To(intstr.FromString("100%"))
				t.Spec.Rollout.MinReadySeconds = 3600
			},
			"first-batch-pause": func(t *ntv1.NodeTask) {
				t.Spec.Rollout.FirstBatch = ptr.To(intstr.FromInt32(1))
				t.Spec.Rollout.PauseAfterFirstBatch = true
			},
			"first-batch-pause-approved": func(t *ntv1.NodeTask) {
				t.Spec.Rollout.FirstBatch = ptr.To(intstr.FromString("10%"))
				t.Spec.Rollout.PauseAfterFirstBatch = true
				t.Spec.Rollout.ApprovedRun = 3
				t.Spec.Rollout.MinReadySeconds = 300
			},
			// approvedRun without the pause approves nothing there is to approve; it is
			// accepted, so that turning the pause off in git does not make the stored
			// approval an error.
			"approved-run-without-pause": func(t *ntv1.NodeTask) {
				t.Spec.Rollout.ApprovedRun = 2
			},
			"health-checks-by-name-and-selector": func(t *ntv1.NodeTask) {
				t.Spec.Rollout.HealthChecks = []ntv1.HealthCheck{
					{Name: "ingress-available", Expression: "object.status.availableReplicas >= object.spec.replicas",
						Object: ntv1.HealthCheckObject{APIVersion: "apps/v1", Kind: "Deployment", Name: "ingress"}},
					{Name: "kube-proxy", Expression: "object.status.numberUnavailable == 0", FailAfterSeconds: ptr.To[int32](600),
						Object: ntv1.HealthCheckObject{APIVersion: "apps/v1", Kind: "DaemonSet", Namespace: "kube-system",
							Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-proxy"}}}},
					// A ConfigMap is core v1 like a Secret, and allowed.
					{Name: "flag", Expression: "object.data.enabled == 'true'",
						Object: ntv1.HealthCheckObject{APIVersion: "v1", Kind: "ConfigMap", Name: "rollout-flag"}},
				}
			},
			"min-ready-without-first-batch": func(t *ntv1.NodeTask) {
				t.Spec.Rollout.MinReadySeconds = 60
			},
		} {
			task := validTask(name)
			mutate(task)
			Expect(k8sClient.Create(ctx, task)).To(Succeed(), name)
			DeferCleanup(k8sClient.Delete, ctx, task)
			got := &ntv1.NodeTask{}
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), got)).To(Succeed())
			Expect(got.Spec.Rollout).To(Equal(task.Spec.Rollout), name)
		}
	})

	It("leaves the first batch, the pause and minReadySeconds off by default", func() {
		task := validTask("rollout-defaults")
		Expect(k8sClient.Create(ctx, task)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, task)
		Expect(task.Spec.Rollout.FirstBatch).To(BeNil())
		Expect(task.Spec.Rollout.PauseAfterFirstBatch).To(BeFalse())
		Expect(task.Spec.Rollout.ApprovedRun).To(BeZero())
		Expect(task.Spec.Rollout.MinReadySeconds).To(BeZero())
		Expect(task.Status.Rollout).To(BeNil())
	})

	It("reads a task no controller has acted on as a generation not yet observed", func() {
		task := validTask("unobserved")
		Expect(k8sClient.Create(ctx, task)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, task)
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(ntv1.GroupVersion.WithKind("NodeTask"))
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), u)).To(Succeed())
		observed, found, err := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
		Expect(err).NotTo(HaveOccurred())
		Expect(found).To(BeTrue(), "status.observedGeneration defaults to 0")
		Expect(observed).To(BeZero())
		res, err := kstatus.Compute(u)
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Status).To(Equal(kstatus.InProgressStatus), "Flux's wait must not take a new task for a finished one")
	})

	It("accepts container commands that run alike with and without cmd /c", func() {
		task := validTask("container")
		task.Spec.Script = nil
		task.Spec.Container = &ntv1.ContainerSpec{
			Image:   "example.com/node-exporter:1",
			Command: []string{`%CONTAINER_SANDBOX_MOUNT_POINT%\windows_exporter.exe`},
			Args:    []string{"--collectors.enabled", "cpu,os", "--log.file", `C:\Program Files\exporter\log.txt`},
		}
		Expect(k8sClient.Create(ctx, task)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, task)
	})

	It("keeps rebootExitCodes: [] (reboot codes count as failures) instead of defaulting it", func() {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": ntv1.GroupVersion.String(), "kind": "NodeTask",
			"metadata": map[string]any{"name": "no-reboot-codes", "namespace": "default"},
			"spec":     map[string]any{"script": map[string]any{"inline": "exit 3010"}, "rebootExitCodes": []any{}},
		}}
		Expect(k8sClient.Create(ctx, u)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, u)
		task := &ntv1.NodeTask{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(u), task)).To(Succeed())
		Expect(task.Spec.RebootExitCodes).To(BeEmpty())
	})

	It("accepts nodeSelector expressions of every operator used as documented", func() {
		task := validTask("selector")
		task.Spec.NodeSelector = &metav1.LabelSelector{
			MatchLabels: map[string]string{"pool": "win22"},
			MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "ring", Operator: metav1.LabelSelectorOpIn, Values: []string{"0", "1"}},
				{Key: "gpu", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"true"}},
				{Key: "node.kubernetes.io/windows-build", Operator: metav1.LabelSelectorOpExists},
				{Key: "quarantine", Operator: metav1.LabelSelectorOpDoesNotExist},
			},
		}
		Expect(k8sClient.Create(ctx, task)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, task)
	})

	It("fills in the check's defaults and mode Apply when spec.check is set", func() {
		task := validTask("check-defaults")
		task.Spec.Check = validCheck()
		Expect(k8sClient.Create(ctx, task)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, task)
		got := &ntv1.NodeTask{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), got)).To(Succeed())
		Expect(got.Spec.Mode).To(Equal(ntv1.ModeApply))
		Expect(got.Spec.Check).NotTo(BeNil())
		Expect(got.Spec.Check.Interpreter).To(Equal(ntv1.InterpreterPowerShell))
		Expect(got.Spec.Check.NonCompliantExitCode).To(HaveValue(BeEquivalentTo(ntv1.DefaultNonCompliantExitCode)))
		Expect(got.Spec.Check.NonCompliantExitCode).To(HaveValue(BeEquivalentTo(1)))
	})

	It("defaults mode to Apply and leaves spec.check unset on a task without a check", func() {
		task := validTask("mode-default")
		Expect(k8sClient.Create(ctx, task)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, task)
		got := &ntv1.NodeTask{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), got)).To(Succeed())
		Expect(got.Spec.Mode).To(Equal(ntv1.ModeApply))
		Expect(got.Spec.Check).To(BeNil())
	})

	It("accepts checks used as documented", func() {
		for name, mutate := range map[string]func(*ntv1.NodeTask){
			"apply-inline-check": func(t *ntv1.NodeTask) {
				t.Spec.Check = validCheck()
			},
			"apply-configmap-cmd-check": func(t *ntv1.NodeTask) {
				t.Spec.Mode = ntv1.ModeApply
				t.Spec.Check = &ntv1.CheckSpec{
					ConfigMapKeyRef: &ntv1.ConfigMapKeyReference{Name: "checks", Key: "test.cmd"},
					Interpreter:     ntv1.InterpreterCmd,
				}
			},
			"apply-check-disruptive": func(t *ntv1.NodeTask) {
				t.Spec.Check = validCheck()
				t.Spec.Cordon = true
				t.Spec.Drain = &ntv1.DrainSpec{}
				t.Spec.Reboot = ntv1.RebootIfRequired
			},
			"audit-check-only": auditOnly,
			"audit-reboot-never": func(t *ntv1.NodeTask) {
				auditOnly(t)
				t.Spec.Reboot = ntv1.RebootNever
				t.Spec.Cordon = false
			},
			"check-exit-2": func(t *ntv1.NodeTask) {
				t.Spec.Check = validCheck()
				t.Spec.Check.NonCompliantExitCode = ptr.To[int32](2)
			},
			"audit-check-exit-2-pwsh": func(t *ntv1.NodeTask) {
				auditOnly(t)
				t.Spec.Check.Interpreter = ntv1.InterpreterPwsh
				t.Spec.Check.NonCompliantExitCode = ptr.To[int32](2)
			},
		} {
			task := validTask(name)
			mutate(task)
			Expect(k8sClient.Create(ctx, task)).To(Succeed(), name)
			DeferCleanup(k8sClient.Delete, ctx, task)
		}
	})

	It("accepts check.nonCompliantExitCode 3010 with rebootExitCodes: [] (no code means reboot)", func() {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": ntv1.GroupVersion.String(), "kind": "NodeTask",
			"metadata": map[string]any{"name": "check-exit-3010", "namespace": "default"},
			"spec": map[string]any{
				"script":          map[string]any{"inline": "Install-WindowsFeature X"},
				"check":           map[string]any{"inline": "exit 3010", "nonCompliantExitCode": int64(3010)},
				"rebootExitCodes": []any{},
			},
		}}
		Expect(k8sClient.Create(ctx, u)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, u)
	})

	DescribeTable("rejects invalid NodeTasks with a clear message",
		func(mutate func(*ntv1.NodeTask), message string) {
			task := validTask("invalid")
			mutate(task)
			err := k8sClient.Create(ctx, task)
			if err == nil {
				DeferCleanup(k8sClient.Delete, ctx, task)
			}
			Expect(err).To(HaveOccurred())
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got %v", err)
			Expect(err.Error()).To(ContainSubstring(message))
		},
		invalidEntries(),
	)

	It("accepts every sample in config/samples", func() {
		files, err := filepath.Glob(filepath.Join("..", "..", "config", "samples", "*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		var tasks int
		for _, f := range files {
			if filepath.Base(f) == "kustomization.yaml" {
				continue
			}
			for _, obj := range readObjects(f) {
				err := k8sClient.Create(ctx, obj)
				if apierrors.IsAlreadyExists(err) {
					continue
				}
				Expect(err).NotTo(HaveOccurred(), "%s: %s %s", f, obj.GetKind(), obj.GetName())
				if obj.GetKind() == "NodeTask" {
					tasks++
				}
			}
		}
		Expect(tasks).To(BeNumerically(">=", 3))
	})

	It("documents every field for kubectl explain", func() {
		kubectl, err := exec.LookPath("kubectl")
		if err != nil {
			Skip("kubectl is not installed")
		}
		kubeconfig := writeKubeconfig()
		out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig, "explain", "nodetask.spec", "--recursive").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		for _, field := range []string{"nodeSelector", "nodeNames", "tolerations", "script", "inline", "configMapKeyRef",
			"interpreter", "container", "env", "runAsUserName", "resources", "priorityClassName", "serviceAccountName",
			"imagePullSecrets", "podLabels", "podAnnotations", "timeoutSeconds", "retries", "rollout", "maxConcurrent",
			"maxFailures", "newNodes", "rerunToken", "suspend", "podTTLSecondsAfterFinished", "check", "mode",
			"nonCompliantExitCode", "firstBatch", "pauseAfterFirstBatch", "approvedRun", "minReadySeconds"} {
			Expect(string(out)).To(MatchRegexp(`(?m)^\s+`+field+`\s`), "kubectl explain lists %s", field)
		}
		// Every one of our own fields carries its godoc.
		for _, path := range []string{"nodetask.spec.script.inline", "nodetask.spec.rollout.maxFailures",
			"nodetask.status.nodes.reason", "nodetask.status.conditions", "nodetask.spec.newNodes",
			"nodetask.spec.check.nonCompliantExitCode", "nodetask.spec.mode", "nodetask.status.nodes.compliance",
			"nodetask.status.compliance.unknown", "nodetask.spec.rollout.firstBatch", "nodetask.spec.rollout.approvedRun",
			"nodetask.spec.rollout.minReadySeconds", "nodetask.status.rollout.batch"} {
			out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig, "explain", path).CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), string(out))
			Expect(string(out)).To(ContainSubstring("DESCRIPTION:"))
			Expect(string(out)).NotTo(MatchRegexp(`DESCRIPTION:\s*<empty>`), path)
		}
	})
})

// readObjects reads the YAML documents of a file as unstructured objects.
func readObjects(path string) []*unstructured.Unstructured {
	data, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []*unstructured.Unstructured
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		Expect(err).NotTo(HaveOccurred())
		if strings.TrimSpace(string(doc)) == "" {
			continue
		}
		obj := &unstructured.Unstructured{}
		Expect(utilyaml.Unmarshal(doc, &obj.Object)).To(Succeed())
		if obj.GetKind() == "" {
			continue
		}
		if obj.GetNamespace() == "" && obj.GetKind() != "Namespace" {
			obj.SetNamespace("default")
		}
		objs = append(objs, obj)
	}
}

// writeKubeconfig writes a kubeconfig for the test API server's admin user.
func writeKubeconfig() string {
	user, err := testEnv.ControlPlane.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	Expect(err).NotTo(HaveOccurred())
	data, err := user.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	path := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(os.WriteFile(path, data, 0o600)).To(Succeed())
	return path
}
