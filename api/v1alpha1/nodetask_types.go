package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// DefaultScriptImage is the image a script runs in unless spec.script.image or the manager's
// --default-script-image flag names another. It is Microsoft's HostProcess base image: a few
// kilobytes with no os.version, so containerd pulls it on every Windows Server version, and
// PowerShell comes from the host. It is pinned by digest, so that every node runs the same
// bytes; the digest is the one public build files record for v1.0.0 (`skopeo inspect`), not
// checked against the registry here.
const DefaultScriptImage = "mcr.microsoft.com/oss/kubernetes/windows-host-process-containers-base-image:v1.0.0" +
	"@sha256:b4c9637e032f667c52d1eccfa31ad8c63f1b035e8639f3f48a510536bf34032b"

// DefaultRunAsUserName is the account a NodeTask's pods run as unless spec.runAsUserName says otherwise.
const DefaultRunAsUserName = `NT AUTHORITY\SYSTEM`

// NodeTaskSpec says what to run, on which Windows nodes, and how fast to roll it out.
//
// +kubebuilder:validation:XValidation:rule="has(self.script) != has(self.container) || (has(self.mode) && self.mode == 'Audit' && !has(self.script) && !has(self.container))",message="set exactly one of spec.script (a script run by an interpreter on the host) or spec.container (an image with its own command); only a task with mode Audit, which runs spec.check alone, may have neither"
// +kubebuilder:validation:XValidation:rule="!has(self.check) || !has(self.container)",message="spec.check runs through the script wrapper, which a container task does not have: use spec.script for the fix, or leave spec.check out"
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.mode != 'Audit' || has(self.check)",message="mode Audit runs only spec.check: set spec.check"
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.mode != 'Audit' || (!has(self.script) && !has(self.container))",message="mode Audit changes nothing, so it runs no spec.script or spec.container: leave them out, or use mode Apply to fix what the check finds"
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.mode != 'Audit' || (!has(self.drain) && !(has(self.cordon) && self.cordon) && (!has(self.reboot) || self.reboot == 'Never'))",message="mode Audit changes nothing: it cannot cordon, drain or reboot nodes (leave out cordon, drain and reboot)"
// +kubebuilder:validation:XValidation:rule="!has(self.rollout) || !has(self.rollout.pauseAfterFirstBatch) || !self.rollout.pauseAfterFirstBatch || has(self.rollout.firstBatch)",message="rollout.pauseAfterFirstBatch needs rollout.firstBatch: the pause comes after the first batch"
// +kubebuilder:validation:XValidation:rule="!has(self.check) || !has(self.check.nonCompliantExitCode) || !has(self.rebootExitCodes) || !(self.check.nonCompliantExitCode in self.rebootExitCodes)",message="check.nonCompliantExitCode must not be one of rebootExitCodes"
type NodeTaskSpec struct {
	// nodeSelector selects the nodes to run on by their labels. It is always combined with
	// kubernetes.io/os=windows: Linux nodes are never targeted. Unset selects every Windows node.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="nodeSelector.matchExpressions[].operator must be one of In, NotIn, Exists, DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !(e.operator in ['In', 'NotIn']) || (has(e.values) && size(e.values) > 0))",message="nodeSelector.matchExpressions[] with operator In or NotIn needs at least one value"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !(e.operator in ['Exists', 'DoesNotExist']) || !has(e.values) || size(e.values) == 0)",message="nodeSelector.matchExpressions[] with operator Exists or DoesNotExist must not have values"
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// nodeNames, when set, limits the task to the nodes with these names (still only Windows
	// nodes that match nodeSelector and tolerate their taints).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=5000
	// +kubebuilder:validation:items:MaxLength=253
	NodeNames []string `json:"nodeNames,omitempty"`

	// tolerations are copied to every pod. A node with a NoSchedule or NoExecute taint that
	// these do not tolerate is not a target; many clusters taint Windows nodes with
	// os=windows:NoSchedule, which then needs a toleration here.
	// +optional
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// script runs a script on each node's host with an interpreter the host provides
	// (Windows PowerShell 5.1 unless interpreter says otherwise). Set exactly one of script
	// and container.
	// +optional
	Script *ScriptSpec `json:"script,omitempty"`

	// container runs an image with its own command on each node, as a HostProcess container.
	// Set exactly one of script and container.
	// +optional
	Container *ContainerSpec `json:"container,omitempty"`

	// check is a script that asks whether a node is already right, run on the node before
	// spec.script (DSC's Test, Ansible's check mode). Exit 0: the node is compliant, the
	// script is not run, and nothing else happens (no cordon, drain or restart); its entry
	// is Succeeded with compliance Compliant. Exit check.nonCompliantExitCode: the node is
	// non-compliant; spec.script runs, then the check again, and the node succeeds
	// (compliance Remediated) only if the check then exits 0, else it fails with reason
	// StillNonCompliant. Any other exit code fails the node with reason CheckFailed. The
	// check and the fix run in one pod through the operator's wrapper; a task that
	// cordons, drains or reboots first runs the check alone in a pod of its own (attempt 0)
	// before it claims the node, so a compliant node is never cordoned, drained or
	// restarted. Needs spec.script, or mode Audit.
	// +optional
	Check *CheckSpec `json:"check,omitempty"`

	// mode is Apply (the default: run the task, and with spec.check only where the check
	// finds the node non-compliant) or Audit (run only spec.check, change nothing, and
	// report each node Compliant or NonCompliant).
	// +optional
	// +kubebuilder:default=Apply
	Mode TaskMode `json:"mode,omitempty"`

	// env sets environment variables for the script or container. Names starting with
	// NODETASK_ are reserved for the ones the operator sets (NODETASK_NAME, NODETASK_RUN...).
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=128
	// +kubebuilder:validation:XValidation:rule="self.all(e, !e.name.startsWith('NODETASK_'))",message="env names must not start with NODETASK_: the operator sets those variables itself"
	Env []corev1.EnvVar `json:"env,omitempty"`

	// runAsUserName is the Windows account the process runs as: NT AUTHORITY\SYSTEM (full
	// control of the node), NT AUTHORITY\Local service, NT AUTHORITY\NetworkService, or the
	// name of a local group, in which case containerd (1.7 or later) creates a temporary user
	// in that group for the run.
	// +optional
	// +kubebuilder:default="NT AUTHORITY\\SYSTEM"
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="self.size() <= 104",message="runAsUserName must be at most 104 characters, the API server's limit for a Windows user name"
	// +kubebuilder:validation:XValidation:rule="!self.matches('[[:cntrl:]]')",message="runAsUserName must not contain control characters"
	// +kubebuilder:validation:XValidation:rule=`self in ['NT AUTHORITY\\SYSTEM', 'NT AUTHORITY\\Local service', 'NT AUTHORITY\\NetworkService'] || (self.matches('^[^"/\\\\\\[\\]:;|=,+*?<>@]+$') && !self.matches('^[. ]+$'))`,message="runAsUserName must be NT AUTHORITY\\SYSTEM, NT AUTHORITY\\Local service, NT AUTHORITY\\NetworkService, or a local group name (no backslash and none of \"/[]:;|=,+*?<>@)"
	RunAsUserName string `json:"runAsUserName,omitempty"`

	// resources are the pod's CPU and memory requests and limits. On Windows the limits
	// become job-object limits for every process the task starts, the wrapper's own
	// powershell.exe included: a memory limit must leave room for PowerShell itself
	// (docs/hostprocess.md suggests no less than 256Mi).
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// priorityClassName is the priority class of the pods.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// serviceAccountName is the service account the pods run as. Unset, the pods mount no
	// service account token at all: a task that does not talk to the API server needs none.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// imagePullSecrets are the secrets used to pull the image.
	// +optional
	// +listType=atomic
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`

	// podLabels are added to the labels of every pod. Keys under nodetask.io/ are reserved
	// for the operator.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('nodetask.io/'))",message="podLabels must not use the nodetask.io/ prefix: the operator sets those labels itself"
	PodLabels map[string]string `json:"podLabels,omitempty"`

	// podAnnotations are added to the annotations of every pod.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`

	// timeoutSeconds bounds one attempt on one node, from the pod's start, image pull
	// included. A pod that runs longer is stopped and the attempt fails with reason Timeout.
	// +optional
	// +kubebuilder:default=600
	// +kubebuilder:validation:XValidation:rule="self >= 1",message="timeoutSeconds must be at least 1 (it bounds one attempt on one node)"
	// +kubebuilder:validation:XValidation:rule="self <= 604800",message="timeoutSeconds must be at most 604800 (one week)"
	TimeoutSeconds *int32 `json:"timeoutSeconds,omitempty"`

	// retries is how many more times a node whose attempt failed is tried again, with an
	// exponential backoff (10s, doubling, at most 5m). 0 means one attempt per node.
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:XValidation:rule="self >= 0 && self <= 10",message="retries must be between 0 and 10"
	Retries *int32 `json:"retries,omitempty"`

	// rollout limits how many nodes run at once and how many may fail.
	// +optional
	// +kubebuilder:default={}
	Rollout RolloutSpec `json:"rollout,omitempty"`

	// newNodes says what happens to a node that joins, or starts to match, after the current
	// run started: Run (it gets the task too) or Ignore (the targets are fixed when a
	// run starts).
	// +optional
	// +kubebuilder:default=Run
	NewNodes NewNodesPolicy `json:"newNodes,omitempty"`

	// rerunToken is an opaque string: changing it runs the task again on every node, as a
	// changed script would. A timestamp or a counter is usual.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	RerunToken string `json:"rerunToken,omitempty"`

	// suspend stops new pods from starting. Pods already running finish, and setting it back
	// to false carries on where the rollout stopped.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// window is a maintenance window: nodes start the task only inside it (a retry too);
	// nodes already running finish. Outside it the task is Reconciling with reason
	// OutsideMaintenanceWindow and a message naming the next opening. Unset, nodes start at
	// any time.
	// +optional
	Window *MaintenanceWindow `json:"window,omitempty"`

	// rebootExitCodes are exit codes that mean "succeeded, and the node must restart to
	// finish": Windows installers and DISM return 3010 (ERROR_SUCCESS_REBOOT_REQUIRED) and
	// 1641 (ERROR_SUCCESS_REBOOT_INITIATED). What follows depends on reboot: with Never (the
	// default) the node is recorded as Succeeded with reason RebootRequired and its exit
	// code, and is not restarted; with IfRequired or Always the operator restarts it and it
	// ends Succeeded with reason Rebooted, the exit code kept.
	// +optional
	// +kubebuilder:default={3010,1641}
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	RebootExitCodes []int32 `json:"rebootExitCodes,omitempty"`

	// reboot says when the operator restarts a node after the task succeeded there: Never
	// (an exit code of rebootExitCodes is recorded as Succeeded with reason RebootRequired,
	// and nothing else happens), IfRequired (restart the node when the script exits with one
	// of rebootExitCodes) or Always (restart it after every successful run). The restart is
	// done by the operator, with a HostProcess pod that runs `shutdown.exe /r`; the node is
	// Rebooting until it is Ready again with a new status.nodeInfo.bootID, and only then
	// Succeeded with reason Rebooted, whatever the kubelet reports of the restart pod. It
	// fails with reason RebootFailed only if the restart pod failed and the node kept its
	// boot ID for a minute after, and with RebootTimeout after rebootTimeoutSeconds. A task
	// that may reboot (IfRequired, Always) holds a per-node claim (see cordon), so two tasks
	// never restart one node at once, and is refused by the disruption-rights admission
	// policy unless its author may patch nodes and evict pods in every namespace.
	// +optional
	// +kubebuilder:default=Never
	Reboot RebootPolicy `json:"reboot,omitempty"`

	// rebootTimeoutSeconds bounds the wait for a restarted node to come back Ready with a new
	// boot ID, from the restart pod's creation; past it the node fails with reason
	// RebootTimeout. Used only with reboot IfRequired or Always.
	// +optional
	// +kubebuilder:default=1800
	// +kubebuilder:validation:XValidation:rule="self >= 60 && self <= 86400",message="rebootTimeoutSeconds must be between 60 and 86400 (one day)"
	RebootTimeoutSeconds *int32 `json:"rebootTimeoutSeconds,omitempty"`

	// cordon marks each node unschedulable before its run, and schedulable again once the
	// node's work (run, and restart under reboot IfRequired or Always) succeeded; a node
	// that was cordoned when claimed, or that someone cordoned again since, stays cordoned,
	// and so does a failed node unless drain.uncordonOnFailure. A task that cordons, drains
	// or reboots claims each node it works on with the node annotation nodetask.io/claim,
	// and a node another task has claimed waits with reason NodeBusy. Such a node counts
	// against rollout.maxConcurrent from its claim to its release. Nothing is claimed or
	// cordoned before the API server admits the task's pods.
	// +optional
	Cordon bool `json:"cordon,omitempty"`

	// drain cordons each node and evicts its pods through the Eviction API (so that
	// PodDisruptionBudgets hold) before the node's first attempt of each run, whatever
	// reboot says. DaemonSet pods, mirror pods, finished pods and the pods of NodeTasks are
	// left alone.
	// +optional
	Drain *DrainSpec `json:"drain,omitempty"`

	// podTTLSecondsAfterFinished deletes a finished pod this many seconds after its result is
	// recorded in status. Unset keeps pods, so that `kubectl logs` still works; they are
	// deleted with the NodeTask.
	// +optional
	// +kubebuilder:validation:Minimum=0
	PodTTLSecondsAfterFinished *int32 `json:"podTTLSecondsAfterFinished,omitempty"`
}

// RebootPolicy says when the operator restarts a node after the task succeeded there.
// +kubebuilder:validation:Enum=Never;IfRequired;Always
type RebootPolicy string

const (
	// RebootNever never restarts a node; an exit code of rebootExitCodes is recorded as
	// Succeeded with reason RebootRequired.
	RebootNever RebootPolicy = "Never"
	// RebootIfRequired restarts a node whose run exited with one of spec.rebootExitCodes.
	RebootIfRequired RebootPolicy = "IfRequired"
	// RebootAlways restarts a node after every successful run.
	RebootAlways RebootPolicy = "Always"
)

// DrainSpec says how a node is drained before its run.
type DrainSpec struct {
	// timeoutSeconds bounds the drain, from the node's claim. A drain still blocked then (a
	// PodDisruptionBudget that allows no disruption) fails the node with reason DrainTimeout.
	// +optional
	// +kubebuilder:default=600
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 86400",message="drain.timeoutSeconds must be between 1 and 86400 (one day)"
	TimeoutSeconds *int32 `json:"timeoutSeconds,omitempty"`

	// deleteEmptyDirData allows evicting pods with emptyDir volumes, whose data is lost.
	// Without it such a pod blocks the drain (reason DrainBlocked), as with `kubectl drain`.
	// +optional
	DeleteEmptyDirData bool `json:"deleteEmptyDirData,omitempty"`

	// podSelector limits the evicted pods to those with matching labels. Unset evicts every
	// pod but DaemonSet pods, mirror pods and NodeTask pods.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="drain.podSelector.matchExpressions[].operator must be one of In, NotIn, Exists, DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !(e.operator in ['In', 'NotIn']) || (has(e.values) && size(e.values) > 0))",message="drain.podSelector.matchExpressions[] with operator In or NotIn needs at least one value"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !(e.operator in ['Exists', 'DoesNotExist']) || !has(e.values) || size(e.values) == 0)",message="drain.podSelector.matchExpressions[] with operator Exists or DoesNotExist must not have values"
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`

	// uncordonOnFailure makes a node whose run, drain or restart failed schedulable again,
	// if this task's claim cordoned it. By default such a node stays cordoned for a person
	// to look at, also through later runs of the task.
	// +optional
	UncordonOnFailure bool `json:"uncordonOnFailure,omitempty"`
}

// Weekday is a day of the week, in English, as its first three letters.
// +kubebuilder:validation:Enum=Mon;Tue;Wed;Thu;Fri;Sat;Sun
type Weekday string

// MaintenanceWindow is a recurring span of time, in a time zone, when nodes may start a task.
//
// +kubebuilder:validation:XValidation:rule="self.start != self.end",message="window.start and window.end must differ (a window from 22:00 to 04:00 crosses midnight)"
type MaintenanceWindow struct {
	// days are the days on which the window opens; a window that crosses midnight ends on
	// the next day. Unset, it opens every day.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=7
	Days []Weekday `json:"days,omitempty"`

	// start is when the window opens, as HH:MM on a 24-hour clock in timeZone.
	// +kubebuilder:validation:Pattern=`^([01][0-9]|2[0-3]):[0-5][0-9]$`
	Start string `json:"start"`

	// end is when the window closes, as HH:MM. An end earlier than start (22:00 to 04:00)
	// closes it on the next day.
	// +kubebuilder:validation:Pattern=`^([01][0-9]|2[0-3]):[0-5][0-9]$`
	End string `json:"end"`

	// timeZone is an IANA time zone name, such as Europe/Berlin or America/New_York; the
	// window follows its daylight saving time. Unset, UTC.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	TimeZone string `json:"timeZone,omitempty"`
}

// Interpreter names the host program that runs a script.
// +kubebuilder:validation:Enum=PowerShell;Pwsh;Cmd
type Interpreter string

const (
	// InterpreterPowerShell runs the script with Windows PowerShell 5.1 (powershell.exe),
	// which every Windows Server has.
	InterpreterPowerShell Interpreter = "PowerShell"
	// InterpreterPwsh runs the script with PowerShell 7 (pwsh.exe), which the host must have installed.
	InterpreterPwsh Interpreter = "Pwsh"
	// InterpreterCmd runs the script as a batch file with cmd.exe.
	InterpreterCmd Interpreter = "Cmd"
)

// ScriptSpec is a script and the interpreter that runs it.
//
// +kubebuilder:validation:XValidation:rule="has(self.inline) != has(self.configMapKeyRef)",message="set exactly one of script.inline (the script text) or script.configMapKeyRef (a ConfigMap key holding it)"
type ScriptSpec struct {
	// inline is the script's text.
	// +optional
	// +kubebuilder:validation:MaxLength=262144
	// +kubebuilder:validation:XValidation:rule="self.trim().size() > 0",message="script.inline must not be empty"
	Inline *string `json:"inline,omitempty"`

	// configMapKeyRef names a key of a ConfigMap in the NodeTask's namespace that holds the
	// script. The text is copied when a revision starts: editing the ConfigMap later does not
	// re-run the task (change rerunToken for that).
	// +optional
	ConfigMapKeyRef *ConfigMapKeyReference `json:"configMapKeyRef,omitempty"`

	// interpreter runs the script: PowerShell (Windows PowerShell 5.1, powershell.exe),
	// Pwsh (PowerShell 7, pwsh.exe, if the host has it) or Cmd (cmd.exe, a batch file).
	// +optional
	// +kubebuilder:default=PowerShell
	Interpreter Interpreter `json:"interpreter,omitempty"`

	// image is the image of the pod's container. Unset, the manager's default is used:
	// Microsoft's HostProcess base image (pinned by digest), or the mirror given by
	// --default-script-image. The script runs on the host, so the image only has to start,
	// and be pullable on the node: containerd pulls an entry of a multi-platform image only
	// if its os.version matches the node's Windows build (nanoserver:ltsc2022 does not start
	// on Windows Server 2019).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image,omitempty"`
}

// TaskMode says whether a task changes nodes or only reports on them.
// +kubebuilder:validation:Enum=Apply;Audit
type TaskMode string

const (
	// ModeApply runs the task (with spec.check: only where the check finds drift).
	ModeApply TaskMode = "Apply"
	// ModeAudit runs only spec.check and changes nothing.
	ModeAudit TaskMode = "Audit"
)

// DefaultNonCompliantExitCode is spec.check.nonCompliantExitCode when unset.
const DefaultNonCompliantExitCode = 1

// CheckSpec is a script that tells whether a node is compliant, by its exit code.
//
// +kubebuilder:validation:XValidation:rule="has(self.inline) != has(self.configMapKeyRef)",message="set exactly one of check.inline (the check's text) or check.configMapKeyRef (a ConfigMap key holding it)"
type CheckSpec struct {
	// inline is the check's text.
	// +optional
	// +kubebuilder:validation:MaxLength=65536
	// +kubebuilder:validation:XValidation:rule="self.trim().size() > 0",message="check.inline must not be empty"
	Inline *string `json:"inline,omitempty"`

	// configMapKeyRef names a key of a ConfigMap in the NodeTask's namespace that holds the
	// check. Like spec.script's, the text is copied when a revision starts.
	// +optional
	ConfigMapKeyRef *ConfigMapKeyReference `json:"configMapKeyRef,omitempty"`

	// interpreter runs the check: PowerShell (Windows PowerShell 5.1), Pwsh (PowerShell 7,
	// if the host has it) or Cmd (a batch file).
	// +optional
	// +kubebuilder:default=PowerShell
	Interpreter Interpreter `json:"interpreter,omitempty"`

	// nonCompliantExitCode is the exit code by which the check says "this node is not
	// right, fix it". 0 means compliant; any other code is a check that failed.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:XValidation:rule="self != 0",message="check.nonCompliantExitCode must not be 0, which means compliant"
	NonCompliantExitCode *int32 `json:"nonCompliantExitCode,omitempty"`
}

// ConfigMapKeyReference names a key of a ConfigMap in the NodeTask's namespace.
type ConfigMapKeyReference struct {
	// name is the ConfigMap's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// key is the key in the ConfigMap's data.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// ContainerSpec is an image run as a HostProcess container.
type ContainerSpec struct {
	// image is the container image. It must be built for Windows; HostProcess images usually
	// start from Microsoft's HostProcess base image.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image"`

	// command replaces the image's entrypoint. In a HostProcess container it runs on the
	// host; paths inside the image are under %CONTAINER_SANDBOX_MOUNT_POINT%. On nodes where
	// hcsshim uses the bind filter (Windows Server 2022 and later with containerd 1.7+) the
	// command line goes through `cmd /c`, and on others it does not: so that a command runs
	// alike on both, it may not hold the characters cmd treats specially (" % & | < > ^,
	// except in %CONTAINER_SANDBOX_MOUNT_POINT%), and the program's path no space. To run
	// anything more, run a script (spec.script) instead.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule=`self.all(a, !a.replace('%CONTAINER_SANDBOX_MOUNT_POINT%', '').matches('["%&|<>^]'))`,message="container.command must not contain \" % & | < > ^ (cmd /c treats them specially on bind-filter nodes); use spec.script for anything more"
	// +kubebuilder:validation:XValidation:rule="size(self) == 0 || !self[0].contains(' ')",message="container.command[0] must not contain a space (cmd /c would strip its quotes on bind-filter nodes); use a path without spaces, or spec.script"
	Command []string `json:"command,omitempty"`

	// args are the arguments to command. Like command, they may not hold " % & | < > ^.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule=`self.all(a, !a.replace('%CONTAINER_SANDBOX_MOUNT_POINT%', '').matches('["%&|<>^]'))`,message="container.args must not contain \" % & | < > ^ (cmd /c treats them specially on bind-filter nodes); use spec.script for anything more"
	Args []string `json:"args,omitempty"`

	// workingDir is the working directory of the process.
	// +optional
	WorkingDir string `json:"workingDir,omitempty"`
}

// RolloutSpec limits how fast a task spreads and when it stops.
type RolloutSpec struct {
	// maxConcurrent is how many nodes may run the task at once: a number, or a percentage
	// of the target nodes, rounded up (at least 1 node).
	// +optional
	// +kubebuilder:default="25%"
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 1 : self.matches('^([1-9][0-9]?|100)%$')",message="rollout.maxConcurrent must be a whole number of at least 1 or a percentage from 1% to 100%, such as 25%"
	MaxConcurrent *intstr.IntOrString `json:"maxConcurrent,omitempty"`

	// maxFailures is how many nodes may fail before no further node starts: a number, or a
	// percentage of the target nodes, rounded down. Nodes already running finish. 0 stops
	// at the first failure.
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^([0-9]|[1-9][0-9]|100)%$')",message="rollout.maxFailures must be a whole number of at least 0 or a percentage from 0% to 100%"
	MaxFailures *intstr.IntOrString `json:"maxFailures,omitempty"`

	// firstBatch is how many nodes run first: a number, or a percentage of the target nodes,
	// rounded up (at least 1 node). They are the first targets by name when the run starts
	// (status.rollout.firstBatch names them). The other nodes start only once every node of
	// the first batch succeeded (restarted and uncordoned, for a task that does so, and
	// Ready for minReadySeconds) and the gates below hold; a node of the first batch that
	// fails with no retry left stops the run (Stalled, reason FirstBatchFailed). Unset, there
	// is no first batch.
	// +optional
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 1 : self.matches('^([1-9][0-9]?|100)%$')",message="rollout.firstBatch must be a whole number of at least 1 or a percentage from 1% to 100%, such as 10%"
	FirstBatch *intstr.IntOrString `json:"firstBatch,omitempty"`

	// pauseAfterFirstBatch makes the run wait after its first batch, Reconciling with reason
	// AwaitingApproval, until approvedRun names the run (status.run): `kubectl nodetask
	// approve TASK`, or a change of spec.rollout.approvedRun in git.
	// +optional
	PauseAfterFirstBatch bool `json:"pauseAfterFirstBatch,omitempty"`

	// approvedRun approves the rest of one run after its first batch: the run's number
	// (status.run). An approval of an earlier run never lets a later one go on.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ApprovedRun int64 `json:"approvedRun,omitempty"`

	// minReadySeconds is how long a node must have been Ready after its run (after its
	// restart, with its new boot ID, for a task that restarts it) before it counts as done:
	// it keeps its rollout slot until then, so the next node waits for it. 0 counts it done
	// at once.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	MinReadySeconds int32 `json:"minReadySeconds,omitempty"`

	// healthChecks are checks of cluster objects made before each new node starts (and
	// each claim): while one does not hold, no node starts (running nodes finish), and the
	// task is Reconciling with reason HealthCheckFailing and the check's name; one that
	// has not held for its failAfterSeconds stalls the run (Stalled, HealthCheckFailing).
	// The operator reads only the objects the checks name, with its own identity: reading a
	// kind needs a role an administrator adds (docs/rollout.md), and an object outside the
	// task's namespace (or cluster-scoped) only of a kind the manager's
	// --health-check-cluster-kinds allows. Secrets can never be named. A check says only
	// whether it held, never what the object holds.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=8
	HealthChecks []HealthCheck `json:"healthChecks,omitempty"`
}

// HealthCheck is a CEL expression over a cluster object (or each object a selector picks)
// that must hold for the rollout to go on.
type HealthCheck struct {
	// name identifies the check in status and messages.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// object names what the expression looks at.
	Object HealthCheckObject `json:"object"`

	// expression is a CEL expression that returns a bool, with the object as `object`
	// (its fields as the API server returns them: object.status.availableReplicas). With
	// object.selector it must hold for every object selected, and for at least one. It is
	// compiled once per spec change with the API server's CEL libraries and its per-call
	// cost limit; one that does not compile, or does not return a bool, stalls the task
	// (reason InvalidSpec) with the compiler's message.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	Expression string `json:"expression"`

	// failAfterSeconds stalls the run once the check has not held for this long (reason
	// HealthCheckFailing): a person must look. Unset, the run waits for the check as long as
	// it takes.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=86400
	FailAfterSeconds *int32 `json:"failAfterSeconds,omitempty"`
}

// HealthCheckObject names the object a health check reads: by name, or by label selector.
//
// +kubebuilder:validation:XValidation:rule="has(self.name) != has(self.selector)",message="a health check's object needs exactly one of name or selector"
// +kubebuilder:validation:XValidation:rule="!(self.kind == 'Secret' && (self.apiVersion == 'v1'))",message="a health check cannot read Secrets"
type HealthCheckObject struct {
	// apiVersion is the object's group and version, such as apps/v1.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	APIVersion string `json:"apiVersion"`

	// kind is the object's kind, such as Deployment.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Kind string `json:"kind"`

	// namespace is the object's namespace; unset, the task's own. Another namespace, or a
	// cluster-scoped kind, is read only for kinds the manager's --health-check-cluster-kinds
	// allows.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`

	// name is the object's name.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name,omitempty"`

	// selector selects the objects by label, in the namespace.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// NewNodesPolicy says whether nodes that appear during or after a rollout get the task.
// +kubebuilder:validation:Enum=Run;Ignore
type NewNodesPolicy string

const (
	// NewNodesRun gives the task to a node that joins or starts matching later.
	NewNodesRun NewNodesPolicy = "Run"
	// NewNodesIgnore fixes the target nodes when a run starts.
	NewNodesIgnore NewNodesPolicy = "Ignore"
)

// NodePhase is where one node stands with the task.
// +kubebuilder:validation:Enum=Pending;Running;Rebooting;Succeeded;Failed
type NodePhase string

const (
	// NodePending: the node has not started the current run yet (waiting for a
	// rollout slot, a retry's backoff, or the node to become Ready).
	NodePending NodePhase = "Pending"
	// NodeRunning: the node's pod exists and has not finished.
	NodeRunning NodePhase = "Running"
	// NodeRebooting: the node's run succeeded and the operator restarted the node (spec.reboot);
	// it is Succeeded once the node is Ready again with a new boot ID.
	NodeRebooting NodePhase = "Rebooting"
	// NodeSucceeded: the node's last attempt exited 0.
	NodeSucceeded NodePhase = "Succeeded"
	// NodeFailed: the node's last attempt failed and no retry is left.
	NodeFailed NodePhase = "Failed"
)

// NodeStatus is the result of the task on one node.
type NodeStatus struct {
	// name is the node's name.
	Name string `json:"name"`

	// phase is Pending, Running, Rebooting, Succeeded or Failed.
	Phase NodePhase `json:"phase"`

	// run is the run (see status.run) this entry belongs to. It is left out when it equals
	// status.run, which keeps the status small at thousands of nodes; an entry of an earlier
	// run is a node that has not started the current one yet.
	// +optional
	Run int64 `json:"run,omitempty"`

	// attempts is how many pods have been started for this node in its run.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`

	// exitCode is the exit code of the last failed attempt. Windows exit codes may be
	// NTSTATUS values, which read as negative numbers. A pod stopped by its timeout or
	// deleted has none, and a Succeeded node leaves it out: success is exit code 0.
	// +optional
	ExitCode *int32 `json:"exitCode,omitempty"`

	// reason says why the node is in its phase, as one CamelCase word: for example Error,
	// Timeout, NodeLost, PodDeleted, ImagePullBackOff, NodeNotReady, RetryBackoff.
	// +optional
	Reason string `json:"reason,omitempty"`

	// output is the tail of the attempt's output (its termination message). It is shortened
	// from the front when the status would otherwise grow past 1 MiB, succeeded nodes'
	// outputs before failed ones; the pod keeps all of it until it is deleted.
	// +optional
	Output string `json:"output,omitempty"`

	// startTime is when the last attempt's pod was created.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// finishTime is when the last attempt finished.
	// +optional
	FinishTime *metav1.Time `json:"finishTime,omitempty"`

	// bootIDBefore is the node's status.nodeInfo.bootID when the operator restarted it.
	// +optional
	BootIDBefore string `json:"bootIDBefore,omitempty"`

	// bootIDAfter is the node's boot ID once it came back from the restart.
	// +optional
	BootIDAfter string `json:"bootIDAfter,omitempty"`

	// compliance is what spec.check found on the node in this entry's run: Compliant (the
	// first check passed, nothing was changed), Remediated (the check failed, the script
	// ran, the check passed after it) or NonCompliant (the check failed, and either mode
	// is Audit, the script did not repair it, or the script has not run yet). Empty for a
	// task without a check, and while the node's check has no answer.
	// +optional
	Compliance Compliance `json:"compliance,omitempty"`
}

// Compliance is what a task's check found on one node.
// +kubebuilder:validation:Enum=Compliant;NonCompliant;Remediated
type Compliance string

const (
	// Compliant: the check passed before anything was changed.
	Compliant Compliance = "Compliant"
	// NonCompliant: the check failed and the node was not (or not yet) put right.
	NonCompliant Compliance = "NonCompliant"
	// Remediated: the check failed, the script ran, and the check passed after it.
	Remediated Compliance = "Remediated"
)

// Rollout batches, in status.rollout.batch.
const (
	// BatchFirst: the first batch runs; the other targets wait for it.
	BatchFirst = "First"
	// BatchRest: the first batch succeeded (and, with pauseAfterFirstBatch, the run was
	// approved); every target may start.
	BatchRest = "Rest"
)

// RolloutStatus is where a run stands with its first batch.
type RolloutStatus struct {
	// firstBatch names the nodes of the current run's first batch, chosen when the run
	// started (or when rollout.firstBatch was set): the first targets by name.
	// +optional
	// +listType=atomic
	FirstBatch []string `json:"firstBatch,omitempty"`

	// batch is First while the first batch runs or waits for approval, Rest once every
	// target may start.
	// +optional
	Batch string `json:"batch,omitempty"`

	// approved is true once the run's rest was approved (spec.rollout.approvedRun equals
	// status.run); only with pauseAfterFirstBatch.
	// +optional
	Approved bool `json:"approved,omitempty"`

	// healthChecks is the last evaluation of each of spec.rollout.healthChecks.
	// +optional
	// +listType=map
	// +listMapKey=name
	HealthChecks []HealthCheckStatus `json:"healthChecks,omitempty"`
}

// HealthCheckStatus is the last evaluation of one health check.
type HealthCheckStatus struct {
	// name is the check's name.
	Name string `json:"name"`

	// healthy says whether the check held.
	Healthy bool `json:"healthy"`

	// since is when the check last changed between holding and not (its failAfterSeconds
	// counts from here). The check is evaluated at most every few seconds while nodes wait
	// to start; the time of each evaluation is not written, so that the status changes only
	// when a result does.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`

	// message says why a check did not hold, without the object's content: the expression
	// returned false, the object was not found, reading it was forbidden, the expression
	// failed.
	// +optional
	Message string `json:"message,omitempty"`
}

// ComplianceSummary counts what the task's check found on its targets in the current run.
type ComplianceSummary struct {
	// compliant counts targets that were compliant or were remediated.
	Compliant int32 `json:"compliant"`
	// nonCompliant counts targets the check found out of compliance and that were not put
	// right (all of them in mode Audit).
	NonCompliant int32 `json:"nonCompliant"`
	// unknown counts targets without an answer: not checked yet, or the check failed.
	Unknown int32 `json:"unknown"`
}

// NodeTaskStatus is what the operator observed and did. The operator writes it; nothing in
// it is read back as an instruction except the per-node results it must not lose.
type NodeTaskStatus struct {
	// observedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// revision is a hash of the fields that define what runs (script or container, env,
	// runAsUserName, resources, pod metadata, service account, image pull secrets,
	// priority class, rerunToken). A new revision runs again on every node.
	// +optional
	Revision string `json:"revision,omitempty"`

	// run counts the runs of this task: it goes up by one whenever revision changes, also
	// when the spec goes back to content that ran before (a GitOps revert), so that such a
	// change runs again on every node. Pods carry it in their nodetask.io/run label.
	// +optional
	Run int64 `json:"run,omitempty"`

	// startTime is when the current run started.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when every target of the current run finished.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// targets is how many nodes the current run runs on.
	// +optional
	Targets int32 `json:"targets"`

	// pending is how many targets have not started the current run.
	// +optional
	Pending int32 `json:"pending"`

	// running is how many targets are running the current run, or restarting after it.
	// +optional
	Running int32 `json:"running"`

	// succeeded is how many targets finished the current run successfully.
	// +optional
	Succeeded int32 `json:"succeeded"`

	// failed is how many targets failed the current run with no retry left.
	// +optional
	Failed int32 `json:"failed"`

	// compliance counts what spec.check found on the targets in the current run; only a
	// task with a check has it.
	// +optional
	Compliance *ComplianceSummary `json:"compliance,omitempty"`

	// rollout is where the current run stands with spec.rollout's first batch, approval and
	// health checks; only a task with rollout.firstBatch or rollout.healthChecks has it.
	// +optional
	Rollout *RolloutStatus `json:"rollout,omitempty"`

	// conditions follow the kstatus conventions: Ready, Reconciling and Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// resultSlices is how many NodeResultSlices hold the per-node results when they are too
	// many for this object to carry cheaply (more than a few hundred target nodes): nodes is
	// then empty, and each slice, named <task>-results-<i> and labeled nodetask.io/task,
	// holds the entries of the nodes whose name hashes to it. Counts and conditions stay
	// here, so that watchers of the task see progress in a small object. 0: nodes holds them.
	// `kubectl nodetask status` reads either.
	// +optional
	ResultSlices int32 `json:"resultSlices,omitempty"`

	// nodes has one entry per target node, sorted by name. A node that has not started the
	// current run keeps its previous run's result until it does; a node that stopped
	// matching keeps the result it reached in the current run. The entry of a deleted node
	// is dropped once its pods are gone, so that node churn does not grow the status; a
	// node deleted and created again under the same name is a new machine and starts afresh.
	// The list is atomic so that managedFields stays one line however many nodes there are.
	// +optional
	// +listType=atomic
	Nodes []NodeStatus `json:"nodes,omitempty"`
}

// NodeTask runs a PowerShell script or a container image once on every matching Windows
// node, each in a one-shot HostProcess pod, and records every node's result in its status.
// Whoever can create a NodeTask can run code as SYSTEM on those nodes.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=nt,categories=all
// +kubebuilder:printcolumn:name="Run",type=integer,JSONPath=`.status.run`,priority=1
// +kubebuilder:printcolumn:name="Targets",type=integer,JSONPath=`.status.targets`
// +kubebuilder:printcolumn:name="Running",type=integer,JSONPath=`.status.running`,priority=1
// +kubebuilder:printcolumn:name="Succeeded",type=integer,JSONPath=`.status.succeeded`
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.failed`
// +kubebuilder:printcolumn:name="Compliant",type=integer,JSONPath=`.status.compliance.compliant`
// +kubebuilder:printcolumn:name="NonCompliant",type=integer,JSONPath=`.status.compliance.nonCompliant`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
type NodeTask struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says what to run, where, and how fast.
	Spec NodeTaskSpec `json:"spec"`

	// status is the observed progress and the per-node results. A task no controller has
	// acted on yet reads as status.observedGeneration 0 (a default), so that kstatus-based
	// tools (Flux's wait) see a generation not yet observed instead of a finished task.
	// +optional
	// +kubebuilder:default={observedGeneration: 0}
	Status NodeTaskStatus `json:"status,omitempty"`
}

// NodeTaskList is a list of NodeTasks.
//
// +kubebuilder:object:root=true
type NodeTaskList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	// items are the NodeTasks.
	Items []NodeTask `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NodeTask{}, &NodeTaskList{})
}
