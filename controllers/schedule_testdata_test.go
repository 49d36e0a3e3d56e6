package controllers

import (
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/schedule"
)

// The testdata of the NodeTaskSchedule Argo CD health check
// (integrations/argocd/resource_customizations/nodetask.io/NodeTaskSchedule/testdata) are
// schedules this spec drives into each state with the real controller, a fake clock and a
// real API server, and writes as the API server returns them, managedFields left out.
// It runs only when SCHEDULE_TESTDATA names the folder to write:
//
//	SCHEDULE_TESTDATA=$PWD/integrations/argocd/resource_customizations/nodetask.io/NodeTaskSchedule/testdata \
//	  KUBEBUILDER_ASSETS=... go test ./controllers/ -run TestControllers -ginkgo.focus "schedule testdata"
//
// then PRINT_HEALTH=1 go test ./integrations/argocd/ -run TestPrintScheduleHealth -v prints
// the health_test.yaml they give, to review and commit.
var _ = Describe("The NodeTaskSchedule Argo CD testdata", Ordered, func() {
	It("are written from the schedule testdata states", func() {
		out := os.Getenv("SCHEDULE_TESTDATA")
		if out == "" {
			Skip("SCHEDULE_TESTDATA is unset")
		}
		stopManager()
		const ns = "windows-ops"
		DeferCleanup(func() {
			Expect(k8sClient.DeleteAllOf(suiteCtx, &ntv1.NodeTask{}, client.InNamespace(ns))).To(Succeed())
			stopManager = startManager()
		})
		Expect(client.IgnoreAlreadyExists(k8sClient.Create(suiteCtx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))).To(Succeed())
		Expect(os.MkdirAll(out, 0o755)).To(Succeed())
		clock := &fakeClock{}
		r := &NodeTaskScheduleReconciler{Client: k8sClient, APIReader: k8sClient, Recorder: events.NewFakeRecorder(1000), Now: clock.Now}

		create := func(name string, mutate func(*ntv1.NodeTaskSchedule)) (*ntv1.NodeTaskSchedule, time.Time) {
			s := &ntv1.NodeTaskSchedule{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
				Spec: ntv1.NodeTaskScheduleSpec{Schedule: "0 2 * * 6", TimeZone: ptr.To("Europe/Berlin"),
					Template: ntv1.NodeTaskTemplate{Spec: ntv1.NodeTaskSpec{
						Script:       &ntv1.ScriptSpec{Inline: ptr.To("Get-HotFix | Select-Object -Last 1")},
						NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"test-group": "none"}},
					}}},
			}
			if mutate != nil {
				mutate(s)
			}
			Expect(k8sClient.Create(suiteCtx, s)).To(Succeed())
			c, err := schedule.Parse(s.Spec.Schedule, "Europe/Berlin")
			Expect(err).NotTo(HaveOccurred())
			return s, c.Next(s.CreationTimestamp.Time)
		}
		reconcileAt := func(s *ntv1.NodeTaskSchedule, at time.Time) {
			clock.Set(at)
			_, err := r.Reconcile(suiteCtx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(s)})
			Expect(err).NotTo(HaveOccurred())
		}
		// setRun writes the status the NodeTask controller writes: running, succeeded, failed
		// or without target.
		setRun := func(name, state string) {
			t := &ntv1.NodeTask{}
			Expect(k8sClient.Get(suiteCtx, client.ObjectKey{Namespace: ns, Name: name}, t)).To(Succeed())
			now := metav1.Time{Time: clock.Now()}
			t.Status.ObservedGeneration, t.Status.Run, t.Status.Targets = t.Generation, 1, 3
			if t.Status.StartTime == nil {
				t.Status.StartTime = &now
			}
			set := func(typ string, st metav1.ConditionStatus, reason, msg string) {
				meta.SetStatusCondition(&t.Status.Conditions, metav1.Condition{Type: typ, Status: st, Reason: reason, Message: msg, ObservedGeneration: t.Generation, LastTransitionTime: now})
			}
			stalled, reconciling, ready := metav1.ConditionFalse, metav1.ConditionFalse, metav1.ConditionFalse
			reason, msg := ntv1.ReasonProgressing, ""
			switch state {
			case "running":
				t.Status.Succeeded, t.Status.Running, t.Status.Pending = 1, 1, 1
				reconciling, msg = metav1.ConditionTrue, "1 of 3 nodes succeeded, 0 failed, 1 running, 1 pending (rollout.maxConcurrent 1)"
			case "succeeded":
				t.Status.Succeeded, t.Status.Running, t.Status.Pending, t.Status.CompletionTime = 3, 0, 0, &now
				ready, reason, msg = metav1.ConditionTrue, ntv1.ReasonSucceeded, "succeeded on all 3 nodes"
			case "failed":
				t.Status.Succeeded, t.Status.Failed, t.Status.Running, t.Status.Pending = 2, 1, 0, 0
				stalled, reason = metav1.ConditionTrue, ntv1.ReasonFailureBudgetExceeded
				msg = "1 node failed (win-2), more than rollout.maxFailures allows (0); no further node starts"
			case "no-targets":
				t.Status.Targets = 0
				reason, msg = ntv1.ReasonNoTargets, "no Windows node matches spec.nodeSelector, spec.nodeNames and spec.tolerations"
			}
			set(ntv1.ConditionStalled, stalled, reason, "")
			set(ntv1.ConditionReconciling, reconciling, reason, "")
			set(ntv1.ConditionReady, ready, reason, msg)
			if stalled == metav1.ConditionTrue {
				set(ntv1.ConditionStalled, stalled, reason, msg)
			}
			Expect(k8sClient.Status().Update(suiteCtx, t)).To(Succeed())
		}
		write := func(s *ntv1.NodeTaskSchedule, file string) {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(ntv1.GroupVersion.WithKind("NodeTaskSchedule"))
			Expect(k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(s), u)).To(Succeed())
			u.SetManagedFields(nil)
			b, err := yaml.Marshal(u.Object)
			Expect(err).NotTo(HaveOccurred())
			Expect(os.WriteFile(filepath.Join(out, file), b, 0o644)).To(Succeed())
		}

		s, _ := create("weekly-new", nil)
		write(s, "new.yaml")

		s, fire := create("weekly-patch", nil)
		reconcileAt(s, fire.Add(-time.Hour))
		write(s, "scheduled.yaml")
		reconcileAt(s, fire.Add(time.Second))
		clock.Set(fire.Add(20 * time.Minute))
		setRun(schedule.RunName(s.Name, fire), "running")
		reconcileAt(s, fire.Add(20*time.Minute))
		write(s, "running.yaml")
		clock.Set(fire.Add(90 * time.Minute))
		setRun(schedule.RunName(s.Name, fire), "succeeded")
		reconcileAt(s, fire.Add(90*time.Minute))
		write(s, "healthy.yaml")
		changed := &ntv1.NodeTaskSchedule{}
		Expect(k8sClient.Get(suiteCtx, client.ObjectKeyFromObject(s), changed)).To(Succeed())
		changed.Spec.Schedule = "0 3 * * 6"
		Expect(k8sClient.Update(suiteCtx, changed)).To(Succeed())
		write(s, "spec-changed.yaml")

		f, ffire := create("weekly-fragile", nil)
		reconcileAt(f, ffire.Add(time.Second))
		clock.Set(ffire.Add(40 * time.Minute))
		setRun(schedule.RunName(f.Name, ffire), "failed")
		reconcileAt(f, ffire.Add(40*time.Minute))
		write(f, "last-run-failed.yaml")

		n, nfire := create("weekly-nowhere", nil)
		reconcileAt(n, nfire.Add(time.Second))
		clock.Set(nfire.Add(time.Minute))
		setRun(schedule.RunName(n.Name, nfire), "no-targets")
		reconcileAt(n, nfire.Add(time.Minute))
		write(n, "no-targets.yaml")

		p, pfire := create("weekly-paused", func(s *ntv1.NodeTaskSchedule) { s.Spec.Suspend = true })
		reconcileAt(p, pfire.Add(-time.Hour))
		write(p, "suspended.yaml")

		z, zfire := create("weekly-typo", func(s *ntv1.NodeTaskSchedule) { s.Spec.TimeZone = ptr.To("Europe/Berln") })
		reconcileAt(z, zfire.Add(-time.Hour))
		write(z, "invalid-time-zone.yaml")
	})
})
