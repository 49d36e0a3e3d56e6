package controllers

import (
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

// A task with more target nodes than status.nodes holds keeps its per-node results in
// NodeResultSlices, written before the task object that counts them.
var _ = Describe("Per-node results in NodeResultSlices", func() {
	// slicesOf reads the task's slices straight from the API server, and their entries merged
	// as kubectl nodetask reads them.
	slicesOf := func(task *ntv1.NodeTask) ([]ntv1.NodeResultSlice, []ntv1.NodeStatus) {
		var list ntv1.NodeResultSliceList
		Expect(k8sClient.List(suiteCtx, &list, client.InNamespace(task.Namespace),
			client.MatchingLabels{ntv1.LabelTask: task.Name})).To(Succeed())
		t := get(task)
		var from []*ntv1.NodeResultSlice
		for i := range list.Items {
			Expect(metav1.IsControlledBy(&list.Items[i], t)).To(BeTrue(), "slice %s is owned by its task", list.Items[i].Name)
			if list.Items[i].Index < t.Status.ResultSlices {
				from = append(from, &list.Items[i])
			}
		}
		return list.Items, ntv1.MergeResultSlices(&t.Status, from)
	}
	phases := func(entries []ntv1.NodeStatus) map[ntv1.NodePhase]int {
		out := map[ntv1.NodePhase]int{}
		for _, e := range entries {
			out[e.Phase]++
		}
		return out
	}

	It("keeps the task small, loses no result, and writes Ready after the slices", func() {
		const nodes = rollout.DefaultInlineResults + 44 // 300: two slices
		f := newFixture()
		f.addWindowsNodes(nodes)
		task := f.task("sliced", func(t *ntv1.NodeTask) { t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromInt32(1)) })
		create(task)
		Eventually(func() int { return len(f.pods(task)) }, 30*time.Second).Should(Equal(nodes))
		Eventually(func() int32 { return get(task).Status.Running }, 30*time.Second).Should(BeEquivalentTo(nodes))

		By("the entries are in two slices; the task has counts and conditions only")
		t := get(task)
		Expect(t.Status.ResultSlices).To(BeEquivalentTo(2))
		Expect(t.Status.Nodes).To(BeEmpty())
		Eventually(func() map[ntv1.NodePhase]int {
			_, entries := slicesOf(task)
			return phases(entries)
		}, 30*time.Second).Should(Equal(map[ntv1.NodePhase]int{ntv1.NodeRunning: nodes}))
		sl, _ := slicesOf(task)
		Expect(sl).To(HaveLen(2))
		for _, s := range sl {
			Expect(s.Name).To(Equal(ntv1.ResultSliceName(task.Name, s.Index)))
			Expect(s.Task).To(Equal(task.Name))
			Expect(s.Slices).To(BeEquivalentTo(2))
		}

		By("a watcher that sees Ready finds every result in the slices at that moment")
		wc, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		w, err := wc.Watch(suiteCtx, &ntv1.NodeTaskList{}, client.InNamespace(f.ns))
		Expect(err).NotTo(HaveOccurred())
		defer w.Stop()
		var (
			mu            sync.Mutex
			writes        int
			atReady       map[ntv1.NodePhase]int
			largestObject int
		)
		go func() {
			defer GinkgoRecover()
			for ev := range w.ResultChan() {
				t, ok := ev.Object.(*ntv1.NodeTask)
				if !ok || ev.Type != watch.Modified {
					continue
				}
				mu.Lock()
				writes++
				largestObject = max(largestObject, rollout.ObjectSize(t, &t.Status))
				done := atReady == nil && readyTrue(t)
				mu.Unlock()
				if done {
					_, entries := slicesOf(task)
					mu.Lock()
					atReady = phases(entries)
					mu.Unlock()
				}
			}
		}()
		start := time.Now()
		f.finishAll(task, func(node string) int32 {
			if node == f.nodeName(7) {
				return 1
			}
			return 0
		})
		elapsed := time.Since(start)
		Eventually(func() map[ntv1.NodePhase]int {
			mu.Lock()
			defer mu.Unlock()
			return atReady
		}, 30*time.Second).Should(Equal(map[ntv1.NodePhase]int{ntv1.NodeSucceeded: nodes - 1, ntv1.NodeFailed: 1}))
		t = get(task)
		Expect(t.Status.Succeeded).To(BeEquivalentTo(nodes - 1))
		Expect(t.Status.Failed).To(BeEquivalentTo(1))
		mu.Lock()
		AddReportEntry("task writes while 300 pods finished", fmt.Sprintf("%d writes in %s, the largest object %d bytes", writes, elapsed.Round(time.Millisecond), largestObject))
		Expect(writes).To(BeNumerically("<=", int(elapsed/time.Second)+3), "the task object is written at most once a second while only progress changes")
		Expect(largestObject).To(BeNumerically("<", 8<<10), "300 nodes' results are not in the task object")
		mu.Unlock()
		_, entries := slicesOf(task)
		failed := (&ntv1.NodeTaskStatus{Nodes: entries}).Node(f.nodeName(7))
		Expect(failed).NotTo(BeNil())
		Expect(failed.Output).To(ContainSubstring("exit 1 on " + f.nodeName(7)))

		By("a slice deleted behind the operator's back is written again")
		Expect(k8sClient.Delete(suiteCtx, &ntv1.NodeResultSlice{ObjectMeta: metav1.ObjectMeta{
			Namespace: task.Namespace, Name: ntv1.ResultSliceName(task.Name, 1)}})).To(Succeed())
		Eventually(func() int {
			_, entries := slicesOf(task)
			return len(entries)
		}, 30*time.Second).Should(Equal(nodes))

		By("a new run rewrites every slice for it")
		updateSpec(task, func(t *ntv1.NodeTask) { t.Spec.RerunToken = "again" })
		Eventually(func() int { return len(unfinished(f.pods(task))) }, 30*time.Second).Should(Equal(nodes))
		Eventually(func() []int64 {
			sl, _ := slicesOf(task)
			var runs []int64
			for _, s := range sl {
				runs = append(runs, s.Run)
			}
			return runs
		}, 30*time.Second).Should(Equal([]int64{2, 2}))
		f.finishAll(task, succeed)
		Eventually(conditionStatus(task, ntv1.ConditionReady), 30*time.Second).Should(Equal(metav1.ConditionTrue))
		_, entries = slicesOf(task)
		Expect(phases(entries)).To(Equal(map[ntv1.NodePhase]int{ntv1.NodeSucceeded: nodes}))
		for _, e := range entries {
			Expect(get(task).Status.RunOf(&e)).To(BeEquivalentTo(2))
		}
	})
})

func readyTrue(t *ntv1.NodeTask) bool {
	for _, c := range t.Status.Conditions {
		if c.Type == ntv1.ConditionReady {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}
