package rollout

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// The status write budget: how often a task's status may be written while only progress
// changes, and where its per-node results go (status.nodes, or NodeResultSlices), so that the
// bytes written for one rollout stay a small multiple of what the results finally take, while
// a watcher of the task sees its counts move every few seconds. A change of a condition, a new
// run or generation, and the move of the results between the task and its slices are written
// at once, whatever the budget says.

const (
	// DefaultInlineResults is how many per-node entries status.nodes holds before they move
	// to NodeResultSlices: up to here the whole object is a few tens of KB, written at most a
	// second or two apart while progress changes.
	DefaultInlineResults = 256
	// resultsPerSlice is the number of entries a slice holds on average, at most: about 40 KB
	// with the longest node names and no output. The number of slices is a power of two, so
	// that it changes (and entries move between slices) only when the node count doubles or halves.
	resultsPerSlice = 256
	// progressBytesPerSecond is the rate at which the task object may be rewritten while only
	// progress changes: the interval between two writes grows with the object's size, from
	// minProgressInterval up to maxProgressInterval.
	progressBytesPerSecond = 32 << 10
	minProgressInterval    = time.Second
	// maxProgressInterval bounds the interval: a watcher sees progress at least this often.
	maxProgressInterval = 5 * time.Second
	// minSliceInterval is the least time between two progress writes of one slice, and the
	// first step of its backoff; a node that newly failed is written within it.
	minSliceInterval = 10 * time.Second
)

// ResultSliceCount returns how many NodeResultSlices should hold entries results, given how
// many hold them now (0: status.nodes does). More than inline entries go to slices, about
// resultsPerSlice to a slice, in a power of two of slices; they come back into status.nodes
// only below half of inline, and the number of slices changes only when it is off by more
// than a factor of two, so that a node count near a boundary does not move entries back and forth.
func ResultSliceCount(entries int, current int32, inline int) int32 {
	if entries <= inline {
		if current > 0 && entries > inline/2 {
			return current
		}
		return 0
	}
	want := int32(1)
	for int(want)*resultsPerSlice < entries {
		want *= 2
	}
	if current >= want && current <= 2*want {
		return current
	}
	return want
}

// ProgressInterval is the least time between two writes of a task object of the given size
// while only progress changes: a 20 KB object every second, a 160 KB one every 5 seconds.
func ProgressInterval(size int) time.Duration {
	d := time.Duration(size) * time.Second / progressBytesPerSecond
	return min(max(d, minProgressInterval), maxProgressInterval)
}

// SliceWrites is what the operator remembers of one slice's writes in a run.
type SliceWrites struct {
	// Run is the run the writes belong to.
	Run int64
	// First and Last are the times of the run's first and last write of the slice.
	First, Last time.Time
}

// SliceWriteWait returns how long a slice whose entries changed waits before it is written
// while only progress changes (zero or less: now). The first write of a run goes at once;
// after it the waits grow geometrically, each twice the time since the run's first write
// (at least minSliceInterval): writes at 0, 10, 30, 90, 270 s... so that a rollout of any
// length writes each slice a few times, a number growing with the logarithm of its length.
// A slice with a node that newly failed waits only minSliceInterval: failures are what users
// look for in the entries. A slice with a node that newly finished, of a task whose next steps
// wait for stored results (WaitsOnStoredResults), waits minProgressInterval at most.
func SliceWriteWait(w SliceWrites, run int64, now time.Time, newlyFailed, awaitedResult bool) time.Duration {
	if w.Run != run || w.Last.IsZero() {
		return 0
	}
	step := max(minSliceInterval, 2*w.Last.Sub(w.First))
	if newlyFailed {
		step = minSliceInterval
	}
	if awaitedResult {
		step = minProgressInterval
	}
	return w.Last.Add(step).Sub(now)
}

// SplitResults distributes entries (in status.nodes' stored form, sorted by name) over n
// slices by ntv1.ResultSliceIndex; each slice's entries stay sorted.
func SplitResults(entries []ntv1.NodeStatus, n int32) [][]ntv1.NodeStatus {
	out := make([][]ntv1.NodeStatus, n)
	for i := range entries {
		k := ntv1.ResultSliceIndex(entries[i].Name, n)
		out[k] = append(out[k], entries[i])
	}
	return out
}

// SameEntries reports whether two lists of entries would be stored alike.
func SameEntries(a, b []ntv1.NodeStatus) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameEntry(&a[i], &b[i]) {
			return false
		}
	}
	return true
}

// WaitsOnStoredResults reports whether the task's next steps wait for results to be stored,
// not only observed: a claimed node is released (uncordoned, its slot freed) once its final
// result is stored, a finished pod is deleted after podTTLSecondsAfterFinished only then, and
// a first batch or minReadySeconds counts stored results. Such a task's slices are written
// when one of their nodes newly finished, not on the backoff: a rollout must not wait for it.
func WaitsOnStoredResults(task *ntv1.NodeTask) bool {
	return ClaimsNodes(task) || task.Spec.PodTTLSecondsAfterFinished != nil ||
		task.Spec.Rollout.FirstBatch != nil || task.Spec.Rollout.MinReadySeconds > 0
}

// NewlyFinished reports whether entries hold a result of run (succeeded or failed) that old
// (the slice's stored entries, of oldRun) did not hold.
func NewlyFinished(old []ntv1.NodeStatus, oldRun int64, entries []ntv1.NodeStatus, run int64) bool {
	was := make(map[string]ntv1.NodePhase)
	for i := range old {
		if runOr(old[i].Run, oldRun) == run {
			was[old[i].Name] = old[i].Phase
		}
	}
	for i := range entries {
		e := &entries[i]
		if runOr(e.Run, run) == run && (e.Phase == ntv1.NodeSucceeded || e.Phase == ntv1.NodeFailed) && was[e.Name] != e.Phase {
			return true
		}
	}
	return false
}

// NewlyFailed reports whether entries hold a node failed in run that old (the slice's stored
// entries, of oldRun) did not hold as failed in that run.
func NewlyFailed(old []ntv1.NodeStatus, oldRun int64, entries []ntv1.NodeStatus, run int64) bool {
	was := make(map[string]bool)
	for i := range old {
		if old[i].Phase == ntv1.NodeFailed && runOr(old[i].Run, oldRun) == run {
			was[old[i].Name] = true
		}
	}
	for i := range entries {
		if entries[i].Phase == ntv1.NodeFailed && runOr(entries[i].Run, run) == run && !was[entries[i].Name] {
			return true
		}
	}
	return false
}

func runOr(run, def int64) int64 {
	if run == 0 {
		return def
	}
	return run
}

// WriteNow reports whether writing root over stored (both task objects' statuses, entries
// aside) must go at once, whatever the budget: a condition's status or reason changes
// (Ready, Stalled: what kubectl wait, Argo CD and kstatus act on), a run or generation
// starts, or the results move between status.nodes and slices. Anything else (counts,
// messages, entries) is progress and waits its turn.
func WriteNow(stored, root *ntv1.NodeTaskStatus) bool {
	return root.Run != stored.Run || root.ObservedGeneration != stored.ObservedGeneration ||
		root.ResultSlices != stored.ResultSlices || !sameConditionStates(stored.Conditions, root.Conditions)
}

// sameConditionStates reports whether two condition lists hold the same types with the same
// status and reason; messages (which carry progress counts) may differ.
func sameConditionStates(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range b {
		c := meta.FindStatusCondition(a, b[i].Type)
		if c == nil || c.Status != b[i].Status || c.Reason != b[i].Reason {
			return false
		}
	}
	return true
}

// AllFinished reports whether every entry holds its node's final result of run.
func AllFinished(entries []ntv1.NodeStatus, run int64) bool {
	for i := range entries {
		if runOr(entries[i].Run, run) != run || (entries[i].Phase != ntv1.NodeSucceeded && entries[i].Phase != ntv1.NodeFailed) {
			return false
		}
	}
	return true
}
