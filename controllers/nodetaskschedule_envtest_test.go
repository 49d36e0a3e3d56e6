package controllers

import (
	"context"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/schedule"
)

// The schedule controller against a real API server, driven by a fake clock. Its reconciles
// are called directly, one at a time, so that each step is one decision; the suite's
// manager (the NodeTask controller) is stopped meanwhile, so that the tests alone write the
// runs' status, as the NodeTask controller would at a run's end.

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

const scheduleNS = "schedules"

var _ = Describe("The NodeTaskSchedule controller", Ordered, func() {
	var (
		clock    *fakeClock
		recorder *events.FakeRecorder
	)

	newReconciler := func() *NodeTaskScheduleReconciler {
		return &NodeTaskScheduleReconciler{Client: k8sClient, APIReader: k8sClient, Recorder: recorder, Now: clock.Now}
	}

	BeforeAll(func() {
		stopManager()
		DeferCleanup(func() {
			// The runs left here must not reach the NodeTask controller of the other specs.
			Expect(k8sClient.DeleteAllOf(suiteCtx, &ntv1.NodeTask{}, client.InNamespace(scheduleNS))).To(Succeed())
			stopManager = startManager()
		})
		Expect(k8sClient.Create(suiteCtx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scheduleNS}})).To(Succeed())
	})

	BeforeEach(func() {
		clock = &fakeClock{}
		recorder = events.NewFakeRecorder(100)
	})

	// newSchedule creates a schedule firing every 10 minutes (UTC) and returns it with the
	// first time it fires after its creation.
	newSchedule := func(name string, mutate func(*ntv1.NodeTaskSchedule)) (*ntv1.NodeTaskSchedule, time.Time) {
		s := &ntv1.NodeTaskSchedule{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: scheduleNS},
			Spec: ntv1.NodeTaskScheduleSpec{
				Schedule: "*/10 * * * *",
				Template: ntv1.NodeTaskTemplate{
					Metadata: ntv1.NodeTaskTemplateMetadata{Labels: map[string]string{"team": "ops"}},
					Spec: ntv1.NodeTaskSpec{
						Script: &ntv1.ScriptSpec{Inline: ptr.To("Write-Output patch")},
						// No node of the other specs: these runs are never run, only looked at.
						NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"test-group": "none"}},
					},
				},
			},
		}
		if mutate != nil {
			mutate(s)
		}
		Expect(k8sClient.Create(suiteCtx, s)).To(Succeed())
		c, err := schedule.Parse(s.Spec.Schedule, "")
		Expect(err).NotTo(HaveOccurred())
		return s, c.Next(s.CreationTimestamp.Time)
	}

	reconcile := func(r *NodeTaskScheduleReconciler, s *ntv1.NodeTaskSchedule) ctrl.Result {
		res, err := r.Reconcile(suiteCtx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(s)})
		Expect(err).NotTo(HaveOccurred())
		return res
	}

	runs := func(s *ntv1.NodeTaskSchedule) []string {
		var list ntv1.NodeTaskList
		Expect(k8sClient.List(suiteCtx, &list, client.InNamespace(scheduleNS), client.MatchingLabels{ntv1.LabelSchedule: s.Name})).To(Succeed())
		var names []string
		for _, t := range list.Items {
			if t.DeletionTimestamp.IsZero() {
				names = append(names, t.Name)
			}
		}
		return names
	}

	getSchedule := func(s *ntv1.NodeTaskSchedule) *ntv1.NodeTaskSchedule {
		out := &ntv1.NodeTaskSchedule{}
		Expect(k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(s), out)).To(Succeed())
		return out
	}

	// finishRun writes the status the NodeTask controller writes at a run's end.
	finishRun := func(name string, outcome ntv1.RunOutcome) {
		t := &ntv1.NodeTask{}
		Expect(k8sClient.Get(suiteCtx, client.ObjectKey{Namespace: scheduleNS, Name: name}, t)).To(Succeed())
		now := metav1.Time{Time: clock.Now()}
		t.Status.ObservedGeneration = t.Generation
		t.Status.StartTime, t.Status.Targets = &now, 3
		set := func(typ string, st metav1.ConditionStatus, reason string) {
			meta.SetStatusCondition(&t.Status.Conditions, metav1.Condition{Type: typ, Status: st, Reason: reason, ObservedGeneration: t.Generation})
		}
		if outcome == ntv1.RunSucceeded {
			t.Status.Succeeded, t.Status.CompletionTime = 3, &now
			set(ntv1.ConditionReady, metav1.ConditionTrue, ntv1.ReasonSucceeded)
			set(ntv1.ConditionStalled, metav1.ConditionFalse, ntv1.ReasonProgressing)
		} else {
			t.Status.Succeeded, t.Status.Failed = 1, 2
			set(ntv1.ConditionReady, metav1.ConditionFalse, ntv1.ReasonFailureBudgetExceeded)
			set(ntv1.ConditionStalled, metav1.ConditionTrue, ntv1.ReasonFailureBudgetExceeded)
		}
		set(ntv1.ConditionReconciling, metav1.ConditionFalse, ntv1.ReasonSucceeded)
		Expect(k8sClient.Status().Update(suiteCtx, t)).To(Succeed())
	}

	drain := func() []string {
		var out []string
		for {
			select {
			case e := <-recorder.Events:
				out = append(out, e)
			default:
				return out
			}
		}
	}

	It("creates exactly one run at a fire, owned and labelled, and no second after a reconcile or a restart", func() {
		s, fire := newSchedule("once", nil)
		clock.Set(fire.Add(-time.Minute))
		res := reconcile(newReconciler(), s)
		Expect(runs(s)).To(BeEmpty())
		Expect(res.RequeueAfter).To(Equal(time.Minute), "it looks again at the fire time")
		Expect(getSchedule(s).Status.NextScheduleTime.Time).To(BeTemporally("==", fire))

		clock.Set(fire.Add(3 * time.Second))
		r := newReconciler()
		reconcile(r, s)
		name := schedule.RunName("once", fire)
		Expect(runs(s)).To(ConsistOf(name))
		run := &ntv1.NodeTask{}
		Expect(k8sClient.Get(suiteCtx, client.ObjectKey{Namespace: scheduleNS, Name: name}, run)).To(Succeed())
		Expect(metav1.GetControllerOf(run).UID).To(Equal(s.UID))
		Expect(run.Labels).To(Equal(map[string]string{"team": "ops", ntv1.LabelSchedule: "once"}))
		Expect(*run.Spec.Script.Inline).To(Equal("Write-Output patch"))
		st := getSchedule(s).Status
		Expect(st.LastScheduleTime.Time).To(BeTemporally("==", fire))
		Expect(st.Active).To(HaveLen(1))
		Expect(meta.IsStatusConditionTrue(st.Conditions, ntv1.ConditionReconciling)).To(BeTrue())
		Expect(drain()).To(ConsistOf(ContainSubstring("RunStarted created NodeTask " + name)))

		reconcile(r, s)
		Expect(runs(s)).To(ConsistOf(name), "a second reconcile")

		// A restart that lost the status write: a new reconciler, and a schedule that does not
		// remember the run. The name is taken by its own run: nothing new.
		lost := getSchedule(s)
		lost.Status = ntv1.NodeTaskScheduleStatus{}
		Expect(k8sClient.Status().Update(suiteCtx, lost)).To(Succeed())
		reconcile(newReconciler(), s)
		Expect(runs(s)).To(ConsistOf(name), "a restart")
		Expect(getSchedule(s).Status.Active).To(HaveLen(1), "the status finds its run again")
		Expect(drain()).NotTo(ContainElement(ContainSubstring("RunStarted")), "found, not started again")
		Expect(testutil.ToFloat64(scheduleRuns.WithLabelValues(scheduleNS, "once", scheduleRunStarted))).To(Equal(1.0),
			"nodetask_schedule_runs_total counts the run once")
		Expect(testutil.ToFloat64(scheduleNextRun.WithLabelValues(scheduleNS, "once"))).To(BeNumerically("==", fire.Add(10*time.Minute).Unix()))
	})

	It("Forbid: the next time waits while the run is active, and starts when it ends within the deadline", func() {
		s, fire := newSchedule("forbid", func(s *ntv1.NodeTaskSchedule) { s.Spec.StartingDeadlineSeconds = ptr.To[int64](300) })
		r := newReconciler()
		clock.Set(fire.Add(time.Second))
		reconcile(r, s)
		first := schedule.RunName("forbid", fire)

		next := fire.Add(10 * time.Minute)
		clock.Set(next.Add(time.Minute))
		res := reconcile(r, s)
		Expect(runs(s)).To(ConsistOf(first))
		Expect(res.RequeueAfter).To(Equal(4*time.Minute+time.Second), "it looks again when the deadline passes")
		ready := meta.FindStatusCondition(getSchedule(s).Status.Conditions, ntv1.ConditionReady)
		Expect(ready.Message).To(ContainSubstring("waits for it (concurrencyPolicy Forbid)"))
		Expect(drain()).To(ContainElement(ContainSubstring("RunSkipped the run due at " + next.UTC().Format(time.RFC3339) + " waits: " + first)))

		finishRun(first, ntv1.RunSucceeded)
		clock.Set(next.Add(2 * time.Minute))
		reconcile(r, s)
		Expect(runs(s)).To(ConsistOf(first, schedule.RunName("forbid", next)))
		st := getSchedule(s).Status
		Expect(st.LastRunOutcome).To(Equal(ntv1.RunSucceeded))
		Expect(st.LastSuccessfulTime).NotTo(BeNil())
	})

	It("Forbid: a time whose deadline passed while the run was active is skipped and said", func() {
		s, fire := newSchedule("late", func(s *ntv1.NodeTaskSchedule) { s.Spec.StartingDeadlineSeconds = ptr.To[int64](60) })
		r := newReconciler()
		clock.Set(fire.Add(time.Second))
		reconcile(r, s)
		finishRun(schedule.RunName("late", fire), ntv1.RunSucceeded)
		clock.Set(fire.Add(15 * time.Minute))
		reconcile(r, s)
		Expect(runs(s)).To(ConsistOf(schedule.RunName("late", fire)))
		Expect(drain()).To(ContainElement(ContainSubstring("MissedSchedule the run due at")))
		given := func(result string) float64 {
			return testutil.ToFloat64(scheduleRuns.WithLabelValues(scheduleNS, "late", result))
		}
		Expect(given(scheduleRunSkipped)+given(scheduleRunMissed)).To(Equal(1.0), "the time given up is counted once")
		Expect(given(scheduleRunStarted)).To(Equal(1.0))
	})

	It("Replace: the active run is deleted and the new one starts", func() {
		s, fire := newSchedule("replace", func(s *ntv1.NodeTaskSchedule) { s.Spec.ConcurrencyPolicy = ntv1.ConcurrencyReplace })
		r := newReconciler()
		clock.Set(fire.Add(time.Second))
		reconcile(r, s)
		next := fire.Add(10 * time.Minute)
		clock.Set(next.Add(time.Second))
		reconcile(r, s)
		Expect(runs(s)).To(ConsistOf(schedule.RunName("replace", next)))
		st := getSchedule(s).Status
		Expect(st.History).To(HaveLen(2))
		Expect(st.History[1].Name).To(Equal(schedule.RunName("replace", fire)))
		Expect(st.History[1].Outcome).To(Equal(ntv1.RunReplaced))
		Expect(drain()).To(ContainElement(ContainSubstring("RunReplaced deleted the active run " + schedule.RunName("replace", fire))))
	})

	It("keeps the runs the history limits allow and deletes the older ones", func() {
		s, fire := newSchedule("limits", func(s *ntv1.NodeTaskSchedule) {
			s.Spec.SuccessfulRunsHistoryLimit, s.Spec.FailedRunsHistoryLimit = ptr.To[int32](2), ptr.To[int32](1)
		})
		r := newReconciler()
		outcomes := []ntv1.RunOutcome{ntv1.RunSucceeded, ntv1.RunFailed, ntv1.RunSucceeded, ntv1.RunFailed, ntv1.RunSucceeded}
		var names []string
		for i, o := range outcomes {
			at := fire.Add(time.Duration(i) * 10 * time.Minute)
			clock.Set(at.Add(time.Second))
			reconcile(r, s)
			names = append(names, schedule.RunName("limits", at))
			finishRun(names[i], o)
		}
		clock.Set(fire.Add(45 * time.Minute))
		reconcile(r, s)
		Expect(runs(s)).To(ConsistOf(names[4], names[2], names[3]), "2 succeeded and 1 failed, the newest")
		st := getSchedule(s).Status
		Expect(st.History).To(HaveLen(3))
		Expect(st.History[0].Name).To(Equal(names[4]))
		Expect(meta.IsStatusConditionTrue(st.Conditions, ntv1.ConditionReady)).To(BeTrue())
	})

	It("starts nothing while suspended", func() {
		s, fire := newSchedule("suspended", func(s *ntv1.NodeTaskSchedule) { s.Spec.Suspend = true })
		clock.Set(fire.Add(time.Second))
		res := reconcile(newReconciler(), s)
		Expect(runs(s)).To(BeEmpty())
		Expect(res.RequeueAfter).To(BeZero())
		st := getSchedule(s).Status
		Expect(st.NextScheduleTime).To(BeNil())
		Expect(meta.FindStatusCondition(st.Conditions, ntv1.ConditionReady).Reason).To(Equal(ntv1.ReasonSuspended))
	})

	It("is Stalled with a helpful message for a time zone the manager does not know", func() {
		s, fire := newSchedule("bad-zone", func(s *ntv1.NodeTaskSchedule) { s.Spec.TimeZone = ptr.To("Europe/Berln") })
		clock.Set(fire.Add(time.Second))
		reconcile(newReconciler(), s)
		Expect(runs(s)).To(BeEmpty())
		stalled := meta.FindStatusCondition(getSchedule(s).Status.Conditions, ntv1.ConditionStalled)
		Expect(stalled.Status).To(Equal(metav1.ConditionTrue))
		Expect(stalled.Reason).To(Equal(ntv1.ReasonInvalidTimeZone))
		Expect(stalled.Message).To(ContainSubstring(`spec.timeZone "Europe/Berln" is not a time zone the manager knows`))
	})

	It("is Stalled when a NodeTask it does not own holds a run's name", func() {
		s, fire := newSchedule("squatted", nil)
		squatter := &ntv1.NodeTask{
			ObjectMeta: metav1.ObjectMeta{Name: schedule.RunName("squatted", fire), Namespace: scheduleNS},
			Spec:       ntv1.NodeTaskSpec{Script: &ntv1.ScriptSpec{Inline: ptr.To("Write-Output mine")}},
		}
		Expect(k8sClient.Create(suiteCtx, squatter)).To(Succeed())
		clock.Set(fire.Add(time.Second))
		res := reconcile(newReconciler(), s)
		stalled := meta.FindStatusCondition(getSchedule(s).Status.Conditions, ntv1.ConditionStalled)
		Expect(stalled.Reason).To(Equal(ntv1.ReasonRunNameTaken))
		Expect(res.RequeueAfter).To(BeNumerically("<=", time.Minute))
	})

	It("runs in a manager: watches its runs and creates the due one", func() {
		mgr, err := ctrl.NewManager(cfg, ctrl.Options{
			Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"},
			Cache: CacheOptions(), Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		})
		Expect(err).NotTo(HaveOccurred())
		clock.Set(time.Now())
		Expect((&NodeTaskScheduleReconciler{
			Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: recorder, Now: clock.Now,
		}).SetupWithManager(mgr)).To(Succeed())
		ctx, cancel := context.WithCancel(suiteCtx)
		done := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(done)
			Expect(mgr.Start(ctx)).To(Succeed())
		}()
		DeferCleanup(func() { cancel(); <-done })

		s, fire := newSchedule("managed", nil)
		Eventually(func() *metav1.Time { return getSchedule(s).Status.NextScheduleTime }).ShouldNot(BeNil())
		Expect(runs(s)).To(BeEmpty())
		clock.Set(fire.Add(time.Second))
		// A change of the schedule wakes the controller (the fake clock does not).
		s = getSchedule(s)
		s.Spec.Template.Metadata.Annotations = map[string]string{"note": "v2"}
		Expect(k8sClient.Update(suiteCtx, s)).To(Succeed())
		Eventually(func() []string { return runs(s) }).Should(ConsistOf(schedule.RunName("managed", fire)))
		// The run's end, seen through the watch on owned NodeTasks, reaches the status.
		finishRun(schedule.RunName("managed", fire), ntv1.RunSucceeded)
		Eventually(func() ntv1.RunOutcome { return getSchedule(s).Status.LastRunOutcome }).Should(Equal(ntv1.RunSucceeded))
		run := &ntv1.NodeTask{}
		Expect(k8sClient.Get(suiteCtx, client.ObjectKey{Namespace: scheduleNS, Name: schedule.RunName("managed", fire)}, run)).To(Succeed())
		Expect(run.Annotations).To(HaveKeyWithValue("note", "v2"), "the run copies the template as it was at its creation")
		Expect(strings.HasPrefix(run.Name, "managed-")).To(BeTrue())
	})
})

// With the real NodeTask controller (the suite's manager) running the runs on the fixture's
// simulated Windows nodes; the schedule's reconciles are still called directly, with a fake
// clock.
var _ = Describe("A NodeTaskSchedule's runs", func() {
	var (
		f     *fixture
		clock *fakeClock
		r     *NodeTaskScheduleReconciler
	)
	BeforeEach(func() {
		f = newFixture()
		clock = &fakeClock{}
		r = &NodeTaskScheduleReconciler{Client: k8sClient, APIReader: k8sClient, Recorder: events.NewFakeRecorder(100), Now: clock.Now}
	})

	newSchedule := func(name string, mutate ...func(*ntv1.NodeTask)) (*ntv1.NodeTaskSchedule, time.Time) {
		s := &ntv1.NodeTaskSchedule{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns},
			Spec: ntv1.NodeTaskScheduleSpec{
				Schedule: "*/10 * * * *",
				Template: ntv1.NodeTaskTemplate{Spec: f.task("template", mutate...).Spec},
			},
		}
		Expect(k8sClient.Create(suiteCtx, s)).To(Succeed())
		c, err := schedule.Parse(s.Spec.Schedule, "")
		Expect(err).NotTo(HaveOccurred())
		return s, c.Next(s.CreationTimestamp.Time)
	}
	reconcileAt := func(s *ntv1.NodeTaskSchedule, at time.Time) *ntv1.NodeTaskSchedule {
		clock.Set(at)
		_, err := r.Reconcile(suiteCtx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(s)})
		Expect(err).NotTo(HaveOccurred())
		out := &ntv1.NodeTaskSchedule{}
		Expect(k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(s), out)).To(Succeed())
		return out
	}
	run := func(name string) *ntv1.NodeTask {
		return &ntv1.NodeTask{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns}}
	}

	It("run on every node once per run, and their results reach the schedule's history", func() {
		f.addWindowsNodes(3)
		s, fire := newSchedule("fleet")
		reconcileAt(s, fire.Add(time.Second))
		first := run(schedule.RunName("fleet", fire))
		f.finishUntil(first, 3, nil)
		Eventually(func() bool { return meta.IsStatusConditionTrue(get(first).Status.Conditions, ntv1.ConditionReady) }).Should(BeTrue())

		next := fire.Add(10 * time.Minute)
		st := reconcileAt(s, next.Add(time.Second)).Status
		Expect(st.History).To(HaveLen(2))
		Expect(st.History[1]).To(succeededRun(first.Name, 3))
		second := run(schedule.RunName("fleet", next))
		f.finishUntil(second, 3, nil)
		Expect(f.pods(first)).To(HaveLen(3), "one pod per node in the first run")
		Expect(f.pods(second)).To(HaveLen(3), "and one per node in the second")
		Eventually(func() ntv1.RunOutcome {
			return reconcileAt(s, next.Add(time.Minute)).Status.LastRunOutcome
		}).Should(Equal(ntv1.RunSucceeded))
	})

	It("a run created outside its template's window waits for it, and Forbid makes the next time wait too", func() {
		f.addWindowsNodes(2)
		// A window on a day that is neither today nor tomorrow (UTC), wherever the test runs.
		closed := []ntv1.Weekday{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}[(int(time.Now().UTC().Weekday())+3)%7]
		s, fire := newSchedule("windowed", func(t *ntv1.NodeTask) {
			t.Spec.Window = &ntv1.MaintenanceWindow{Days: []ntv1.Weekday{closed}, Start: "01:00", End: "02:00"}
		})
		reconcileAt(s, fire.Add(time.Second))
		first := run(schedule.RunName("windowed", fire))
		Eventually(func() string {
			c := meta.FindStatusCondition(get(first).Status.Conditions, ntv1.ConditionReconciling)
			if c == nil {
				return ""
			}
			return c.Reason
		}).Should(Equal(ntv1.ReasonOutsideMaintenanceWindow))
		Consistently(func() []corev1.Pod { return f.pods(first) }, "1s").Should(BeEmpty(), "no node starts outside the window")

		st := reconcileAt(s, fire.Add(10*time.Minute+time.Second)).Status
		Expect(st.Active).To(ConsistOf(HaveField("Name", first.Name)), "the waiting run is active")
		Expect(meta.FindStatusCondition(st.Conditions, ntv1.ConditionReady).Message).To(ContainSubstring("waits for it (concurrencyPolicy Forbid)"))
		var list ntv1.NodeTaskList
		Expect(k8sClient.List(suiteCtx, &list, client.InNamespace(f.ns))).To(Succeed())
		Expect(list.Items).To(HaveLen(1))
	})
})

// succeededRun matches a history entry's name, and that all its targets succeeded.
func succeededRun(name string, targets int32) OmegaMatcher {
	return And(HaveField("Name", name), HaveField("Outcome", ntv1.RunSucceeded), HaveField("Targets", targets), HaveField("Succeeded", targets))
}
