package rollout

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

func TestWriteNow(t *testing.T) {
	cond := func(typ string, status metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg}
	}
	stored := ntv1.NodeTaskStatus{Run: 1, ObservedGeneration: 1, Succeeded: 1, Conditions: []metav1.Condition{
		cond(ntv1.ConditionReady, metav1.ConditionFalse, ntv1.ReasonProgressing, "1 of 5 nodes succeeded"),
		cond(ntv1.ConditionReconciling, metav1.ConditionTrue, ntv1.ReasonProgressing, "1 of 5 nodes succeeded"),
	}}
	with := func(f func(*ntv1.NodeTaskStatus)) ntv1.NodeTaskStatus {
		st := *stored.DeepCopy()
		f(&st)
		return st
	}
	cases := []struct {
		name string
		root ntv1.NodeTaskStatus
		want bool
	}{
		{"counters wait their turn", with(func(st *ntv1.NodeTaskStatus) {
			st.Succeeded = 2
			st.Conditions[0].Message, st.Conditions[1].Message = "2 of 5 nodes succeeded", "2 of 5 nodes succeeded"
		}), false},
		{"entries wait their turn", with(func(st *ntv1.NodeTaskStatus) {
			st.Nodes = []ntv1.NodeStatus{{Name: "a", Phase: ntv1.NodeSucceeded}}
		}), false},
		{"Ready turning True goes at once", with(func(st *ntv1.NodeTaskStatus) {
			st.Conditions[0] = cond(ntv1.ConditionReady, metav1.ConditionTrue, ntv1.ReasonSucceeded, "succeeded on all 5 nodes")
		}), true},
		{"a new reason goes at once", with(func(st *ntv1.NodeTaskStatus) {
			st.Conditions[1].Reason = ntv1.ReasonAwaitingApproval
		}), true},
		{"Stalled appearing goes at once", with(func(st *ntv1.NodeTaskStatus) {
			st.Conditions = append(st.Conditions, cond(ntv1.ConditionStalled, metav1.ConditionTrue, ntv1.ReasonFailureBudgetExceeded, "x"))
		}), true},
		{"a new run goes at once", with(func(st *ntv1.NodeTaskStatus) { st.Run = 2 }), true},
		{"a new generation goes at once", with(func(st *ntv1.NodeTaskStatus) { st.ObservedGeneration = 2 }), true},
		{"results moving to slices go at once", with(func(st *ntv1.NodeTaskStatus) { st.ResultSlices = 4 }), true},
	}
	for _, tc := range cases {
		if got := WriteNow(&stored, &tc.root); got != tc.want {
			t.Errorf("%s: WriteNow = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// The interval between progress writes follows the object's size.
func TestProgressInterval(t *testing.T) {
	for _, tc := range []struct {
		size int
		want time.Duration
	}{
		{2 << 10, time.Second},
		{32 << 10, time.Second},
		{64 << 10, 2 * time.Second},
		{128 << 10, 4 * time.Second},
		{160 << 10, 5 * time.Second},
		{800 << 10, 5 * time.Second}, // a watcher still sees progress every 5 s
	} {
		if got := ProgressInterval(tc.size); got != tc.want {
			t.Errorf("ProgressInterval(%d KiB) = %s, want %s", tc.size>>10, got, tc.want)
		}
	}
}

func TestResultSliceCount(t *testing.T) {
	for _, tc := range []struct {
		entries int
		current int32
		want    int32
	}{
		{0, 0, 0},
		{256, 0, 0},       // status.nodes holds up to inline entries
		{257, 0, 2},       // then slices of at most 256 on average, a power of two of them
		{1000, 0, 4},      //
		{5000, 0, 32},     //
		{50000, 0, 256},   //
		{200, 2, 2},       // back in status.nodes only at half of inline or below
		{128, 2, 0},       //
		{0, 4, 0},         //
		{5000, 64, 64},    // within a factor of two: no entry moves
		{300, 4, 4},       //
		{512, 2, 2},       //
		{513, 2, 4},       // too few slices: more
		{5000, 16, 32},    //
		{1000, 32, 4},     // far too many: fewer
		{257, 1 << 20, 2}, //
	} {
		if got := ResultSliceCount(tc.entries, tc.current, DefaultInlineResults); got != tc.want {
			t.Errorf("ResultSliceCount(%d entries, %d now) = %d, want %d", tc.entries, tc.current, got, tc.want)
		}
	}
}

func TestSliceWriteWait(t *testing.T) {
	first := t0
	for _, tc := range []struct {
		name        string
		w           SliceWrites
		now         time.Time
		newlyFailed bool
		awaited     bool
		want        time.Duration
	}{
		{"never written", SliceWrites{}, t0, false, false, 0},
		{"written in another run", SliceWrites{Run: 1, First: first, Last: first}, t0.Add(time.Second), false, false, 0},
		{"right after the first write: 10 s", SliceWrites{Run: 2, First: first, Last: first}, t0.Add(time.Second), false, false, 9 * time.Second},
		{"the waits grow: twice the time since the first", SliceWrites{Run: 2, First: first, Last: first.Add(30 * time.Second)}, first.Add(30 * time.Second), false, false, 60 * time.Second},
		{"a newly failed node waits 10 s at most", SliceWrites{Run: 2, First: first, Last: first.Add(30 * time.Second)}, first.Add(35 * time.Second), true, false, 5 * time.Second},
		{"a result a claimed node's release waits for goes within a second", SliceWrites{Run: 2, First: first, Last: first.Add(30 * time.Second)}, first.Add(30*time.Second + 300*time.Millisecond), false, true, 700 * time.Millisecond},
		{"its turn has come", SliceWrites{Run: 2, First: first, Last: first.Add(10 * time.Second)}, first.Add(30 * time.Second), false, false, 0},
	} {
		if got := max(SliceWriteWait(tc.w, 2, tc.now, tc.newlyFailed, tc.awaited), 0); got != tc.want {
			t.Errorf("%s: SliceWriteWait = %s, want %s", tc.name, got, tc.want)
		}
	}
}

// Entries split over slices and merged back are the same entries, whatever the runs.
func TestSplitAndMergeResults(t *testing.T) {
	at := metav1.NewTime(t0)
	st := ntv1.NodeTaskStatus{Run: 3}
	for i := range 1000 {
		e := ntv1.NodeStatus{Name: fmt.Sprintf("win-%04d", i), Phase: ntv1.NodeSucceeded, Attempts: 1, StartTime: &at, ExitCode: ptr.To[int32](0)}
		if i%7 == 0 {
			e.Run = 2 // an entry of an earlier run keeps its run
		}
		st.Nodes = append(st.Nodes, e)
	}
	parts := SplitResults(st.Nodes, 4)
	var from []*ntv1.NodeResultSlice
	for i, p := range parts {
		if len(p) < 200 || len(p) > 300 {
			t.Errorf("slice %d holds %d of 1000 entries", i, len(p))
		}
		for _, e := range p {
			if ntv1.ResultSliceIndex(e.Name, 4) != int32(i) {
				t.Fatalf("%s in slice %d", e.Name, i)
			}
		}
		from = append(from, &ntv1.NodeResultSlice{Index: int32(i), Slices: 4, Run: st.Run, Sequence: 1, Nodes: p})
	}
	if got := ntv1.MergeResultSlices(&st, from); !SameEntries(got, st.Nodes) {
		t.Fatal("merged entries differ from the split ones")
	}
	// The number of slices changed to 8 and only slice 0 was rewritten (sequence 2): its
	// entries win over the copies left in the old slices, and a slice written for another
	// run keeps its entries' run.
	moved := SplitResults(st.Nodes, 8)[0]
	changed := append([]ntv1.NodeStatus(nil), moved...)
	changed[0].Phase = ntv1.NodeFailed
	newer := &ntv1.NodeResultSlice{Index: 0, Slices: 8, Run: st.Run, Sequence: 2, Nodes: changed}
	got := ntv1.MergeResultSlices(&st, append(from, newer))
	if len(got) != len(st.Nodes) {
		t.Fatalf("%d entries merged, want %d", len(got), len(st.Nodes))
	}
	if e := (&ntv1.NodeTaskStatus{Nodes: got}).Node(changed[0].Name); e == nil || e.Phase != ntv1.NodeFailed {
		t.Fatalf("the newer slice's entry lost: %+v", e)
	}
	// A slice written ahead of its task (the task's write of run 4 was lost) is not read.
	ahead := &ntv1.NodeResultSlice{Index: 0, Slices: 4, Run: 4, Sequence: 3, Nodes: []ntv1.NodeStatus{{Name: "win-0001", Phase: ntv1.NodeRunning}}}
	if e := (&ntv1.NodeTaskStatus{Nodes: ntv1.MergeResultSlices(&st, append(from, ahead))}).Node("win-0001"); e == nil || e.Phase != ntv1.NodeSucceeded {
		t.Fatalf("an entry of a run the task does not know was read: %+v", e)
	}
	// Names stay valid however long the task's name.
	long := strings.Repeat("a", 253)
	if n := ntv1.ResultSliceName(long, 31); len(n) > 253 || n == ntv1.ResultSliceName(long[:252]+"b", 31) {
		t.Errorf("slice name %q of a 253-character task", n)
	}
	older := ntv1.NodeTaskStatus{Run: 4}
	if e := (&ntv1.NodeTaskStatus{Nodes: ntv1.MergeResultSlices(&older, from)}).Node("win-0001"); e == nil || e.Run != 3 {
		t.Fatalf("an entry of run 3 read under run 4: %+v", e)
	}
}

func TestAllFinished(t *testing.T) {
	done := []ntv1.NodeStatus{{Name: "a", Phase: ntv1.NodeSucceeded}, {Name: "b", Phase: ntv1.NodeFailed}}
	if !AllFinished(done, 2) {
		t.Error("every node has its result")
	}
	if AllFinished(append(done, ntv1.NodeStatus{Name: "c", Phase: ntv1.NodeRunning}), 2) {
		t.Error("a node still runs")
	}
	if AllFinished(append(done, ntv1.NodeStatus{Name: "c", Phase: ntv1.NodeSucceeded, Run: 1}), 2) {
		t.Error("a result of an earlier run is not this run's")
	}
}

func TestNewlyFinishedAndWhoWaitsForIt(t *testing.T) {
	running := []ntv1.NodeStatus{{Name: "a", Phase: ntv1.NodeRunning}}
	done := []ntv1.NodeStatus{{Name: "a", Phase: ntv1.NodeSucceeded}}
	if !NewlyFinished(running, 1, done, 1) || NewlyFinished(done, 1, done, 1) || !NewlyFinished(done, 1, done, 2) {
		t.Error("NewlyFinished: a result not stored in this run is new, a stored one is not")
	}
	if WaitsOnStoredResults(newTask()) {
		t.Error("a plain task's rollout does not wait for stored results")
	}
	for name, m := range map[string]func(*ntv1.NodeTask){
		"cordon":   func(t *ntv1.NodeTask) { t.Spec.Cordon = true },
		"pod TTL":  func(t *ntv1.NodeTask) { t.Spec.PodTTLSecondsAfterFinished = ptr.To[int32](0) },
		"minReady": func(t *ntv1.NodeTask) { t.Spec.Rollout.MinReadySeconds = 5 },
		"reboot":   func(t *ntv1.NodeTask) { t.Spec.Reboot = ntv1.RebootIfRequired },
	} {
		if !WaitsOnStoredResults(newTask(m)) {
			t.Errorf("a task with %s waits for stored results", name)
		}
	}
}

func TestNewlyFailed(t *testing.T) {
	ok := []ntv1.NodeStatus{{Name: "a", Phase: ntv1.NodeRunning}, {Name: "b", Phase: ntv1.NodeSucceeded}}
	failed := []ntv1.NodeStatus{{Name: "a", Phase: ntv1.NodeFailed}, {Name: "b", Phase: ntv1.NodeSucceeded}}
	if !NewlyFailed(ok, 1, failed, 1) {
		t.Error("a node that failed since the slice's write is new")
	}
	if NewlyFailed(failed, 1, failed, 1) {
		t.Error("a failure already written is not new")
	}
	if !NewlyFailed(failed, 1, failed, 2) {
		t.Error("a failure of a new run is new")
	}
	if NewlyFailed(ok, 1, []ntv1.NodeStatus{{Name: "a", Phase: ntv1.NodeFailed, Run: 1}}, 2) {
		t.Error("a failure of an earlier run is not new")
	}
}

// simulatedRollout plays a rollout on nodes under the write budget, a pass every step: each
// node starts within the first 40% of the duration and finishes by its end (the order of
// the fan-out benchmark's KWOK pods). It returns the bytes written (task object and slices)
// over what they take at the end, and the longest time a change of the task's counts waited
// to be written (what a watcher of the task waits to see progress).
func simulatedRollout(nodes int, duration, step time.Duration, seed uint64) (ratio float64, gap time.Duration, writes int) {
	rng := rand.New(rand.NewPCG(seed, 1))
	start, finish := make([]time.Duration, nodes), make([]time.Duration, nodes)
	for i := range nodes {
		start[i] = time.Duration(rng.Int64N(int64(duration) * 4 / 10))
		finish[i] = start[i] + time.Second + time.Duration(rng.Int64N(int64(duration-start[i]-time.Second)))
	}
	task := newTask()
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("ip-10-0-%d-%d.us-west-2.compute.internal", i/250, i%250)
	}
	entries := func(at time.Duration) (out []ntv1.NodeStatus, st ntv1.NodeTaskStatus) {
		st.Run = 1
		for i := range nodes {
			e := ntv1.NodeStatus{Name: names[i], Phase: ntv1.NodePending}
			if at >= start[i] {
				s := metav1.NewTime(t0.Add(start[i]))
				e.Phase, e.Attempts, e.StartTime = ntv1.NodeRunning, 1, &s
				st.Running++
			}
			if at >= finish[i] {
				f := metav1.NewTime(t0.Add(finish[i]))
				e.Phase, e.ExitCode, e.FinishTime = ntv1.NodeSucceeded, ptr.To[int32](0), &f
				st.Running--
				st.Succeeded++
			}
			out = append(out, e)
		}
		st.Pending = int32(nodes) - st.Running - st.Succeeded
		return out, st
	}
	n := ResultSliceCount(nodes, 0, DefaultInlineResults)
	stored := make([][]ntv1.NodeStatus, n)
	mem := make([]SliceWrites, n)
	var storedRoot ntv1.NodeTaskStatus
	var lastRoot, pendingSince time.Time
	written := 0
	sliceSize := func(e []ntv1.NodeStatus) int { return 300 + nodesJSONLen(e, true) }
	for at := time.Duration(0); ; at += step {
		now := t0.Add(at)
		all, root := entries(at)
		end := at >= duration
		for i, part := range SplitResults(all, n) {
			if SameEntries(stored[i], part) {
				continue
			}
			if !end && SliceWriteWait(mem[i], 1, now, false, false) > 0 && !AllFinished(part, 1) {
				continue
			}
			stored[i], written, writes = part, written+sliceSize(part), writes+1
			if mem[i].Run != 1 {
				mem[i] = SliceWrites{Run: 1, First: now}
			}
			mem[i].Last = now
		}
		size := ObjectSize(task, &root)
		changed := StatusChanged(&storedRoot, &root)
		if changed && pendingSince.IsZero() {
			pendingSince = now
		}
		if changed && (end || lastRoot.IsZero() || now.Sub(lastRoot) >= ProgressInterval(size)) {
			gap = max(gap, now.Sub(pendingSince))
			pendingSince = time.Time{}
			storedRoot, lastRoot, written, writes = root, now, written+size, writes+1
		}
		if end {
			final := ObjectSize(task, &root)
			for i := range stored {
				final += sliceSize(stored[i])
			}
			return float64(written) / float64(final), gap, writes
		}
	}
}

// The budget keeps a rollout's bytes within a small multiple of its results' final size at
// 1000 and 5000 nodes over durations from the benchmark's to an hour, and a watcher of the
// task sees its counts move at least every 5 s.
func TestWriteBudgetOverARollout(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates rollouts of 5000 nodes")
	}
	for _, tc := range []struct {
		nodes          int
		duration, step time.Duration
		maxRatio       float64
	}{
		{1000, 15 * time.Second, 250 * time.Millisecond, 5},
		{1000, time.Minute, 250 * time.Millisecond, 5},
		{5000, 70 * time.Second, 250 * time.Millisecond, 5},
		{5000, 130 * time.Second, 250 * time.Millisecond, 5},
		{5000, 30 * time.Minute, 2 * time.Second, 8}, // grows with the logarithm of the duration
	} {
		ratio, gap, writes := simulatedRollout(tc.nodes, tc.duration, tc.step, 1)
		t.Logf("%d nodes over %s: %d writes, %.2fx the final size, longest wait for progress %s", tc.nodes, tc.duration, writes, ratio, gap)
		if ratio > tc.maxRatio {
			t.Errorf("%d nodes over %s: %.2fx the final size written, want at most %.0fx", tc.nodes, tc.duration, ratio, tc.maxRatio)
		}
		if gap > maxProgressInterval {
			t.Errorf("%d nodes over %s: a change of the counts waited %s to be written", tc.nodes, tc.duration, gap)
		}
	}
}
