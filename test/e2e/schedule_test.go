package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
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

// historyRows reads the table of `kubectl nodetask history`: per run, its name, trigger,
// outcome and succeeded/targets.
func historyRows(out string) []string {
	var rows []string
	lines := strings.Split(out, "\n")
	start := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "NAME ") })
	if start < 0 {
		return nil
	}
	for _, line := range lines[start+1:] {
		// NAME TRIGGER SCHEDULED STARTED FINISHED TARGETS SUCCEEDED FAILED OUTCOME
		if f := strings.Fields(line); len(f) >= 9 {
			rows = append(rows, fmt.Sprintf("%s %s %s %s/%s", f[0], f[1], f[8], f[6], f[5]))
		}
	}
	return rows
}

// metricLines returns the series of a metric whose labels contain these, each as the rest
// of its labels and its value.
func metricLines(body, name, labels string) []string {
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, labels) {
			rest := strings.TrimPrefix(strings.Replace(line[len(name)+1:], labels, "", 1), ",")
			out = append(out, strings.Replace(rest, "} ", " ", 1))
		}
	}
	return out
}

// untilWallClock sleeps until t.
func untilWallClock(t time.Time) {
	if d := time.Until(t); d > 0 {
		time.Sleep(d)
	}
}

var _ = Describe("NodeTaskSchedule", func() {
	It("fires every minute three times, once per node each, keeps its history limit, a kill -9 around a fire time neither doubles nor loses the run; history, run-now, status and metrics", func() {
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

		By("kubectl nodetask history: the kept runs, newest first, and the next run")
		out := plugin("", "history", sched.Name, "-n", ns)
		Expect(out.code).To(BeZero(), out.stderr)
		Expect(historyRows(out.stdout)).To(Equal([]string{
			names[2] + " schedule Succeeded 3/3", names[1] + " schedule Succeeded 3/3"}))
		Expect(out.stdout).To(MatchRegexp(`(?m)^Next run: +%s `, fires[2].Add(time.Minute).UTC().Format(time.RFC3339)))

		By("kubectl nodetask run-now: a manual run at once, once per node, listed as manual")
		out = plugin("", "run-now", sched.Name, "-n", ns, "--yes")
		Expect(out.code).To(BeZero(), out.stderr)
		created := regexp.MustCompile(`NodeTask \S+/(\S+) created\.`).FindStringSubmatch(out.stdout)
		Expect(created).To(HaveLen(2), out.stdout)
		manual := created[1]
		Expect(manual).To(HavePrefix(sched.Name + "-manual-"))
		run = runReady(ns, manual, time.Minute)
		expectOncePerNode(ns, run.UID, nodes)
		Expect(metav1.GetControllerOf(run).UID).To(Equal(sched.UID))

		By("the manual run does not take the place of the next scheduled one: run 4 starts at its time")
		fourth := schedule.RunName(sched.Name, fires[2].Add(time.Minute))
		Expect(time.Now()).To(BeTemporally("<", fires[2].Add(time.Minute)), "the manual run finished before run 4's time")
		run = runReady(ns, fourth, time.Until(fires[2].Add(time.Minute))+time.Minute)
		expectOncePerNode(ns, run.UID, nodes)
		Eventually(func() []string {
			out = plugin("", "history", sched.Name, "-n", ns)
			return historyRows(out.stdout)
		}).Should(Equal([]string{fourth + " schedule Succeeded 3/3", manual + " manual Succeeded 3/3"}),
			"the manual run counts against successfulRunsHistoryLimit 2")
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(sched), sched)).To(Succeed())
		Expect(sched.Status.LastScheduleTime.Time).To(BeTemporally("==", fires[2].Add(time.Minute)), "a manual run is no scheduled time")

		By("kubectl nodetask status nodetaskschedule/NAME shows the newest run")
		out = plugin("", "status", "nodetaskschedule/"+sched.Name, "-n", ns)
		Expect(out.code).To(BeZero(), out.stderr)
		Expect(out.stdout).To(MatchRegexp(`(?m)^NodeTask: +%s/%s$`, ns, fourth))

		By("kubectl nodetask targets nts/NAME: the template's targets are the pool, as the runs' are")
		out = plugin("", "targets", "nts/"+sched.Name, "-n", ns, "-o", "json")
		Expect(out.code).To(BeZero(), out.stderr)
		var decisions []rollout.TargetDecision
		Expect(json.Unmarshal([]byte(out.stdout), &decisions)).To(Succeed())
		var targets []string
		for _, d := range decisions {
			if d.Target {
				targets = append(targets, d.Node)
			}
		}
		Expect(targets).To(ConsistOf(nodes))

		By("metrics: the restarted manager started runs 2, 3 and 4; none skipped or missed; the next run's time")
		reader := tokenOf("schedule-scraper", "nodetask-metrics-reader")
		var body string
		Eventually(func() int { code, b := scrape(reader); body = b; return code }).Should(Equal(http.StatusOK))
		self := fmt.Sprintf(`name=%q,namespace=%q`, sched.Name, ns)
		Expect(metricLines(body, "nodetask_schedule_runs_total", self)).To(Equal([]string{`result="started" 3`}))
		next := metricLines(body, "nodetask_schedule_next_run_timestamp_seconds", self)
		Expect(next).To(HaveLen(1))
		Expect(strconv.ParseFloat(strings.TrimSpace(next[0]), 64)).To(BeNumerically("==", sched.Status.NextScheduleTime.Unix()))

		// Stop the schedule so that it does not fire during the specs that follow; its series go.
		Expect(k8s.Delete(ctx, sched)).To(Succeed())
		Eventually(func() string { _, body = scrape(reader); return body }).ShouldNot(ContainSubstring(self))
	})
})
