package rollout

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"maps"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

const (
	ContainerName = "task"
	scriptVolume  = "nodetask"
	// scriptMountPath is relative to the container's sandbox: in both of hcsshim's modes
	// (bind filter, and the fallback on nodes without it) the volume is reachable as
	// $env:CONTAINER_SANDBOX_MOUNT_POINT\nodetask; only the bind filter also binds it at
	// C:\nodetask.
	scriptMountPath = "/nodetask"
	wrapperKey      = "run.ps1"
	// envInterpreter tells the wrapper which interpreter runs the script; only script pods
	// have it.
	envInterpreter = "NODETASK_INTERPRETER"
	// utf8BOM lets Windows PowerShell 5.1 read a script as UTF-8; without it, 5.1 reads
	// the file in the system's ANSI code page and mangles non-ASCII text.
	UTF8BOM = "\ufeff"
)

// wrapperScript runs the task's script and reports its exit code and output tail.
//
//go:embed wrapper/run.ps1
var wrapperScript string

// wrapperCommand starts the wrapper with Windows PowerShell 5.1, which every Windows host
// has. hcsshim expands %CONTAINER_SANDBOX_MOUNT_POINT% in the command line in both of its
// modes, before the bind-filter mode puts `cmd /c` in front; the line holds nothing else
// cmd would interpret, so it runs alike in both.
var wrapperCommand = []string{
	"powershell.exe", "-NoLogo", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass",
	"-File", `%CONTAINER_SANDBOX_MOUNT_POINT%\nodetask\run.ps1`,
}

// PodBuilder turns a task into the HostProcess pods and ConfigMaps that run it.
type PodBuilder struct {
	// DefaultScriptImage is the image of script pods whose task names none.
	DefaultScriptImage string
}

// scriptImage is the image of a pod whose process is a host program.
func (b *PodBuilder) scriptImage() string {
	if b.DefaultScriptImage != "" {
		return b.DefaultScriptImage
	}
	return ntv1.DefaultScriptImage
}

// TaskLabelValue returns the value of ntv1.LabelTask for a task name: the name itself when it is
// a valid label value, else a prefix and a hash, so that long names still select uniquely.
func TaskLabelValue(name string) string {
	if len(name) <= validation.LabelValueMaxLength {
		return name
	}
	return trimName(name, validation.LabelValueMaxLength-revisionLength-1) + "-" + shortHash(name)
}

// TaskPodLabels are labels every pod of the task carries. Pods of an earlier task of the
// same name carry them too: check the controller reference.
func TaskPodLabels(taskName string) map[string]string {
	return map[string]string{ntv1.LabelTask: TaskLabelValue(taskName)}
}

// PodName is the deterministic name of the pod of one attempt. Deterministic, so that a
// controller that restarts, or whose cache lags, can never create a second pod for the
// attempt; hashed with the task's and the node's UIDs, so that another task whose name
// starts alike, a task re-created under the same name, or a machine registered again under
// the same node name never finds its name taken by a pod that is not its own.
func PodName(task *ntv1.NodeTask, run int64, revision string, req PodRequest) string {
	key := strings.Join([]string{string(task.UID), req.Node, string(req.NodeUID),
		strconv.FormatInt(run, 10), revision, strconv.Itoa(int(req.Attempt))}, "/")
	return trimName(task.Name, 40) + "-" + shortHash(key)
}

// ScriptConfigMapName is the name of the immutable ConfigMap that holds a run's script,
// unique to the task's UID and the run.
func ScriptConfigMapName(task *ntv1.NodeTask, run int64, revision string) string {
	return trimName(task.Name, 200) + "-script-" + shortHash(string(task.UID)+"/"+strconv.FormatInt(run, 10)+"/"+revision)
}

// podMeta returns the labels and annotations every pod of the task carries, the restart pod
// included: spec.podLabels and spec.podAnnotations (admission policies and exemptions are
// often keyed on them), then the operator's own labels, which the user's never override
// (the API refuses podLabels under nodetask.io/).
func podMeta(task *ntv1.NodeTask, run int64, revision string, req PodRequest) (labels, annotations map[string]string) {
	labels = make(map[string]string, len(task.Spec.PodLabels)+8)
	maps.Copy(labels, task.Spec.PodLabels)
	labels[ntv1.LabelTask] = TaskLabelValue(task.Name)
	labels[ntv1.LabelRevision] = revision
	labels[ntv1.LabelRun] = strconv.FormatInt(run, 10)
	labels[ntv1.LabelAttempt] = strconv.Itoa(int(req.Attempt))
	labels[ntv1.LabelManagedBy] = ntv1.ManagedByValue
	if len(validation.IsValidLabelValue(req.Node)) == 0 {
		labels[ntv1.LabelNode] = req.Node
	}
	if req.NodeUID != "" {
		labels[ntv1.LabelNodeUID] = string(req.NodeUID)
	}
	if len(task.Spec.PodAnnotations) > 0 {
		annotations = maps.Clone(task.Spec.PodAnnotations)
	}
	return labels, annotations
}

// Pod builds the HostProcess pod that runs one attempt of the task's run on one node.
func (b *PodBuilder) Pod(task *ntv1.NodeTask, run int64, revision string, req PodRequest) *corev1.Pod {
	spec := &task.Spec
	node, attempt := req.Node, req.Attempt
	labels, annotations := podMeta(task, run, revision, req)

	userName := spec.RunAsUserName
	if userName == "" {
		userName = ntv1.DefaultRunAsUserName
	}
	timeout := int64(ntv1.DefaultTimeoutSeconds)
	if spec.TimeoutSeconds != nil {
		timeout = int64(*spec.TimeoutSeconds)
	}

	env := []corev1.EnvVar{
		{Name: "NODETASK_NAME", Value: task.Name},
		{Name: "NODETASK_NAMESPACE", Value: task.Namespace},
		{Name: "NODETASK_REVISION", Value: revision},
		{Name: "NODETASK_RUN", Value: strconv.FormatInt(run, 10)},
		{Name: "NODETASK_ATTEMPT", Value: strconv.Itoa(int(attempt))},
		{Name: "NODETASK_NODE_NAME", Value: node},
	}
	container := corev1.Container{
		Name: ContainerName,
		// With FallbackToLogsOnError the kubelet still reports the log tail of a failed
		// container that wrote no termination message (container mode, or a wrapper that died).
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		ImagePullPolicy:          corev1.PullIfNotPresent,
	}
	if spec.Resources != nil {
		container.Resources = *spec.Resources
	}
	var volumes []corev1.Volume
	switch {
	case spec.Script != nil || spec.Check != nil:
		if spec.Script != nil {
			container.Image = spec.Script.Image
		}
		if container.Image == "" {
			container.Image = b.scriptImage()
		}
		container.Command = wrapperCommand
		env = append(env, corev1.EnvVar{Name: envInterpreter, Value: string(interpreter(spec.Script))})
		env = append(env, checkEnv(task, attempt)...)
		container.VolumeMounts = []corev1.VolumeMount{{Name: scriptVolume, MountPath: scriptMountPath, ReadOnly: true}}
		volumes = []corev1.Volume{{
			Name: scriptVolume,
			VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: ScriptConfigMapName(task, run, revision)},
			}},
		}}
	case spec.Container != nil:
		container.Image = spec.Container.Image
		container.Command = spec.Container.Command
		container.Args = spec.Container.Args
		container.WorkingDir = spec.Container.WorkingDir
	}
	// The task's own variables come last so that they win over ours on a name clash.
	container.Env = append(env, spec.Env...)

	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:            PodName(task, run, revision, req),
			Namespace:       task.Namespace,
			Labels:          labels,
			Annotations:     annotations,
			OwnerReferences: []metav1.OwnerReference{OwnerRef(task)},
		},
		Spec: corev1.PodSpec{
			// Binding by name needs no scheduler and reaches cordoned nodes, which node
			// maintenance tasks must be able to run on.
			NodeName:              node,
			OS:                    &corev1.PodOS{Name: corev1.Windows},
			HostNetwork:           true,
			RestartPolicy:         corev1.RestartPolicyNever,
			ActiveDeadlineSeconds: &timeout,
			SecurityContext: &corev1.PodSecurityContext{
				WindowsOptions: &corev1.WindowsSecurityContextOptions{
					HostProcess:   ptr.To(true),
					RunAsUserName: &userName,
				},
			},
			ServiceAccountName:           spec.ServiceAccountName,
			AutomountServiceAccountToken: ptr.To(spec.ServiceAccountName != ""),
			EnableServiceLinks:           ptr.To(false),
			PriorityClassName:            spec.PriorityClassName,
			ImagePullSecrets:             spec.ImagePullSecrets,
			Tolerations:                  spec.Tolerations,
			Containers:                   []corev1.Container{container},
			Volumes:                      volumes,
		},
	}
}

// checkEnv tells the wrapper what to run for a task with spec.check: the check alone (mode
// Audit, and attempt 0, the check before a claim) or the check, the fix and the re-check.
func checkEnv(task *ntv1.NodeTask, attempt int32) []corev1.EnvVar {
	c := task.Spec.Check
	if c == nil {
		return nil
	}
	mode := "CheckFix"
	if task.Spec.Mode == ntv1.ModeAudit || attempt == 0 {
		mode = "Check"
	}
	nonCompliant := int32(ntv1.DefaultNonCompliantExitCode)
	if c.NonCompliantExitCode != nil {
		nonCompliant = *c.NonCompliantExitCode
	}
	// The fix succeeded, and the re-check runs, on 0 or one of rebootExitCodes.
	ok := []string{"0"}
	for _, code := range task.Spec.RebootExitCodes {
		ok = append(ok, strconv.Itoa(int(code)))
	}
	return []corev1.EnvVar{
		{Name: "NODETASK_MODE", Value: mode},
		{Name: "NODETASK_CHECK_INTERPRETER", Value: string(checkInterpreter(c))},
		{Name: "NODETASK_NONCOMPLIANT_EXIT_CODE", Value: strconv.Itoa(int(nonCompliant))},
		{Name: "NODETASK_SUCCESS_EXIT_CODES", Value: strings.Join(ok, ",")},
	}
}

// rebootDelaySeconds is how long shutdown.exe waits before it restarts the node: time for
// the kubelet to report the restart pod's success.
const rebootDelaySeconds = 15

// RebootPodName is the name of the pod that restarts one node after one run: fixed per
// task, machine and run, so that a run never restarts a node twice.
func RebootPodName(task *ntv1.NodeTask, run int64, req PodRequest) string {
	key := strings.Join([]string{string(task.UID), req.Node, string(req.NodeUID), strconv.FormatInt(run, 10), ntv1.RoleReboot}, "/")
	return trimName(task.Name, 33) + "-reboot-" + shortHash(key)
}

// RebootPod builds the HostProcess pod that restarts a node: `shutdown.exe /r` as SYSTEM,
// with a delay, a planned-maintenance reason code and a comment that names the task (Windows
// logs both in the System event log, event 1074). It runs in the task's namespace with the
// task's tolerations, priority class, podLabels and podAnnotations, and the boot ID before
// the restart in an annotation.
func (b *PodBuilder) RebootPod(task *ntv1.NodeTask, run int64, revision string, req RebootRequest) *corev1.Pod {
	labels, annotations := podMeta(task, run, revision, req.PodRequest)
	labels[ntv1.LabelRole] = ntv1.RoleReboot
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[ntv1.AnnotationBootID] = req.BootID
	comment := fmt.Sprintf("NodeTask %s/%s run %d restarts this node", task.Namespace, task.Name, run)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:            RebootPodName(task, run, req.PodRequest),
			Namespace:       task.Namespace,
			Labels:          labels,
			Annotations:     annotations,
			OwnerReferences: []metav1.OwnerReference{OwnerRef(task)},
		},
		Spec: corev1.PodSpec{
			NodeName:      req.Node,
			RestartPolicy: corev1.RestartPolicyNever,
			HostNetwork:   true,
			// The restart is one command; it must not hold the node for a task's timeout.
			ActiveDeadlineSeconds: ptr.To[int64](300),
			OS:                    &corev1.PodOS{Name: corev1.Windows},
			SecurityContext: &corev1.PodSecurityContext{
				WindowsOptions: &corev1.WindowsSecurityContextOptions{
					HostProcess:   ptr.To(true),
					RunAsUserName: ptr.To(ntv1.DefaultRunAsUserName),
				},
			},
			AutomountServiceAccountToken: ptr.To(false),
			EnableServiceLinks:           ptr.To(false),
			PriorityClassName:            task.Spec.PriorityClassName,
			ImagePullSecrets:             task.Spec.ImagePullSecrets,
			Tolerations:                  task.Spec.Tolerations,
			Containers: []corev1.Container{{
				Name:  "reboot",
				Image: b.scriptImage(),
				// p:4:1 is "Application: Maintenance (Planned)". The comment goes through
				// cmd /c on bind-filter nodes: it holds no character cmd treats specially.
				Command:                  []string{"shutdown.exe", "/r", "/t", strconv.Itoa(rebootDelaySeconds), "/d", "p:4:1", "/c", comment},
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
		},
	}
}

// ScriptTexts are the texts a run's script ConfigMap holds: spec.script's and spec.check's,
// each copied from inline or from the ConfigMap it names.
type ScriptTexts struct {
	// Script is the script (the fix, for a task with a check); empty in mode Audit.
	Script string
	// Check is the check; empty without spec.check.
	Check string
}

// ScriptConfigMap builds the immutable ConfigMap that holds a run's script, its check and
// the wrapper.
func ScriptConfigMap(task *ntv1.NodeTask, run int64, revision string, texts ScriptTexts) *corev1.ConfigMap {
	data := map[string]string{wrapperKey: wrapperScript}
	if task.Spec.Script != nil {
		addScript(data, "script", interpreter(task.Spec.Script), texts.Script)
	}
	if c := task.Spec.Check; c != nil {
		addScript(data, "check", checkInterpreter(c), texts.Check)
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:      ScriptConfigMapName(task, run, revision),
			Namespace: task.Namespace,
			Labels: map[string]string{
				ntv1.LabelTask:      TaskLabelValue(task.Name),
				ntv1.LabelRevision:  revision,
				ntv1.LabelRun:       strconv.FormatInt(run, 10),
				ntv1.LabelManagedBy: ntv1.ManagedByValue,
			},
			OwnerReferences: []metav1.OwnerReference{OwnerRef(task)},
		},
		Immutable: ptr.To(true),
		Data:      data,
	}
}

// addScript adds a script under the file name its interpreter runs: base.cmd or base.ps1.
func addScript(data map[string]string, base string, in ntv1.Interpreter, text string) {
	if in == ntv1.InterpreterCmd {
		// cmd.exe can jump to the wrong label in a batch file with LF-only line endings.
		data[base+".cmd"] = crlf(text)
		return
	}
	data[base+".ps1"] = UTF8BOM + strings.TrimPrefix(text, UTF8BOM)
}

// crlf gives every line of s a CRLF ending.
func crlf(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

func interpreter(s *ntv1.ScriptSpec) ntv1.Interpreter {
	if s == nil || s.Interpreter == "" {
		return ntv1.InterpreterPowerShell
	}
	return s.Interpreter
}

func checkInterpreter(c *ntv1.CheckSpec) ntv1.Interpreter {
	if c.Interpreter == "" {
		return ntv1.InterpreterPowerShell
	}
	return c.Interpreter
}

func OwnerRef(task *ntv1.NodeTask) metav1.OwnerReference {
	return *metav1.NewControllerRef(task, ntv1.GroupVersion.WithKind("NodeTask"))
}

// trimName shortens a DNS name to at most n characters without leaving a trailing '-' or '.'.
func trimName(name string, n int) string {
	if len(name) > n {
		name = name[:n]
	}
	return strings.TrimRight(name, "-.")
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:revisionLength]
}
