package schedule

import (
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// manualRun is a run of the schedule started by hand at t, finished with outcome ("" = running).
func manualRun(at time.Time, outcome ntv1.RunOutcome) ntv1.NodeTask {
	r := run(at, outcome)
	r.Name = ManualRunName("weekly", at)
	return r
}

func TestManualRunName(t *testing.T) {
	g := NewWithT(t)
	at := utc("2026-11-28T12:34:56Z")
	g.Expect(ManualRunName("weekly", at)).To(Equal("weekly-manual-1795869296"))
	long := strings.Repeat("a", ntv1.MaxScheduleNameLength-2) + "-b"
	name := ManualRunName(long, at)
	g.Expect(len(name)).To(BeNumerically("<=", 63))
	g.Expect(validation.IsValidLabelValue(name)).To(BeEmpty(), "the run's name is its pods' label value")
	g.Expect(validation.IsDNS1123Subdomain(name)).To(BeEmpty())
	g.Expect(name).To(HavePrefix(long[:40]))
	g.Expect(IsScheduled(long, ntv1.ScheduleRun{Name: name, ScheduledTime: metav1.Time{Time: at.Truncate(time.Minute)}})).To(BeFalse())
	// A scheduled run of another schedule named like a manual prefix cannot take the name:
	// its suffix after the schedule's name is digits only, and minutes have fewer digits.
	g.Expect(RunName("weekly-manual", at)).NotTo(Equal(ManualRunName("weekly", at)))
}

func TestManualRuns(t *testing.T) {
	for _, tc := range []struct {
		name     string
		schedule *ntv1.NodeTaskSchedule
		runs     []ntv1.NodeTask
		now      time.Time
		check    func(g *WithT, p *Plan, st ntv1.NodeTaskScheduleStatus)
	}{
		{"a manual run started just after a fire time, before the controller saw it, does not eat that time's run",
			newSchedule(), []ntv1.NodeTask{manualRun(sat1.Add(time.Second), ntv1.RunSucceeded)}, sat1.Add(2 * time.Second),
			func(g *WithT, p *Plan, st ntv1.NodeTaskScheduleStatus) {
				g.Expect(p.Create).To(Equal(RunName("weekly", sat1)))
				g.Expect(st.LastScheduleTime.Time).To(Equal(sat1))
			}},
		{"a finished manual run: the next scheduled run starts at its time, and lastScheduleTime stays the last scheduled time",
			newSchedule(func(s *ntv1.NodeTaskSchedule) { s.Status.LastScheduleTime = &metav1.Time{Time: sat1} }),
			[]ntv1.NodeTask{run(sat1, ntv1.RunSucceeded), manualRun(sat1.Add(48*time.Hour), ntv1.RunSucceeded)}, sat2.Add(time.Second),
			func(g *WithT, p *Plan, st ntv1.NodeTaskScheduleStatus) {
				g.Expect(p.Create).To(Equal(RunName("weekly", sat2)))
				g.Expect(p.Missed).To(BeNil())
				g.Expect(names(st.History)).To(Equal([]string{
					RunName("weekly", sat2) + "=Running", ManualRunName("weekly", sat1.Add(48*time.Hour)) + "=Succeeded", RunName("weekly", sat1) + "=Succeeded"}))
				g.Expect(st.LastScheduleTime.Time).To(Equal(sat2))
			}},
		{"an active manual run blocks the due run under Forbid, as any active run does",
			newSchedule(), []ntv1.NodeTask{manualRun(sat1.Add(-time.Minute), "")}, sat1.Add(time.Second),
			func(g *WithT, p *Plan, st ntv1.NodeTaskScheduleStatus) {
				g.Expect(p.Create).To(BeEmpty())
				g.Expect(p.BlockedBy).To(Equal([]string{ManualRunName("weekly", sat1.Add(-time.Minute))}))
				g.Expect(st.Active).To(HaveLen(1))
				g.Expect(st.LastScheduleTime).To(BeNil(), "no scheduled run started yet")
				g.Expect(st.NextScheduleTime.Time).To(Equal(sat1), "the due run waits")
			}},
		{"under Replace, the due run replaces an active manual run",
			newSchedule(func(s *ntv1.NodeTaskSchedule) { s.Spec.ConcurrencyPolicy = ntv1.ConcurrencyReplace }),
			[]ntv1.NodeTask{manualRun(sat1.Add(-time.Minute), "")}, sat1.Add(time.Second),
			func(g *WithT, p *Plan, st ntv1.NodeTaskScheduleStatus) {
				g.Expect(p.Create).To(Equal(RunName("weekly", sat1)))
				g.Expect(p.Replace).To(Equal([]string{ManualRunName("weekly", sat1.Add(-time.Minute))}))
			}},
		{"manual runs count against the history limits like scheduled ones",
			newSchedule(func(s *ntv1.NodeTaskSchedule) {
				s.Spec.SuccessfulRunsHistoryLimit = new(int32)
				*s.Spec.SuccessfulRunsHistoryLimit = 1
			}),
			[]ntv1.NodeTask{run(sat1, ntv1.RunSucceeded), manualRun(sat1.Add(time.Hour*48), ntv1.RunSucceeded)}, sat1.Add(72 * time.Hour),
			func(g *WithT, p *Plan, st ntv1.NodeTaskScheduleStatus) {
				g.Expect(p.Prune).To(Equal([]string{RunName("weekly", sat1)}))
				g.Expect(names(st.History)).To(Equal([]string{ManualRunName("weekly", sat1.Add(48*time.Hour)) + "=Succeeded"}))
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			obs := Observed{Schedule: tc.schedule, Runs: tc.runs, Now: tc.now}
			p := ComputePlan(obs)
			tc.check(g, p, ComputeStatus(obs, p, Applied{Started: p.Create != "", Created: p.Create != ""}))
		})
	}
}
