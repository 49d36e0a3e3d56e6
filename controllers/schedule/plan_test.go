package schedule

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// The fake clock: the schedule below was created on Friday 2026-11-27 12:00 UTC and fires
// on Saturdays at 03:00 Europe/Berlin (02:00 UTC in winter).
var (
	created  = utc("2026-11-27T12:00:00Z")
	sat1     = utc("2026-11-28T02:00:00Z")
	sat2     = utc("2026-12-05T02:00:00Z")
	sat3     = utc("2026-12-12T02:00:00Z")
	berlinTZ = "Europe/Berlin"
)

func newSchedule(mutate ...func(*ntv1.NodeTaskSchedule)) *ntv1.NodeTaskSchedule {
	s := &ntv1.NodeTaskSchedule{
		ObjectMeta: metav1.ObjectMeta{Name: "weekly", Namespace: "ops", Generation: 1, CreationTimestamp: metav1.Time{Time: created}},
		Spec: ntv1.NodeTaskScheduleSpec{
			Schedule: "0 3 * * 6", TimeZone: &berlinTZ, ConcurrencyPolicy: ntv1.ConcurrencyForbid,
			Template: ntv1.NodeTaskTemplate{Spec: ntv1.NodeTaskSpec{Script: &ntv1.ScriptSpec{Inline: ptr.To("Write-Output hi")}}},
		},
	}
	for _, m := range mutate {
		m(s)
	}
	return s
}

// run is a NodeTask of the schedule for a scheduled time, finished with outcome ("" = running).
func run(scheduled time.Time, outcome ntv1.RunOutcome) ntv1.NodeTask {
	t := NewRun(newSchedule(), RunName("weekly", scheduled), scheduled)
	t.CreationTimestamp = metav1.Time{Time: scheduled}
	t.Generation = 1
	done := metav1.Time{Time: scheduled.Add(time.Hour)}
	cond := func(typ string, status metav1.ConditionStatus, reason string) {
		meta.SetStatusCondition(&t.Status.Conditions, metav1.Condition{Type: typ, Status: status, Reason: reason, LastTransitionTime: done})
	}
	t.Status.ObservedGeneration = 1
	t.Status.StartTime = &metav1.Time{Time: scheduled.Add(time.Second)}
	t.Status.Targets = 4
	switch outcome {
	case ntv1.RunSucceeded:
		t.Status.Succeeded, t.Status.CompletionTime = 4, &done
		cond(ntv1.ConditionReady, metav1.ConditionTrue, ntv1.ReasonSucceeded)
		cond(ntv1.ConditionStalled, metav1.ConditionFalse, ntv1.ReasonProgressing)
	case ntv1.RunFailed:
		t.Status.Succeeded, t.Status.Failed = 2, 2
		cond(ntv1.ConditionReady, metav1.ConditionFalse, ntv1.ReasonFailureBudgetExceeded)
		cond(ntv1.ConditionStalled, metav1.ConditionTrue, ntv1.ReasonFailureBudgetExceeded)
	case ntv1.RunNoTargets:
		t.Status.Targets = 0
		cond(ntv1.ConditionReady, metav1.ConditionFalse, ntv1.ReasonNoTargets)
		cond(ntv1.ConditionReconciling, metav1.ConditionFalse, ntv1.ReasonNoTargets)
	default:
		t.Status.Running = 2
		cond(ntv1.ConditionReady, metav1.ConditionFalse, ntv1.ReasonProgressing)
		cond(ntv1.ConditionReconciling, metav1.ConditionTrue, ntv1.ReasonProgressing)
	}
	return *t
}

func names(h []ntv1.ScheduleRun) []string {
	var out []string
	for _, e := range h {
		out = append(out, e.Name+"="+string(e.Outcome))
	}
	return out
}

func TestComputePlan(t *testing.T) {
	for _, tc := range []struct {
		name     string
		schedule *ntv1.NodeTaskSchedule
		runs     []ntv1.NodeTask
		now      time.Time
		check    func(g *WithT, p *Plan)
	}{
		{"before the first time: nothing, and a look again at it", newSchedule(), nil, created.Add(time.Hour), func(g *WithT, p *Plan) {
			g.Expect(p.Create).To(BeEmpty())
			g.Expect(p.Next).To(Equal(sat1))
			g.Expect(p.RequeueAfter).To(Equal(sat1.Sub(created.Add(time.Hour))))
		}},
		{"at the time: one run, named from the time", newSchedule(), nil, sat1.Add(2 * time.Second), func(g *WithT, p *Plan) {
			g.Expect(p.Create).To(Equal("weekly-29930520"))
			g.Expect(p.Due).To(Equal(sat1))
			g.Expect(p.Missed).To(BeNil())
			g.Expect(p.Next).To(Equal(sat2))
		}},
		{"the run exists already (a restart, a second replica): nothing new", newSchedule(), []ntv1.NodeTask{run(sat1, "")}, sat1.Add(5 * time.Second), func(g *WithT, p *Plan) {
			g.Expect(p.Create).To(BeEmpty())
			g.Expect(p.BlockedBy).To(BeEmpty(), "its own run does not block itself")
		}},
		{"the status remembers the run though the cache has not seen it: nothing new", newSchedule(func(s *ntv1.NodeTaskSchedule) {
			s.Status.LastScheduleTime = &metav1.Time{Time: sat1}
		}), nil, sat1.Add(5 * time.Second), func(g *WithT, p *Plan) {
			g.Expect(p.Create).To(BeEmpty())
		}},
		{"after two weeks down, no deadline: one catch-up run, the latest, and the missed one is said", newSchedule(), nil, sat2.Add(2 * 24 * time.Hour), func(g *WithT, p *Plan) {
			g.Expect(p.Create).To(Equal(RunName("weekly", sat2)))
			g.Expect(p.Missed).To(Equal(&Missed{Count: 1, First: sat1, Latest: sat2}))
		}},
		{"after downtime, the latest time within startingDeadlineSeconds: it starts", newSchedule(func(s *ntv1.NodeTaskSchedule) {
			s.Spec.StartingDeadlineSeconds = ptr.To[int64](3600)
		}), nil, sat2.Add(30 * time.Minute), func(g *WithT, p *Plan) {
			g.Expect(p.Create).To(Equal(RunName("weekly", sat2)))
			g.Expect(p.Missed.TooLate).To(BeFalse())
		}},
		{"after downtime past startingDeadlineSeconds: nothing starts, all missed", newSchedule(func(s *ntv1.NodeTaskSchedule) {
			s.Spec.StartingDeadlineSeconds = ptr.To[int64](3600)
		}), nil, sat2.Add(2 * time.Hour), func(g *WithT, p *Plan) {
			g.Expect(p.Create).To(BeEmpty())
			g.Expect(p.Missed).To(Equal(&Missed{Count: 1, First: sat1, Latest: sat2, TooLate: true}))
			g.Expect(p.Next).To(Equal(sat3))
		}},
		{"suspended: nothing starts, no next time", newSchedule(func(s *ntv1.NodeTaskSchedule) { s.Spec.Suspend = true }), nil, sat1.Add(time.Minute), func(g *WithT, p *Plan) {
			g.Expect(p.Create).To(BeEmpty())
			g.Expect(p.Next.IsZero()).To(BeTrue())
			g.Expect(p.RequeueAfter).To(BeZero())
		}},
		{"Forbid while the last run is active: the due run waits", newSchedule(func(s *ntv1.NodeTaskSchedule) {
			s.Spec.StartingDeadlineSeconds = ptr.To[int64](7200)
		}), []ntv1.NodeTask{run(sat1, "")}, sat2.Add(time.Minute), func(g *WithT, p *Plan) {
			g.Expect(p.Create).To(BeEmpty())
			g.Expect(p.Due).To(Equal(sat2))
			g.Expect(p.BlockedBy).To(Equal([]string{RunName("weekly", sat1)}))
			g.Expect(p.RequeueAfter).To(Equal(7200*time.Second-time.Minute+time.Second), "a look when the deadline passes")
		}},
		{"Forbid: once the active run finished within the deadline, the waiting run starts", newSchedule(func(s *ntv1.NodeTaskSchedule) {
			s.Spec.StartingDeadlineSeconds = ptr.To[int64](7200)
		}), []ntv1.NodeTask{run(sat1, ntv1.RunSucceeded)}, sat2.Add(time.Hour), func(g *WithT, p *Plan) {
			g.Expect(p.Create).To(Equal(RunName("weekly", sat2)))
		}},
		{"Replace while the last run is active: it is deleted and marked, the new one starts", newSchedule(func(s *ntv1.NodeTaskSchedule) {
			s.Spec.ConcurrencyPolicy = ntv1.ConcurrencyReplace
		}), []ntv1.NodeTask{run(sat1, "")}, sat2.Add(time.Minute), func(g *WithT, p *Plan) {
			g.Expect(p.Replace).To(Equal([]string{RunName("weekly", sat1)}))
			g.Expect(p.Create).To(Equal(RunName("weekly", sat2)))
			g.Expect(names(p.History)).To(Equal([]string{RunName("weekly", sat1) + "=Replaced"}))
		}},
		{"an invalid time zone: a problem, no run", newSchedule(func(s *ntv1.NodeTaskSchedule) { s.Spec.TimeZone = ptr.To("Mars/Olympus") }), nil, sat1.Add(time.Minute), func(g *WithT, p *Plan) {
			g.Expect(p.Problem.Reason).To(Equal(ntv1.ReasonInvalidTimeZone))
			g.Expect(p.Problem.Message).To(ContainSubstring(`spec.timeZone "Mars/Olympus" is not a time zone the manager knows`))
			g.Expect(p.Create).To(BeEmpty())
		}},
		{"an invalid schedule: a problem, no run", newSchedule(func(s *ntv1.NodeTaskSchedule) { s.Spec.Schedule = "0 25 * * *" }), nil, sat1.Add(time.Minute), func(g *WithT, p *Plan) {
			g.Expect(p.Problem.Reason).To(Equal(ntv1.ReasonInvalidSchedule))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(NewWithT(t), ComputePlan(Observed{Schedule: tc.schedule, Runs: tc.runs, Now: tc.now}))
		})
	}
}

// TestSpecChangeDoesNotCatchUp: the controller considers no time before the next time it
// last announced, so that editing a schedule never starts a run for a time the new schedule
// has in the past; a waiting run keeps its time, and a missed time is reported once.
func TestSpecChangeDoesNotCatchUp(t *testing.T) {
	g := NewWithT(t)
	// Tuesday 10:00 UTC, the Saturday run done; the status announced next Saturday.
	tuesday := sat1.Add(3*24*time.Hour + 8*time.Hour)
	s := newSchedule(func(s *ntv1.NodeTaskSchedule) {
		s.Status.LastScheduleTime = &metav1.Time{Time: sat1}
		s.Status.NextScheduleTime = &metav1.Time{Time: sat2}
		s.Spec.Schedule = "0 3 * * *" // now daily at 03:00: Tuesday 03:00 has passed
	})
	p := ComputePlan(Observed{Schedule: s, Runs: []ntv1.NodeTask{run(sat1, ntv1.RunSucceeded)}, Now: tuesday})
	g.Expect(p.Create).To(BeEmpty(), "no run for Tuesday 03:00, a time only the new schedule has")
	g.Expect(p.Missed).To(BeNil())
	g.Expect(p.Next).To(Equal(utc("2026-12-02T02:00:00Z")))

	// Without an announced time (never reconciled, or suspended until now) it catches up, as CronJob.
	s.Status.NextScheduleTime = nil
	p = ComputePlan(Observed{Schedule: s, Runs: []ntv1.NodeTask{run(sat1, ntv1.RunSucceeded)}, Now: tuesday})
	g.Expect(p.Create).To(Equal(RunName("weekly", utc("2026-12-01T02:00:00Z"))))

	// A run waiting for an active one (Forbid) keeps its time as the next.
	s = newSchedule()
	obs := Observed{Schedule: s, Runs: []ntv1.NodeTask{run(sat1, "")}, Now: sat2.Add(time.Minute)}
	p = ComputePlan(obs)
	st := ComputeStatus(obs, p, Applied{})
	g.Expect(st.NextScheduleTime.Time).To(Equal(sat2))
	s.Status = st
	obs = Observed{Schedule: s, Runs: []ntv1.NodeTask{run(sat1, ntv1.RunSucceeded)}, Now: sat2.Add(time.Hour)}
	g.Expect(ComputePlan(obs).Create).To(Equal(RunName("weekly", sat2)), "it starts once the active run ended")

	// A time past its deadline is reported once: the next look starts after it.
	s = newSchedule(func(s *ntv1.NodeTaskSchedule) { s.Spec.StartingDeadlineSeconds = ptr.To[int64](60) })
	obs = Observed{Schedule: s, Now: sat1.Add(time.Hour)}
	p = ComputePlan(obs)
	g.Expect(p.Missed.TooLate).To(BeTrue())
	s.Status = ComputeStatus(obs, p, Applied{})
	g.Expect(s.Status.NextScheduleTime.Time).To(Equal(sat2))
	g.Expect(ComputePlan(Observed{Schedule: s, Now: sat1.Add(2 * time.Hour)}).Missed).To(BeNil())
}

func TestHistoryLimits(t *testing.T) {
	g := NewWithT(t)
	var runs []ntv1.NodeTask
	outcomes := []ntv1.RunOutcome{ntv1.RunSucceeded, ntv1.RunFailed, ntv1.RunSucceeded, ntv1.RunNoTargets, ntv1.RunSucceeded, ntv1.RunSucceeded, ntv1.RunFailed}
	for i, o := range outcomes {
		runs = append(runs, run(sat1.Add(time.Duration(i)*time.Hour), o))
	}
	runs = append(runs, run(sat1.Add(7*time.Hour), "")) // the newest, active
	s := newSchedule(func(s *ntv1.NodeTaskSchedule) { s.Spec.Schedule = "0 * * * *" })
	p := ComputePlan(Observed{Schedule: s, Runs: runs, Now: sat1.Add(7*time.Hour + time.Minute)})
	g.Expect(names(p.History)).To(Equal([]string{
		runs[7].Name + "=Running", runs[6].Name + "=Failed", runs[5].Name + "=Succeeded", runs[4].Name + "=Succeeded", runs[2].Name + "=Succeeded",
	}), "the active run, 3 succeeded, 1 not succeeded, newest first")
	g.Expect(p.Prune).To(ConsistOf(runs[0].Name, runs[1].Name, runs[3].Name))

	s.Spec.SuccessfulRunsHistoryLimit, s.Spec.FailedRunsHistoryLimit = ptr.To[int32](0), ptr.To[int32](0)
	p = ComputePlan(Observed{Schedule: s, Runs: runs, Now: sat1.Add(7*time.Hour + time.Minute)})
	g.Expect(names(p.History)).To(Equal([]string{runs[7].Name + "=Running"}), "limits of 0 keep only the active run")
	g.Expect(p.Prune).To(HaveLen(7))
}

// TestHistoryOutlivesDeletedRuns: an entry stays when someone deletes its NodeTask; an
// active run that disappears is Deleted.
func TestHistoryOutlivesDeletedRuns(t *testing.T) {
	g := NewWithT(t)
	s := newSchedule()
	s.Status.History = []ntv1.ScheduleRun{
		{Name: RunName("weekly", sat2), ScheduledTime: metav1.Time{Time: sat2}, Outcome: ntv1.RunRunning},
		{Name: RunName("weekly", sat1), ScheduledTime: metav1.Time{Time: sat1}, Outcome: ntv1.RunSucceeded, Targets: 4, Succeeded: 4},
	}
	p := ComputePlan(Observed{Schedule: s, Now: sat2.Add(time.Hour)})
	g.Expect(names(p.History)).To(Equal([]string{RunName("weekly", sat2) + "=Deleted", RunName("weekly", sat1) + "=Succeeded"}))
	g.Expect(p.Prune).To(BeEmpty())
	g.Expect(p.Create).To(BeEmpty(), "the deleted run's time is not run again")
}

func TestComputeStatus(t *testing.T) {
	g := NewWithT(t)
	cond := func(st ntv1.NodeTaskScheduleStatus, typ string) *metav1.Condition {
		return meta.FindStatusCondition(st.Conditions, typ)
	}
	status := func(s *ntv1.NodeTaskSchedule, runs []ntv1.NodeTask, now time.Time, a func(p *Plan) Applied) ntv1.NodeTaskScheduleStatus {
		obs := Observed{Schedule: s, Runs: runs, Now: now}
		p := ComputePlan(obs)
		return ComputeStatus(obs, p, a(p))
	}
	started := func(p *Plan) Applied { return Applied{Started: p.Create != "", Created: p.Create != ""} }

	// No run yet: Ready, with the next time.
	st := status(newSchedule(), nil, created.Add(time.Minute), started)
	g.Expect(cond(st, ntv1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))
	g.Expect(cond(st, ntv1.ConditionReady).Message).To(Equal("no run yet; next run at 2026-11-28T02:00:00Z"))
	g.Expect(st.NextScheduleTime.Time).To(Equal(sat1))
	g.Expect(st.ObservedGeneration).To(Equal(int64(1)))

	// The fire: the run is active at once, lastScheduleTime is its time.
	st = status(newSchedule(), nil, sat1.Add(time.Second), started)
	g.Expect(st.Active).To(Equal([]ntv1.ScheduleRunReference{{Name: RunName("weekly", sat1), ScheduledTime: metav1.Time{Time: sat1}}}))
	g.Expect(st.LastScheduleTime.Time).To(Equal(sat1))
	g.Expect(cond(st, ntv1.ConditionReconciling).Status).To(Equal(metav1.ConditionTrue))
	g.Expect(cond(st, ntv1.ConditionReady).Reason).To(Equal(ntv1.ReasonRunActive))

	// It succeeded: Ready, lastSuccessfulTime, LAST RESULT.
	st = status(newSchedule(), []ntv1.NodeTask{run(sat1, ntv1.RunSucceeded)}, sat1.Add(2*time.Hour), started)
	g.Expect(st.Active).To(BeEmpty())
	g.Expect(st.LastSuccessfulTime.Time).To(Equal(sat1.Add(time.Hour)))
	g.Expect(st.LastRunOutcome).To(Equal(ntv1.RunSucceeded))
	g.Expect(cond(st, ntv1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))
	g.Expect(cond(st, ntv1.ConditionReady).Message).To(Equal(
		"the last run weekly-29930520 succeeded (4 of 4 nodes succeeded); next run at 2026-12-05T02:00:00Z"))

	// It failed: Stalled, and the next run is still planned.
	st = status(newSchedule(), []ntv1.NodeTask{run(sat1, ntv1.RunFailed)}, sat1.Add(2*time.Hour), started)
	g.Expect(cond(st, ntv1.ConditionStalled).Status).To(Equal(metav1.ConditionTrue))
	g.Expect(cond(st, ntv1.ConditionStalled).Reason).To(Equal(ntv1.ReasonLastRunFailed))
	g.Expect(cond(st, ntv1.ConditionStalled).Message).To(ContainSubstring("the last run weekly-29930520 failed (FailureBudgetExceeded): 2 of 4 nodes succeeded, 2 failed"))
	g.Expect(st.NextScheduleTime.Time).To(Equal(sat2))
	g.Expect(st.LastRunOutcome).To(Equal(ntv1.RunFailed))

	// No targets: not Ready, not Stalled.
	st = status(newSchedule(), []ntv1.NodeTask{run(sat1, ntv1.RunNoTargets)}, sat1.Add(2*time.Hour), started)
	g.Expect(cond(st, ntv1.ConditionReady).Reason).To(Equal(ntv1.ReasonLastRunNoTargets))
	g.Expect(cond(st, ntv1.ConditionStalled).Status).To(Equal(metav1.ConditionFalse))

	// Suspended.
	st = status(newSchedule(func(s *ntv1.NodeTaskSchedule) { s.Spec.Suspend = true }), nil, sat1.Add(time.Hour), started)
	g.Expect(cond(st, ntv1.ConditionReady).Reason).To(Equal(ntv1.ReasonSuspended))
	g.Expect(st.NextScheduleTime).To(BeNil())

	// Invalid time zone: Stalled with the parser's message.
	st = status(newSchedule(func(s *ntv1.NodeTaskSchedule) { s.Spec.TimeZone = ptr.To("Europe/Berln") }), nil, sat1, started)
	g.Expect(cond(st, ntv1.ConditionStalled).Status).To(Equal(metav1.ConditionTrue))
	g.Expect(cond(st, ntv1.ConditionReady).Message).To(ContainSubstring("use an IANA name such as Europe/Berlin"))

	// The API server refused the run: Stalled, and lastScheduleTime unchanged (it is tried again).
	st = status(newSchedule(), nil, sat1.Add(time.Second), func(p *Plan) Applied {
		return Applied{Problem: &Problem{Reason: ntv1.ReasonRunRefused, Message: "refused"}}
	})
	g.Expect(cond(st, ntv1.ConditionStalled).Reason).To(Equal(ntv1.ReasonRunRefused))
	g.Expect(st.LastScheduleTime).To(BeNil())
}

// TestTemplateChangeAppliesToNextRun: a run copies the template when it is created; the
// schedule's later changes leave it alone.
func TestTemplateChangeAppliesToNextRun(t *testing.T) {
	g := NewWithT(t)
	s := newSchedule(func(s *ntv1.NodeTaskSchedule) {
		s.Spec.Template.Metadata.Labels = map[string]string{"team": "ops"}
		s.Spec.Template.Spec.NodeNames = []string{"win-1"}
	})
	r := NewRun(s, RunName(s.Name, sat1), sat1)
	s.Spec.Template.Spec.Script.Inline = ptr.To("Write-Output changed")
	s.Spec.Template.Spec.NodeNames[0] = "win-2"
	s.Spec.Template.Metadata.Labels["team"] = "other"
	g.Expect(*r.Spec.Script.Inline).To(Equal("Write-Output hi"))
	g.Expect(r.Spec.NodeNames).To(Equal([]string{"win-1"}))
	g.Expect(r.Labels).To(Equal(map[string]string{"team": "ops", ntv1.LabelSchedule: "weekly"}))
	g.Expect(r.Annotations).To(HaveKeyWithValue(ntv1.AnnotationScheduledTime, "2026-11-28T02:00:00Z"))
	g.Expect(r.Namespace).To(Equal("ops"))
}
