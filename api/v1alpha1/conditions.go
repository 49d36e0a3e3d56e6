package v1alpha1

// Condition types, following the kstatus conventions
// (sigs.k8s.io/cli-utils/pkg/kstatus): Argo CD, Flux and `kubectl wait` read these.
const (
	// ConditionReady is True once every target of the current revision has a final result
	// and the failures are within rollout.maxFailures.
	ConditionReady = "Ready"
	// ConditionReconciling is True while pods are running or nodes wait for a slot, a retry
	// or a node to become Ready.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when the task cannot go on without a person: the failure
	// budget is spent, Pod Security admission rejects the pods, or the script's ConfigMap is missing.
	ConditionStalled = "Stalled"
)

// Condition reasons.
const (
	// ReasonSucceeded: every target finished and failures are within the budget.
	ReasonSucceeded = "Succeeded"
	// ReasonProgressing: pods are running or nodes wait for a rollout slot.
	ReasonProgressing = "Progressing"
	// ReasonWaitingForNodes: the only unfinished targets wait for a node to become Ready.
	ReasonWaitingForNodes = "WaitingForNodes"
	// ReasonRetryBackoff: the only unfinished targets wait for a retry's backoff to end.
	ReasonRetryBackoff = "RetryBackoff"
	// ReasonOutsideMaintenanceWindow: the only unfinished targets wait for spec.window to open.
	ReasonOutsideMaintenanceWindow = "OutsideMaintenanceWindow"
	// ReasonSuspended: spec.suspend is true.
	ReasonSuspended = "Suspended"
	// ReasonNoTargets: no node matches the task.
	ReasonNoTargets = "NoTargets"
	// ReasonFailureBudgetExceeded: more nodes failed than rollout.maxFailures allows.
	ReasonFailureBudgetExceeded = "FailureBudgetExceeded"
	// ReasonPodSecurityRejected: Pod Security admission refused the pods in this namespace.
	ReasonPodSecurityRejected = "PodSecurityRejected"
	// ReasonConfigMapNotFound: the ConfigMap or key named by spec.script.configMapKeyRef is missing.
	ReasonConfigMapNotFound = "ConfigMapNotFound"
	// ReasonInvalidSpec: the spec passed validation but cannot be acted on (a bad label selector).
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonPodCreateFailed: the API server refused the pods for another reason.
	ReasonPodCreateFailed = "PodCreateFailed"
	// ReasonQuotaExceeded: a ResourceQuota refused some pods; the rollout goes on as pods
	// finish and free the quota (Reconciling, not Stalled).
	ReasonQuotaExceeded = "QuotaExceeded"
	// ReasonScriptConfigMapConflict: an object the task does not own holds the name of the
	// run's script ConfigMap.
	ReasonScriptConfigMapConflict = "ScriptConfigMapConflict"
	// ReasonFirstBatch: nodes of rollout.firstBatch run; the other targets wait for them.
	ReasonFirstBatch = "FirstBatch"
	// ReasonAwaitingApproval: the first batch succeeded and rollout.pauseAfterFirstBatch
	// waits for spec.rollout.approvedRun to name the run (kubectl nodetask approve).
	ReasonAwaitingApproval = "AwaitingApproval"
	// ReasonFirstBatchFailed: a node of the first batch failed with no retry left; the other
	// targets do not start (Stalled).
	ReasonFirstBatchFailed = "FirstBatchFailed"
	// ReasonHealthCheckFailing: a rollout.healthChecks check does not hold: no node starts
	// (Reconciling), or, past its failAfterSeconds, the run stalls (Stalled).
	ReasonHealthCheckFailing = "HealthCheckFailing"
	// ReasonMinReady: the only unfinished work is nodes counting rollout.minReadySeconds.
	ReasonMinReady = "MinReady"
	// ReasonNonCompliant: an Audit run finished and its check found nodes out of
	// compliance (Ready is True: the audit is done; the message counts the nodes, and the
	// Argo CD health check reports the task Degraded).
	ReasonNonCompliant = "NonCompliant"
	// ReasonStatusTooLarge: the per-node results no longer fit in the object under the API
	// server's size limit; no further node starts and no pod is deleted, so no result is lost.
	ReasonStatusTooLarge = "StatusTooLarge"
)

// Per-node reasons, in status.nodes[].reason.
const (
	// NodeReasonError: the attempt exited with a non-zero code.
	NodeReasonError = "Error"
	// NodeReasonTimeout: the attempt ran longer than timeoutSeconds and was stopped, by the
	// kubelet or, when the kubelet did not (an unreachable node), by the operator.
	NodeReasonTimeout = "Timeout"
	// NodeReasonNodeLost: the node was deleted while its pod ran.
	NodeReasonNodeLost = "NodeLost"
	// NodeReasonInterrupted: a script's pod exited 0 without the wrapper's completion
	// marker: the script was stopped before it ended (a shutdown, a deleted pod), or the
	// wrapper could not write its termination message. It counts as a failure.
	NodeReasonInterrupted = "Interrupted"
	// NodeReasonPodDeleted: someone else deleted the pod before it finished.
	NodeReasonPodDeleted = "PodDeleted"
	// NodeReasonNodeNotReady: the node is not Ready, so the task waits to start there.
	NodeReasonNodeNotReady = "NodeNotReady"
	// NodeReasonNodeUnavailable: the kubelet tainted the node for disk, memory or PID
	// pressure or an unavailable network, so the task waits to start there.
	NodeReasonNodeUnavailable = "NodeUnavailable"
	// NodeReasonPodRejected: the API server refused the attempt's pod (an admission webhook,
	// a LimitRange...); the output holds its message. It counts as a failed attempt.
	NodeReasonPodRejected = "PodRejected"
	// NodeReasonRebootRequired: the attempt succeeded with one of spec.rebootExitCodes
	// (3010, 1641): the node must restart to finish what the script did.
	NodeReasonRebootRequired = "RebootRequired"
	// NodeReasonStillNonCompliant: the check found the node non-compliant, the script ran
	// and succeeded, and the check still found it non-compliant; the output holds the
	// check's, the script's and the re-check's output.
	NodeReasonStillNonCompliant = "StillNonCompliant"
	// NodeReasonCheckFailed: spec.check exited with a code that is neither 0 (compliant)
	// nor check.nonCompliantExitCode. A failed check before the claim (attempt 0) is not
	// retried: the check itself needs fixing.
	NodeReasonCheckFailed = "CheckFailed"
	// NodeReasonRetryBackoff: the last attempt failed and the next waits for its backoff.
	NodeReasonRetryBackoff = "RetryBackoff"
	// NodeReasonNodeBusy: another NodeTask has claimed the node (nodetask.io/claim) to
	// cordon, drain or restart it; this task waits for the claim's release.
	NodeReasonNodeBusy = "NodeBusy"
	// NodeReasonDraining: the node is cordoned and its pods are being evicted (spec.drain).
	NodeReasonDraining = "Draining"
	// NodeReasonDrainBlocked: an eviction was refused, usually by a PodDisruptionBudget
	// (named in the output); the drain tries again until drain.timeoutSeconds.
	NodeReasonDrainBlocked = "DrainBlocked"
	// NodeReasonDrainTimeout: the drain did not finish within drain.timeoutSeconds.
	NodeReasonDrainTimeout = "DrainTimeout"
	// NodeReasonRebootRequested: the operator's restart pod was created on the node.
	NodeReasonRebootRequested = "RebootRequested"
	// NodeReasonRebooted: the node came back Ready with a new boot ID after the restart.
	NodeReasonRebooted = "Rebooted"
	// NodeReasonRebootTimeout: the node did not come back within spec.rebootTimeoutSeconds.
	NodeReasonRebootTimeout = "RebootTimeout"
	// NodeReasonRebootFailed: the restart command failed (its output says why).
	NodeReasonRebootFailed = "RebootFailed"
)

// Condition reasons of a NodeTaskSchedule.
const (
	// ReasonScheduled: the last run succeeded (or none has run yet) and the next is planned.
	ReasonScheduled = "Scheduled"
	// ReasonRunActive: a run of the schedule is going on.
	ReasonRunActive = "RunActive"
	// ReasonLastRunFailed: the newest finished run did not succeed; the next one still starts
	// at its time.
	ReasonLastRunFailed = "LastRunFailed"
	// ReasonLastRunNoTargets: no Windows node matched the newest finished run.
	ReasonLastRunNoTargets = "LastRunNoTargets"
	// ReasonInvalidSchedule: spec.schedule cannot be parsed.
	ReasonInvalidSchedule = "InvalidSchedule"
	// ReasonInvalidTimeZone: spec.timeZone is not a time zone the manager knows.
	ReasonInvalidTimeZone = "InvalidTimeZone"
	// ReasonRunNameTaken: an object the schedule does not own holds the name of a run.
	ReasonRunNameTaken = "RunNameTaken"
	// ReasonRunRefused: the API server refused to create a run.
	ReasonRunRefused = "RunRefused"
)

// Event reasons of a NodeTaskSchedule.
const (
	// EventRunStarted: a run's NodeTask was created.
	EventRunStarted = "RunStarted"
	// EventRunSkipped: a due run did not start because another one is active (Forbid).
	EventRunSkipped = "RunSkipped"
	// EventRunReplaced: an active run was deleted for a newer one (Replace).
	EventRunReplaced = "RunReplaced"
	// EventMissedSchedule: scheduled times passed without a run (downtime, suspend, a
	// deadline passed while a Forbid run was active).
	EventMissedSchedule = "MissedSchedule"
	// EventRunDeleted: a finished run was deleted by the history limits.
	EventRunDeleted = "RunDeleted"
)
