package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxScheduleNameLength is the longest name a NodeTaskSchedule may have: its runs are named
// <schedule>-<minutes since 1970> (up to 10 digits), and that name must stay a valid label
// value (63 characters), so that the nodetask.io/task label on the run's pods is the run's
// own name and not a hash, as with CronJob's 52-character limit.
const MaxScheduleNameLength = 52

// Labels and annotations the schedule controller puts on the NodeTasks it creates.
const (
	// LabelSchedule on a NodeTask names the NodeTaskSchedule that created it.
	LabelSchedule = "nodetask.io/schedule"
	// AnnotationScheduledTime on a NodeTask is the scheduled time (RFC 3339, UTC) it was created for.
	AnnotationScheduledTime = "nodetask.io/scheduled-time"
)

// ConcurrencyPolicy says what a schedule does when a run is due while the previous one is
// still going.
// +kubebuilder:validation:Enum=Forbid;Replace
type ConcurrencyPolicy string

const (
	// ConcurrencyForbid keeps the running run: the due run waits for it to finish, and starts
	// then if it is still within startingDeadlineSeconds; otherwise it is skipped.
	ConcurrencyForbid ConcurrencyPolicy = "Forbid"
	// ConcurrencyReplace deletes the running run (its pods are stopped) and starts the due one.
	ConcurrencyReplace ConcurrencyPolicy = "Replace"
)

// Defaults of the schedule fields the CRD defaults, for code that reads a schedule the API
// server did not default: the same numbers as the markers.
const (
	// DefaultSuccessfulRunsHistoryLimit is spec.successfulRunsHistoryLimit when unset.
	DefaultSuccessfulRunsHistoryLimit = 3
	// DefaultFailedRunsHistoryLimit is spec.failedRunsHistoryLimit when unset.
	DefaultFailedRunsHistoryLimit = 1
)

// NodeTaskScheduleSpec says when to run a NodeTask, and which one.
type NodeTaskScheduleSpec struct {
	// schedule is when runs start, in cron format: five fields (minute, hour, day of month,
	// month, day of week), such as "30 3 * * 6" for Saturdays at 03:30, or one of @yearly,
	// @annually, @monthly, @weekly, @daily, @midnight, @hourly. The times are in timeZone.
	// A schedule the controller cannot parse makes the schedule Stalled with reason
	// InvalidSchedule.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="!self.contains('TZ=')",message="schedule must not set CRON_TZ or TZ: use spec.timeZone"
	// +kubebuilder:validation:XValidation:rule="!self.trim().startsWith('@every')",message="schedule must not use @every (its times depend on when the controller asks): use cron fields such as */30 * * * *"
	// +kubebuilder:validation:XValidation:rule="self.contains('TZ=') || self.trim().startsWith('@every') || self.trim().matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[^ ]+( +[^ ]+){4})$')",message="schedule must be five cron fields separated by spaces (minute hour day-of-month month day-of-week, such as 30 3 * * 6) or one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"
	Schedule string `json:"schedule"`

	// timeZone is the IANA time zone name the schedule is read in, such as Europe/Berlin or
	// America/New_York; the schedule follows its daylight saving time. Unset, UTC (not the
	// manager's local time zone). A name the manager's time zone database does not know
	// makes the schedule Stalled with reason InvalidTimeZone. On the night clocks go
	// forward, a time that does not exist that night (02:30 in Europe/Berlin) runs at the
	// first minute after the gap (03:00); on the night they go back, a time that happens
	// twice runs once, the first time. docs/schedules.md has the details.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	TimeZone *string `json:"timeZone,omitempty"`

	// concurrencyPolicy says what happens when a run is due while the previous run is still
	// active: Forbid (the default) lets the active run finish, and the due run starts after
	// it if that is still within startingDeadlineSeconds, else it is skipped; Replace deletes
	// the active run, stopping its pods, and starts the due one. CronJob's Allow is not
	// offered: two runs of one task at once on the same nodes would race for each node.
	// +optional
	// +kubebuilder:default=Forbid
	ConcurrencyPolicy ConcurrencyPolicy `json:"concurrencyPolicy,omitempty"`

	// startingDeadlineSeconds is how late a run may start after its scheduled time (the
	// manager was down, or a Forbid run waited). A run later than this is skipped with a
	// MissedSchedule event. After any downtime at most one run is started to catch up: the
	// most recent scheduled time, and only if it is within this deadline. Unset, the most
	// recent missed time starts however late.
	// +optional
	// +kubebuilder:validation:Minimum=1
	StartingDeadlineSeconds *int64 `json:"startingDeadlineSeconds,omitempty"`

	// suspend stops new runs from starting; an active run goes on. When it is set back to
	// false, the times missed while suspended count as missed after downtime: the most
	// recent one starts if it is within startingDeadlineSeconds (or however late, when that
	// is unset), the others are skipped.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// successfulRunsHistoryLimit is how many succeeded runs (NodeTasks, and their entries in
	// status.history) are kept; older ones are deleted, with their pods.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	SuccessfulRunsHistoryLimit *int32 `json:"successfulRunsHistoryLimit,omitempty"`

	// failedRunsHistoryLimit is how many runs that did not succeed (failed, found no target,
	// replaced or deleted) are kept; older ones are deleted, with their pods.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	FailedRunsHistoryLimit *int32 `json:"failedRunsHistoryLimit,omitempty"`

	// template is the NodeTask each run creates. It is validated by the same rules as a
	// NodeTask when the schedule is applied. It is copied when a run is created: a change
	// applies from the next run on, never to a run already started.
	Template NodeTaskTemplate `json:"template"`
}

// NodeTaskTemplate is the NodeTask a schedule creates for each run.
//
// +kubebuilder:validation:XValidation:rule="!has(self.spec.suspend) || !self.spec.suspend",message="template.spec.suspend would create runs that never start (and, with concurrencyPolicy Forbid, block every later run): set spec.suspend of the schedule instead"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.rollout) || !has(self.spec.rollout.approvedRun) || self.spec.rollout.approvedRun == 0",message="template.spec.rollout.approvedRun would approve every run of the schedule (each run is a new NodeTask, starting at run 1): approve a run with kubectl nodetask approve RUN, or leave pauseAfterFirstBatch out"
type NodeTaskTemplate struct {
	// metadata holds labels and annotations copied to each run. The run's name, namespace
	// and owner are the schedule's to set.
	// +optional
	Metadata NodeTaskTemplateMetadata `json:"metadata,omitempty"`

	// spec is the run's NodeTask spec.
	Spec NodeTaskSpec `json:"spec"`
}

// NodeTaskTemplateMetadata is the metadata copied to each run.
type NodeTaskTemplateMetadata struct {
	// labels are added to each run's labels. Keys under nodetask.io/ are reserved for the
	// operator.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('nodetask.io/'))",message="template.metadata.labels must not use the nodetask.io/ prefix: the operator sets those labels itself"
	Labels map[string]string `json:"labels,omitempty"`

	// annotations are added to each run's annotations. Keys under nodetask.io/ are reserved
	// for the operator.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('nodetask.io/'))",message="template.metadata.annotations must not use the nodetask.io/ prefix: the operator sets those annotations itself"
	Annotations map[string]string `json:"annotations,omitempty"`
}

// RunOutcome is how a run of a schedule ended, or that it has not.
// +kubebuilder:validation:Enum=Running;Succeeded;Failed;NoTargets;Replaced;Deleted
type RunOutcome string

const (
	// RunRunning: the run's NodeTask has not finished.
	RunRunning RunOutcome = "Running"
	// RunSucceeded: the run's NodeTask is Ready (every target finished within its failure budget).
	RunSucceeded RunOutcome = "Succeeded"
	// RunFailed: the run's NodeTask is Stalled (its failure budget spent, or its pods cannot
	// be created) and no pod of it runs any more.
	RunFailed RunOutcome = "Failed"
	// RunNoTargets: no Windows node matched the run's NodeTask.
	RunNoTargets RunOutcome = "NoTargets"
	// RunReplaced: concurrencyPolicy Replace deleted the run for a newer one.
	RunReplaced RunOutcome = "Replaced"
	// RunDeleted: the run's NodeTask was deleted by someone else before it finished.
	RunDeleted RunOutcome = "Deleted"
)

// Finished reports whether a run with this outcome is over.
func (o RunOutcome) Finished() bool { return o != RunRunning && o != "" }

// ScheduleRunReference names an active run.
type ScheduleRunReference struct {
	// name is the run's NodeTask, in the schedule's namespace.
	Name string `json:"name"`

	// scheduledTime is the time the run was scheduled for.
	ScheduledTime metav1.Time `json:"scheduledTime"`
}

// ScheduleRun is one run of a schedule, in status.history.
type ScheduleRun struct {
	// name is the run's NodeTask, in the schedule's namespace (it may have been deleted since).
	Name string `json:"name"`

	// scheduledTime is the time the run was scheduled for.
	ScheduledTime metav1.Time `json:"scheduledTime"`

	// startTime is when the run's NodeTask started its run.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the run finished.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// targets is how many nodes the run ran on.
	// +optional
	Targets int32 `json:"targets"`

	// succeeded is how many of them succeeded.
	// +optional
	Succeeded int32 `json:"succeeded"`

	// failed is how many of them failed.
	// +optional
	Failed int32 `json:"failed"`

	// outcome is Running, Succeeded, Failed, NoTargets, Replaced or Deleted.
	Outcome RunOutcome `json:"outcome"`

	// reason is the reason of the run's Ready condition when it finished (for example
	// FailureBudgetExceeded, PodSecurityRejected), for a run that did not succeed.
	// +optional
	Reason string `json:"reason,omitempty"`
}

// NodeTaskScheduleStatus is what the schedule controller observed and did.
type NodeTaskScheduleStatus struct {
	// observedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions follow the kstatus conventions: Ready, Reconciling and Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// lastScheduleTime is the scheduled time of the last run started for a scheduled time;
	// a run started by hand (kubectl nodetask run-now) does not count.
	// +optional
	LastScheduleTime *metav1.Time `json:"lastScheduleTime,omitempty"`

	// lastSuccessfulTime is when the last successful run finished.
	// +optional
	LastSuccessfulTime *metav1.Time `json:"lastSuccessfulTime,omitempty"`

	// lastRunOutcome is the outcome of the newest finished run.
	// +optional
	LastRunOutcome RunOutcome `json:"lastRunOutcome,omitempty"`

	// nextScheduleTime is the next time a run is due; while a due run waits for an active
	// one (Forbid) or could not be created, that run's time. Unset while suspended or when
	// the schedule or time zone is invalid. The controller considers no scheduled time
	// before it: a changed spec does not start runs for times in the past.
	// +optional
	NextScheduleTime *metav1.Time `json:"nextScheduleTime,omitempty"`

	// active are the runs that have not finished.
	// +optional
	// +listType=atomic
	Active []ScheduleRunReference `json:"active,omitempty"`

	// history are the recent runs, newest first: the active ones, and at most
	// successfulRunsHistoryLimit succeeded and failedRunsHistoryLimit other finished ones,
	// the same runs whose NodeTasks are kept. An entry outlives its NodeTask if someone else
	// deletes it, until newer runs push it out.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	History []ScheduleRun `json:"history,omitempty"`
}

// NodeTaskSchedule creates a NodeTask from its template at the times of a cron schedule,
// like a CronJob creates Jobs, and keeps a short history of the runs. Whoever can create a
// NodeTaskSchedule can make the operator run code as SYSTEM on Windows nodes, as with a
// NodeTask.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=nts,categories=all
// +kubebuilder:printcolumn:name="Schedule",type=string,JSONPath=`.spec.schedule`
// +kubebuilder:printcolumn:name="TimeZone",type=string,JSONPath=`.spec.timeZone`
// +kubebuilder:printcolumn:name="Suspend",type=boolean,JSONPath=`.spec.suspend`
// +kubebuilder:printcolumn:name="Active",type=string,JSONPath=`.status.active[*].name`
// +kubebuilder:printcolumn:name="Last Schedule",type=date,JSONPath=`.status.lastScheduleTime`
// +kubebuilder:printcolumn:name="Last Result",type=string,JSONPath=`.status.lastRunOutcome`
// +kubebuilder:printcolumn:name="Next",type=string,JSONPath=`.status.nextScheduleTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 52",message="a NodeTaskSchedule's name must be at most 52 characters: its runs are named <name>-<minutes since 1970>, which must fit in a 63-character label value"
type NodeTaskSchedule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says when to run, and what.
	Spec NodeTaskScheduleSpec `json:"spec"`

	// status is the schedule's last and next runs and its recent history. A schedule no
	// controller has acted on yet reads as status.observedGeneration 0.
	// +optional
	// +kubebuilder:default={observedGeneration: 0}
	Status NodeTaskScheduleStatus `json:"status,omitempty"`
}

// NodeTaskScheduleList is a list of NodeTaskSchedules.
//
// +kubebuilder:object:root=true
type NodeTaskScheduleList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	// items are the NodeTaskSchedules.
	Items []NodeTaskSchedule `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NodeTaskSchedule{}, &NodeTaskScheduleList{})
}
