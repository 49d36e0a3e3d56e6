package schedule

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// Observed is what the controller saw: the schedule, the NodeTasks it controls, and the time.
type Observed struct {
	Schedule *ntv1.NodeTaskSchedule
	// Runs are the NodeTasks whose controller owner is the schedule.
	Runs []ntv1.NodeTask
	Now  time.Time
}

// Missed describes scheduled times that passed without a run.
type Missed struct {
	// Count is how many times passed before Latest without a run (at most missedCountLimit).
	Count int
	// First is the earliest of them.
	First time.Time
	// Latest is the most recent scheduled time; TooLate says it is skipped too.
	Latest time.Time
	// TooLate: Latest is older than startingDeadlineSeconds, so it does not start either.
	TooLate bool
}

// missedCountLimit bounds the counting of missed times for the event: after a long
// downtime the exact number matters less than not stepping through all of them.
const missedCountLimit = 100

// Plan is what the controller should do now.
type Plan struct {
	// Problem is set when the schedule cannot be acted on (invalid schedule or time zone):
	// nothing is started, and the schedule is Stalled.
	Problem *Problem
	// Due is the scheduled time whose run should exist now; zero if none is due.
	Due time.Time
	// Create is the name of the run to create for Due; empty if it must not be created
	// (none due, or Forbid and a run is active).
	Create string
	// Replace are active runs to delete before Create (concurrencyPolicy Replace).
	Replace []string
	// BlockedBy are the active runs that keep Due from starting (concurrencyPolicy Forbid).
	BlockedBy []string
	// Missed is set when scheduled times passed without a run.
	Missed *Missed
	// Prune are finished runs beyond the history limits, to delete.
	Prune []string
	// History is the history to keep: observed runs and remembered entries, newest first,
	// within the limits; Replace entries already marked Replaced.
	History []ntv1.ScheduleRun
	// Next is the next scheduled time after now (zero when suspended or invalid).
	Next time.Time
	// RequeueAfter is when to look again if nothing else happens; 0 means only on a change.
	RequeueAfter time.Duration
}

// Problem is why a schedule cannot go on without a person.
type Problem struct {
	Reason, Message string
}

// ComputePlan decides what the schedule does at obs.Now.
func ComputePlan(obs Observed) *Plan {
	s := obs.Schedule
	p := &Plan{}
	history := mergeHistory(obs.Runs, s.Status.History)

	c, err := Parse(s.Spec.Schedule, ptrString(s.Spec.TimeZone))
	if err != nil {
		reason := ntv1.ReasonInvalidSchedule
		if pe, ok := err.(*ParseError); ok && pe.Field == "timeZone" {
			reason = ntv1.ReasonInvalidTimeZone
		}
		p.Problem = &Problem{Reason: reason, Message: err.Error()}
		p.History, p.Prune = pruneHistory(history, s, obs.Runs)
		return p
	}

	active := activeRuns(history)
	if !s.Spec.Suspend {
		earliest := s.CreationTimestamp.Time
		if t := s.Status.LastScheduleTime; t != nil && t.After(earliest) {
			earliest = t.Time
		}
		for i := range history {
			// A manual run's time is not a scheduled time: a schedule run by hand just after
			// a fire time, before the controller got to it, still starts that time's run.
			if !IsScheduled(s.Name, history[i]) {
				continue
			}
			if t := history[i].ScheduledTime.Time; t.After(earliest) {
				earliest = t
			}
		}
		// Times before the next time the status last announced were never due under the
		// spec the controller last saw: a changed schedule, time zone or template does not
		// start a run for a time the new schedule has in the past. (While a due run waits,
		// the status announces that run's time, so it is not dropped.)
		if n := s.Status.NextScheduleTime; n != nil {
			if h := n.Add(-time.Second); h.After(earliest) {
				earliest = h
			}
		}
		if due := c.MostRecent(earliest, obs.Now); !due.IsZero() {
			if n := c.CountBetween(earliest, due, missedCountLimit); n > 0 {
				p.Missed = &Missed{Count: n, First: c.Next(earliest), Latest: due}
			}
			if d := s.Spec.StartingDeadlineSeconds; d != nil && obs.Now.Sub(due) > time.Duration(*d)*time.Second {
				if p.Missed == nil {
					p.Missed = &Missed{First: due, Latest: due}
				}
				p.Missed.TooLate = true
			} else {
				p.Due = due
				switch {
				case len(active) == 0:
					p.Create = RunName(s.Name, due)
				case s.Spec.ConcurrencyPolicy == ntv1.ConcurrencyReplace:
					p.Replace = active
					p.Create = RunName(s.Name, due)
				default: // Forbid
					p.BlockedBy = active
				}
			}
		}
		p.Next = c.Next(obs.Now)
		if !p.Next.IsZero() {
			p.RequeueAfter = p.Next.Sub(obs.Now)
		}
		if p.Due != (time.Time{}) && len(p.BlockedBy) > 0 {
			// The blocking run's end wakes the controller; the deadline passing needs a look too.
			if d := s.Spec.StartingDeadlineSeconds; d != nil {
				if until := p.Due.Add(time.Duration(*d) * time.Second).Sub(obs.Now); until > 0 && (p.RequeueAfter == 0 || until < p.RequeueAfter) {
					p.RequeueAfter = until + time.Second
				}
			}
		}
	}
	for _, name := range p.Replace {
		for i := range history {
			if history[i].Name == name {
				history[i].Outcome = ntv1.RunReplaced
				history[i].CompletionTime = &metav1.Time{Time: obs.Now}
			}
		}
	}
	p.History, p.Prune = pruneHistory(history, s, obs.Runs)
	return p
}

// ObserveRun reads a run's NodeTask into a history entry.
func ObserveRun(task *ntv1.NodeTask) ntv1.ScheduleRun {
	e := ntv1.ScheduleRun{
		Name:      task.Name,
		Targets:   task.Status.Targets,
		Succeeded: task.Status.Succeeded,
		Failed:    task.Status.Failed,
		StartTime: task.Status.StartTime,
		Outcome:   ntv1.RunRunning,
	}
	if t, err := time.Parse(time.RFC3339, task.Annotations[ntv1.AnnotationScheduledTime]); err == nil {
		e.ScheduledTime = metav1.Time{Time: t}
	} else {
		e.ScheduledTime = task.CreationTimestamp
	}
	if task.Status.ObservedGeneration != task.Generation || task.Status.ObservedGeneration == 0 {
		return e // not looked at yet, or changed since
	}
	ready := meta.FindStatusCondition(task.Status.Conditions, ntv1.ConditionReady)
	stalled := meta.FindStatusCondition(task.Status.Conditions, ntv1.ConditionStalled)
	reconciling := meta.FindStatusCondition(task.Status.Conditions, ntv1.ConditionReconciling)
	finishedAt := func(c *metav1.Condition) *metav1.Time {
		if task.Status.CompletionTime != nil {
			return task.Status.CompletionTime
		}
		if c != nil {
			return &metav1.Time{Time: c.LastTransitionTime.Time}
		}
		return nil
	}
	switch {
	case ready != nil && ready.Status == metav1.ConditionTrue:
		e.Outcome, e.CompletionTime = ntv1.RunSucceeded, finishedAt(ready)
	case stalled != nil && stalled.Status == metav1.ConditionTrue && task.Status.Running == 0:
		e.Outcome, e.CompletionTime, e.Reason = ntv1.RunFailed, finishedAt(stalled), stalled.Reason
	case ready != nil && ready.Reason == ntv1.ReasonNoTargets && (reconciling == nil || reconciling.Status != metav1.ConditionTrue):
		e.Outcome, e.CompletionTime, e.Reason = ntv1.RunNoTargets, finishedAt(ready), ready.Reason
	}
	return e
}

// mergeHistory combines the observed runs with the remembered history: an observed run's
// entry is read from its NodeTask, except that a run the schedule replaced stays Replaced;
// a remembered run whose NodeTask is gone keeps its entry, Deleted if it had not finished.
// The result is newest first.
func mergeHistory(runs []ntv1.NodeTask, remembered []ntv1.ScheduleRun) []ntv1.ScheduleRun {
	old := map[string]ntv1.ScheduleRun{}
	for _, e := range remembered {
		old[e.Name] = e
	}
	seen := map[string]bool{}
	var out []ntv1.ScheduleRun
	for i := range runs {
		e := ObserveRun(&runs[i])
		if prev, ok := old[e.Name]; ok && prev.Outcome == ntv1.RunReplaced {
			prev.Targets, prev.Succeeded, prev.Failed = e.Targets, e.Succeeded, e.Failed
			e = prev
		} else if !runs[i].DeletionTimestamp.IsZero() && !e.Outcome.Finished() {
			e.Outcome = ntv1.RunDeleted
		}
		seen[e.Name] = true
		out = append(out, e)
	}
	for _, e := range remembered {
		if seen[e.Name] {
			continue
		}
		if !e.Outcome.Finished() {
			e.Outcome = ntv1.RunDeleted
		}
		out = append(out, e)
	}
	sortHistory(out)
	return out
}

func sortHistory(h []ntv1.ScheduleRun) {
	sort.SliceStable(h, func(i, j int) bool {
		if !h[i].ScheduledTime.Equal(&h[j].ScheduledTime) {
			return h[i].ScheduledTime.After(h[j].ScheduledTime.Time)
		}
		return h[i].Name > h[j].Name
	})
}

// activeRuns are the names of the runs that have not finished, newest first.
func activeRuns(history []ntv1.ScheduleRun) []string {
	var out []string
	for _, e := range history {
		if !e.Outcome.Finished() {
			out = append(out, e.Name)
		}
	}
	return out
}

// pruneHistory keeps every active run, the newest successfulRunsHistoryLimit succeeded
// runs and the newest failedRunsHistoryLimit other finished runs; it returns the kept
// entries and the existing NodeTasks of the others, to delete.
func pruneHistory(history []ntv1.ScheduleRun, s *ntv1.NodeTaskSchedule, runs []ntv1.NodeTask) (kept []ntv1.ScheduleRun, prune []string) {
	okLimit, failLimit := HistoryLimits(s)
	exists := map[string]bool{}
	for i := range runs {
		if runs[i].DeletionTimestamp.IsZero() {
			exists[runs[i].Name] = true
		}
	}
	var ok, failed int
	for _, e := range history { // newest first
		keep := true
		switch {
		case !e.Outcome.Finished():
		case e.Outcome == ntv1.RunSucceeded:
			ok++
			keep = ok <= okLimit
		default:
			failed++
			keep = failed <= failLimit
		}
		if keep {
			kept = append(kept, e)
		} else if exists[e.Name] {
			prune = append(prune, e.Name)
		}
	}
	return kept, prune
}

// HistoryLimits returns the schedule's history limits, defaulted.
func HistoryLimits(s *ntv1.NodeTaskSchedule) (succeeded, failed int) {
	succeeded, failed = ntv1.DefaultSuccessfulRunsHistoryLimit, ntv1.DefaultFailedRunsHistoryLimit
	if v := s.Spec.SuccessfulRunsHistoryLimit; v != nil {
		succeeded = int(*v)
	}
	if v := s.Spec.FailedRunsHistoryLimit; v != nil {
		failed = int(*v)
	}
	return succeeded, failed
}

// Applied is what acting on a plan did.
type Applied struct {
	// Started: the run of plan.Create exists now and is this schedule's (created, or found).
	Started bool
	// Created: this pass created it (false when it was found already there).
	Created bool
	// Problem: the run could not be created (its name is taken, or the API server refused it).
	Problem *Problem
}

// ComputeStatus is the schedule's whole status after the plan was applied. Nothing else
// writes status fields.
func ComputeStatus(obs Observed, p *Plan, a Applied) ntv1.NodeTaskScheduleStatus {
	s := obs.Schedule
	old := s.Status
	st := ntv1.NodeTaskScheduleStatus{
		ObservedGeneration: s.Generation,
		Conditions:         append([]metav1.Condition(nil), old.Conditions...),
		LastScheduleTime:   old.LastScheduleTime,
		LastSuccessfulTime: old.LastSuccessfulTime,
		LastRunOutcome:     old.LastRunOutcome,
	}
	history := append([]ntv1.ScheduleRun(nil), p.History...)
	if a.Started && !inHistory(history, p.Create) {
		history = append(history, ntv1.ScheduleRun{Name: p.Create, ScheduledTime: metav1.Time{Time: p.Due}, Outcome: ntv1.RunRunning})
		sortHistory(history)
	}
	if len(history) > 0 {
		st.History = history
	}
	var lastFinished *ntv1.ScheduleRun
	for i := range history {
		e := &history[i]
		if t := e.ScheduledTime; IsScheduled(s.Name, *e) && (st.LastScheduleTime == nil || t.After(st.LastScheduleTime.Time)) {
			st.LastScheduleTime = &metav1.Time{Time: t.Time}
		}
		if !e.Outcome.Finished() {
			st.Active = append(st.Active, ntv1.ScheduleRunReference{Name: e.Name, ScheduledTime: e.ScheduledTime})
			continue
		}
		if lastFinished == nil {
			lastFinished = e
		}
		if e.Outcome == ntv1.RunSucceeded && e.CompletionTime != nil &&
			(st.LastSuccessfulTime == nil || e.CompletionTime.After(st.LastSuccessfulTime.Time)) {
			st.LastSuccessfulTime = e.CompletionTime
		}
	}
	if lastFinished != nil {
		st.LastRunOutcome = lastFinished.Outcome
	}
	switch {
	case !p.Due.IsZero() && !a.Started:
		// The due run waits (Forbid) or could not be created: it is still the next one.
		st.NextScheduleTime = &metav1.Time{Time: p.Due}
	case !p.Next.IsZero():
		st.NextScheduleTime = &metav1.Time{Time: p.Next}
	}
	setConditions(&st, s, p, a, lastFinished, obs.Now)
	return st
}

func inHistory(h []ntv1.ScheduleRun, name string) bool {
	for _, e := range h {
		if e.Name == name {
			return true
		}
	}
	return false
}

// setConditions sets Ready, Reconciling and Stalled (kstatus), always all three:
//   - Stalled=True: the schedule or time zone is invalid, a run could not be created, or the
//     newest finished run failed (the next run still starts at its time; a success clears it).
//   - Ready=False, Reconciling=True: a run is active.
//   - Ready=False, Reconciling=False: suspended, or the newest run found no target.
//   - Ready=True: the newest finished run succeeded, or none has run yet, and the next is planned.
func setConditions(st *ntv1.NodeTaskScheduleStatus, s *ntv1.NodeTaskSchedule, p *Plan, a Applied, last *ntv1.ScheduleRun, now time.Time) {
	set := func(typ string, status metav1.ConditionStatus, reason, msg string) {
		// The transition time is the clock's, and kept while the status stays the same.
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: s.Generation,
			LastTransitionTime: metav1.Time{Time: now.Truncate(time.Second)},
		})
	}
	next := "no next run within five years"
	if !p.Next.IsZero() {
		next = "next run at " + p.Next.UTC().Format(time.RFC3339)
	}
	problem := p.Problem
	if problem == nil {
		problem = a.Problem
	}
	if problem == nil && len(st.Active) == 0 && last != nil && last.Outcome == ntv1.RunFailed && !s.Spec.Suspend {
		msg := fmt.Sprintf("the last run %s failed", last.Name)
		if last.Reason != "" {
			msg += " (" + last.Reason + ")"
		}
		msg += fmt.Sprintf(": %d of %d nodes succeeded, %d failed; read `kubectl get nodetask %s -o yaml`; %s", last.Succeeded, last.Targets, last.Failed, last.Name, next)
		problem = &Problem{Reason: ntv1.ReasonLastRunFailed, Message: msg}
	}
	if problem != nil {
		set(ntv1.ConditionStalled, metav1.ConditionTrue, problem.Reason, problem.Message)
		set(ntv1.ConditionReconciling, metav1.ConditionFalse, problem.Reason, "")
		set(ntv1.ConditionReady, metav1.ConditionFalse, problem.Reason, problem.Message)
		return
	}
	set(ntv1.ConditionStalled, metav1.ConditionFalse, ntv1.ReasonScheduled, "")
	switch {
	case len(st.Active) > 0:
		var parts []string
		for _, e := range st.History {
			if !e.Outcome.Finished() {
				parts = append(parts, fmt.Sprintf("%s (%d of %d nodes succeeded, %d failed)", e.Name, e.Succeeded, e.Targets, e.Failed))
			}
		}
		msg := "running " + strings.Join(parts, ", ")
		if len(p.BlockedBy) > 0 && !p.Due.IsZero() {
			msg += fmt.Sprintf("; the run due at %s waits for it (concurrencyPolicy Forbid)", p.Due.UTC().Format(time.RFC3339))
		}
		set(ntv1.ConditionReconciling, metav1.ConditionTrue, ntv1.ReasonRunActive, msg)
		set(ntv1.ConditionReady, metav1.ConditionFalse, ntv1.ReasonRunActive, msg)
	case s.Spec.Suspend:
		set(ntv1.ConditionReconciling, metav1.ConditionFalse, ntv1.ReasonSuspended, "")
		set(ntv1.ConditionReady, metav1.ConditionFalse, ntv1.ReasonSuspended, "suspended: no run starts; set spec.suspend to false to go on")
	case last != nil && last.Outcome == ntv1.RunNoTargets:
		msg := fmt.Sprintf("the last run %s found no Windows node matching the template's nodeSelector, nodeNames and tolerations; %s", last.Name, next)
		set(ntv1.ConditionReconciling, metav1.ConditionFalse, ntv1.ReasonLastRunNoTargets, "")
		set(ntv1.ConditionReady, metav1.ConditionFalse, ntv1.ReasonLastRunNoTargets, msg)
	default:
		msg := "no run yet; " + next
		if last != nil {
			msg = fmt.Sprintf("the last run %s %s (%d of %d nodes succeeded); %s", last.Name, strings.ToLower(string(last.Outcome)), last.Succeeded, last.Targets, next)
		}
		set(ntv1.ConditionReconciling, metav1.ConditionFalse, ntv1.ReasonScheduled, "")
		set(ntv1.ConditionReady, metav1.ConditionTrue, ntv1.ReasonScheduled, msg)
	}
}

// NewRun returns the NodeTask for plan.Create: the template copied, owned by the schedule
// (the caller sets the owner reference, which needs the scheme), labelled with it.
func NewRun(s *ntv1.NodeTaskSchedule, name string, scheduled time.Time) *ntv1.NodeTask {
	t := &ntv1.NodeTask{}
	t.Name, t.Namespace = name, s.Namespace
	t.Labels = map[string]string{}
	for k, v := range s.Spec.Template.Metadata.Labels {
		t.Labels[k] = v
	}
	t.Labels[ntv1.LabelSchedule] = s.Name
	t.Annotations = map[string]string{}
	for k, v := range s.Spec.Template.Metadata.Annotations {
		t.Annotations[k] = v
	}
	t.Annotations[ntv1.AnnotationScheduledTime] = scheduled.UTC().Format(time.RFC3339)
	s.Spec.Template.Spec.DeepCopyInto(&t.Spec)
	return t
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
