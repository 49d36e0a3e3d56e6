package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

// A progress-only write of the task object waits rollout.ProgressInterval after the last
// one, for this incarnation of the task only (what goes at once is rollout.WriteNow's, tested
// in the rollout package).
func TestWriteDelay(t *testing.T) {
	cases := []struct {
		name      string
		lastWrite time.Duration // ago; 0 for never
		size      int
		want      time.Duration
	}{
		{"first write", 0, 10 << 10, 0},
		{"small object right after a write waits a second", 300 * time.Millisecond, 10 << 10, 700 * time.Millisecond},
		{"small object a second after a write goes", time.Second, 10 << 10, 0},
		{"a 96 KiB object waits three seconds", time.Second, 96 << 10, 2 * time.Second},
		{"a large object waits five seconds at most", 300 * time.Millisecond, 800 << 10, 4700 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			r := &NodeTaskReconciler{}
			task := newTask()
			if tc.lastWrite > 0 {
				storeMark(&r.lastWrite, task, t0.Add(-tc.lastWrite))
			}
			g.Expect(max(r.writeDelay(task, tc.size, t0), 0)).To(Equal(tc.want))
			g.Expect(rollout.ProgressInterval(tc.size)).To(BeNumerically(">=", time.Second))
			// Another incarnation of the task under the same name remembers nothing.
			other := task.DeepCopy()
			other.UID = "other"
			g.Expect(r.writeDelay(other, tc.size, t0)).To(BeZero())
		})
	}
}

// A pass that reads the task as it was before this process's own status write waits for the
// newer one (its write would be a conflict), but only for a few seconds.
func TestCacheBehindOwnWrite(t *testing.T) {
	g := NewWithT(t)
	now := t0
	r := &NodeTaskReconciler{Now: func() time.Time { return now }}
	task := newTask()
	task.ResourceVersion = "10"
	g.Expect(r.cacheBehindOwnWrite(task)).To(BeFalse(), "nothing written yet")
	storeMark(&r.ownWrites, task, ownWrite{replaced: "10", at: now})
	g.Expect(r.cacheBehindOwnWrite(task)).To(BeTrue(), "the cache still shows what the write replaced")
	now = now.Add(ownWriteWait + time.Second)
	g.Expect(r.cacheBehindOwnWrite(task)).To(BeFalse(), "an event that never comes does not stop the task")
	now = t0
	newer := task.DeepCopy()
	newer.ResourceVersion = "11"
	g.Expect(r.cacheBehindOwnWrite(newer)).To(BeFalse(), "the cache shows the write")
	g.Expect(r.cacheBehindOwnWrite(task)).To(BeFalse(), "and the mark is gone once it did")
}
