package rollout

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

func TestWindowState(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	nightly := &ntv1.MaintenanceWindow{Start: "22:00", End: "04:00"}
	weekend := &ntv1.MaintenanceWindow{Days: []ntv1.Weekday{"Sat", "Sun"}, Start: "02:00", End: "05:00", TimeZone: "Europe/Berlin"}
	friday := &ntv1.MaintenanceWindow{Days: []ntv1.Weekday{"Fri"}, Start: "22:00", End: "02:00"}
	cases := []struct {
		name     string
		window   *ntv1.MaintenanceWindow
		now      string
		open     bool
		next     string
		errorSay string
	}{
		{"inside a window that crosses midnight, before midnight", nightly, "2026-11-25T23:00:00Z", true, "", ""},
		{"inside it after midnight: yesterday's window", nightly, "2026-11-26T03:59:00Z", true, "", ""},
		{"at its end it is closed", nightly, "2026-11-26T04:00:00Z", false, "2026-11-26T22:00:00Z", ""},
		{"at its start it is open", nightly, "2026-11-26T22:00:00Z", true, "", ""},
		{"on a Wednesday, the weekend window opens on Saturday in Berlin time", weekend, "2026-11-25T10:00:00Z", false, "2026-11-28T01:00:00Z", ""},
		{"inside the weekend window", weekend, "2026-11-29T02:30:00Z", true, "", ""},
		{"a Friday window is still open early on Saturday", friday, "2026-11-28T01:00:00Z", true, "", ""},
		{"but not a Saturday window", friday, "2026-11-28T03:00:00Z", false, "2026-12-04T22:00:00Z", ""},
		{"the clock change: Berlin's window follows summer time", &ntv1.MaintenanceWindow{Start: "03:00", End: "04:00", TimeZone: "Europe/Berlin"},
			"2026-03-29T00:30:00Z", false, "2026-03-29T01:00:00Z", ""},
		{"an unknown time zone", &ntv1.MaintenanceWindow{Start: "01:00", End: "02:00", TimeZone: "Mars/Olympus_Mons"}, "2026-11-25T10:00:00Z", false, "", "not an IANA time zone"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			open, next, err := windowState(tc.window, at(tc.now))
			if tc.errorSay != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tc.errorSay)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(open).To(Equal(tc.open))
			if !tc.open {
				g.Expect(next.UTC()).To(Equal(at(tc.next)))
			}
		})
	}
}

func TestPlanMaintenanceWindow(t *testing.T) {
	g := NewWithT(t)
	task := newTask(func(t *ntv1.NodeTask) {
		t.Spec.Window = &ntv1.MaintenanceWindow{Start: "22:00", End: "04:00", TimeZone: "Europe/Berlin"}
	})
	// t0 is 12:00 UTC, 13:00 in Berlin: closed until 22:00 Berlin, 21:00 UTC.
	running := taskPod(task, "win-a", 1, 1)
	obs := observe(task, nodes("win-a", "win-b", "win-c"), running)
	p := settle(obs)
	g.Expect(p.Create).To(BeEmpty(), "no node starts outside the window")
	g.Expect(p.InFlight).To(Equal(1), "a node already running goes on")
	obs = observe(obs.Task, nodes("win-a", "win-b", "win-c"), taskPod(task, "win-a", 1, 1, exited(0, "", t0)))
	p = settle(obs)
	g.Expect(p.RequeueAfter).To(Equal(9*time.Hour), "woken at the opening")
	c := findCondition(&obs.Task.Status, ntv1.ConditionReconciling)
	g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
	g.Expect(c.Reason).To(Equal(ntv1.ReasonOutsideMaintenanceWindow))
	g.Expect(c.Message).To(ContainSubstring("opens next at 2026-11-26T22:00:00+01:00"))

	obs.Now = t0.Add(9 * time.Hour)
	g.Expect(requestNodes(ComputePlan(obs).Create)).To(Equal([]string{"win-b#1", "win-c#1"}))

	obs.Task.Spec.Window.TimeZone = "Nowhere/Special"
	p = settle(obs)
	g.Expect(p.Problem).NotTo(BeNil())
	g.Expect(p.Problem.Reason).To(Equal(ntv1.ReasonInvalidSpec))
}

func TestPlanRebootExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		codes      []int32
		wantPhase  ntv1.NodePhase
		wantReason string
	}{
		{"3010 is a success that needs a reboot", []int32{3010, 1641}, ntv1.NodeSucceeded, ntv1.NodeReasonRebootRequired},
		{"without reboot exit codes it is a failure", nil, ntv1.NodeFailed, ntv1.NodeReasonError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			task := newTask(func(t *ntv1.NodeTask) { t.Spec.RebootExitCodes = tc.codes })
			obs := observe(task, []*corev1.Node{winNode("win-a"), winNode("win-b")},
				taskPod(task, "win-a", 1, 1, exited(3010, "Restart required to finish installing KB5034439", t0)),
				taskPod(task, "win-b", 1, 1, exited(0, "", t0)))
			settle(obs)
			e := entry(&obs.Task.Status, "win-a")
			g.Expect(e.Phase).To(Equal(tc.wantPhase))
			g.Expect(e.Reason).To(Equal(tc.wantReason))
			g.Expect(e.ExitCode).To(Equal(ptr.To[int32](3010)), "the exit code says which")
			g.Expect(e.Output).To(Equal("Restart required to finish installing KB5034439"))
			if tc.wantPhase == ntv1.NodeSucceeded {
				ready := findCondition(&obs.Task.Status, ntv1.ConditionReady)
				g.Expect(ready.Status).To(Equal(metav1.ConditionTrue))
				g.Expect(ready.Message).To(Equal("succeeded on all 2 nodes; 1 must restart to finish (win-a)"))
			}
		})
	}
}
