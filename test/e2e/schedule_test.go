package e2e

import (
	"sort"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/schedule"
)

// scheduleRuns lists the NodeTasks that carry the schedule's label, by name.
func scheduleRuns(ns, name string) map[string]ntv1.NodeTask {
	var list ntv1.NodeTaskList
	Expect(k8s.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{ntv1.LabelSchedule: name})).To(Succeed())
	out := map[string]ntv1.NodeTask{}
	for _, t := range list.Items {
		out[t.Name] = t
	}
	return out
}

// runReady waits until the run exists and is Ready, and returns it.
func runReady(ns, name string, timeout time.Duration) *ntv1.NodeTask {
	GinkgoHelper()
	task := &ntv1.NodeTask{}
	Eventually(func() bool {
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, task); err != nil {
			return false
		}
		return task.Status.ObservedGeneration == task.Generation && meta.IsStatusConditionTrue(task.Status.Conditions, ntv1.ConditionReady)
	}, timeout, time.Second).Should(BeTrue(), "run %s/%s Ready", ns, name)
	return task
}

// untilWallClock sleeps until t.
func untilWallClock(t time.Time) {
	if d := time.Until(t); d > 0 {
		time.Sleep(d)
	}
}

var _ = Describe("NodeTaskSchedule", func() {
	It("fires every minute three times, once per node each, keeps its history limit, and a kill -9 around a fire time neither doubles nor loses the run", func() {
		const pool = "sched"
		nodes := addPool(pool, 3)
		ns := namespace(true)
		sched := &ntv1.NodeTaskSchedule{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "every-minute"},
			Spec: ntv1.NodeTaskScheduleSpec{
				Schedule:                   "* * * * *",
				StartingDeadlineSeconds:    ptr.To[int64](120),
				SuccessfulRunsHistoryLimit: ptr.To[int32](2),
				Template: ntv1.NodeTaskTemplate{Spec: ntv1.NodeTaskSpec{
					NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{poolLabel: pool}},
					Script:       &ntv1.ScriptSpec{Inline: ptr.To("Get-HotFix | Select-Object -First 5")},
				}},
			},
		}
		Expect(k8s.Create(ctx, sched)).To(Succeed())
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(sched), sched)).To(Succeed())
		// The first fire time is the first whole minute after the schedule was created.
		first := sched.CreationTimestamp.Truncate(time.Minute).Add(time.Minute)
		fires := []time.Time{first, first.Add(time.Minute), first.Add(2 * time.Minute)}
		names := make([]string, len(fires))
		for i, t := range fires {
			names[i] = schedule.RunName(sched.Name, t)
		}
		// Every run ever seen, with the UID it was first seen with: a run deleted and created
		// again (twice for one time) would show a second UID.
		seen := map[string]types.UID{}
		observe := func() {
			for name, t := range scheduleRuns(ns, sched.Name) {
				if uid, ok := seen[name]; ok {
					Expect(t.UID).To(Equal(uid), "run %s was created twice", name)
				}
				seen[name] = t.UID
			}
		}

		By("run 1 at " + fires[0].Format(time.TimeOnly) + " runs once on every node")
		run := runReady(ns, names[0], time.Until(fires[0])+time.Minute)
		observe()
		expectOncePerNode(ns, run.UID, nodes)
		Expect(run.OwnerReferences).To(ContainElement(HaveField("UID", sched.UID)))

		By("kill -9 five seconds before run 2's time, restart five seconds after it")
		untilWallClock(fires[1].Add(-5 * time.Second))
		observe()
		Expect(seen).NotTo(HaveKey(names[1]), "run 2 started before its time")
		killManager()
		untilWallClock(fires[1].Add(5 * time.Second))
		Expect(scheduleRuns(ns, sched.Name)).NotTo(HaveKey(names[1]), "no manager ran at run 2's time")
		startManager()
		run = runReady(ns, names[1], time.Minute)
		observe()
		expectOncePerNode(ns, run.UID, nodes)
		Expect(run.CreationTimestamp.Time).To(BeTemporally(">=", fires[1].Truncate(time.Second)),
			"the restarted manager created run 2, late but within startingDeadlineSeconds")

		By("run 3 prunes run 1: two succeeded runs are kept, as NodeTasks and in status.history")
		run = runReady(ns, names[2], time.Until(fires[2])+time.Minute)
		observe()
		expectOncePerNode(ns, run.UID, nodes)
		Eventually(func() []string {
			var got []string
			for name := range scheduleRuns(ns, sched.Name) {
				got = append(got, name)
			}
			sort.Strings(got)
			return got
		}).Should(Equal([]string{names[1], names[2]}))
		Eventually(func() []string {
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(sched), sched)).To(Succeed())
			var got []string
			for _, e := range sched.Status.History {
				got = append(got, e.Name+" "+string(e.Outcome))
			}
			return got
		}).Should(Equal([]string{names[2] + " Succeeded", names[1] + " Succeeded"}), "newest first, within the limit")
		Expect(sched.Status.LastScheduleTime.Time).To(BeTemporally("==", fires[2]))
		Expect(sched.Status.NextScheduleTime.Time).To(BeTemporally("==", fires[2].Add(time.Minute)))
		for _, e := range sched.Status.History {
			Expect(e.Targets).To(BeEquivalentTo(len(nodes)))
			Expect(e.Succeeded).To(BeEquivalentTo(len(nodes)))
		}
		observe()
		Expect(seen).To(HaveLen(3), "one NodeTask per scheduled minute, and no other: %v", seen)
		for _, n := range names {
			Expect(seen).To(HaveKey(n))
		}
		Expect(eventNotes(ns, ntv1.EventMissedSchedule)).To(BeEmpty(), "run 2 was late, not missed")

		// Stop the schedule so that it does not fire during the specs that follow.
		Expect(k8s.Delete(ctx, sched)).To(Succeed())
	})
})
