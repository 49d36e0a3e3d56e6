package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

// Writing a task's status under the write budget (rollout/write_budget.go): the task object
// with its counts and conditions, and, past a few hundred nodes, the per-node results in
// NodeResultSlices. Slices are written before the task object that counts them, so that a
// reader who finds status.resultSlices set finds the slices; slices the task no longer counts
// are deleted after it.

// sliceMemory is what this process remembers of a task's slices: the copy it last wrote of
// each (the cache may not show it yet, and only this process writes slices), when it wrote
// them in the current run, and the sequence of its last write.
type sliceMemory struct {
	written  map[int32]writtenSlice
	writes   map[int32]rollout.SliceWrites
	sequence int64
}

func (r *NodeTaskReconciler) sliceMemoryOf(task *ntv1.NodeTask) *sliceMemory {
	if m, ok := loadMark[*sliceMemory](&r.sliceMemories, task); ok {
		return m
	}
	m := &sliceMemory{written: map[int32]writtenSlice{}, writes: map[int32]rollout.SliceWrites{}}
	storeMark(&r.sliceMemories, task, m)
	return m
}

// writtenSlice is a slice as this process last wrote it.
type writtenSlice struct {
	slice *ntv1.NodeResultSlice
	// created is when this process created it, zero if it updated it.
	created time.Time
}

// cacheLag is how long a slice this process created may be missing from the cache before it
// counts as deleted.
const cacheLag = 10 * time.Second

// currentSlices returns the task's slices by index: the cache's, or the copy this process
// wrote last where the cache does not show that write yet.
func (r *NodeTaskReconciler) currentSlices(ctx context.Context, task *ntv1.NodeTask) (map[int32]*ntv1.NodeResultSlice, error) {
	var list ntv1.NodeResultSliceList
	if err := r.Client.List(ctx, &list, client.InNamespace(task.Namespace),
		client.MatchingLabels{ntv1.LabelTask: rollout.TaskLabelValue(task.Name)}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing result slices: %w", err)
	}
	mem := r.sliceMemoryOf(task)
	out := make(map[int32]*ntv1.NodeResultSlice, len(list.Items))
	for i := range list.Items {
		s := &list.Items[i]
		// By UID: the slices of a deleted task of the same name are not this task's.
		if metav1.IsControlledBy(s, task) && s.Name == ntv1.ResultSliceName(task.Name, s.Index) {
			out[s.Index] = s
		}
	}
	for i, w := range mem.written {
		switch c := out[i]; {
		case c == nil && (w.created.IsZero() || r.now().Sub(w.created) > cacheLag):
			// The cache showed it before (this process updated it), or has had time to
			// show the create: it was deleted behind the operator's back.
			delete(mem.written, i)
		case c == nil || c.ResourceVersion != w.slice.ResourceVersion:
			out[i] = w.slice
		}
	}
	return out, nil
}

// loadResults fills task.Status.Nodes from the task's slices when status.resultSlices says
// they hold the results, so that the planner reads one list of entries either way.
func (r *NodeTaskReconciler) loadResults(ctx context.Context, task *ntv1.NodeTask) error {
	if task.Status.ResultSlices == 0 {
		return nil
	}
	current, err := r.currentSlices(ctx, task)
	if err != nil {
		return err
	}
	from := make([]*ntv1.NodeResultSlice, 0, len(current))
	for _, s := range current {
		from = append(from, s)
	}
	task.Status.Nodes = ntv1.MergeResultSlices(&task.Status, from)
	return nil
}

// statusWrite is what one pass wrote.
type statusWrite struct {
	// task is whether the task object was written; slices how many slices were.
	task   bool
	slices int
	// after is the full status as stored after the pass (entries included).
	after ntv1.NodeTaskStatus
	// wait is when the pass should run again for what it held back; 0 if nothing.
	wait time.Duration
	// refused says the API server refused a write as a conflict: the pass should not be
	// repeated before the cache has the newer object.
	refused bool
}

// writeStatus writes st (entries included, in status.nodes' form) as far as the budget
// allows: old is the status the pass read, with the entries read from the slices. A
// conflict returns no error and writes nothing further: the newer object is on its way.
func (r *NodeTaskReconciler) writeStatus(ctx context.Context, task *ntv1.NodeTask, old, st *ntv1.NodeTaskStatus, now time.Time) (statusWrite, error) {
	n := rollout.ResultSliceCount(len(st.Nodes), old.ResultSlices, r.inlineResults())
	root := *st
	if n > 0 {
		root.Nodes, root.ResultSlices = nil, n
	}
	storedRoot := *old
	if old.ResultSlices > 0 {
		storedRoot.Nodes = nil
	}
	flush := rollout.WriteNow(&storedRoot, &root)
	out := statusWrite{after: *old}

	var current map[int32]*ntv1.NodeResultSlice
	if n > 0 || old.ResultSlices > 0 {
		var err error
		if current, err = r.currentSlices(ctx, task); err != nil {
			return out, err
		}
	}
	// On a flush the slices go first: the task object that counts them, or says Ready, must
	// find them written. Except when a run or generation starts and the slices stay: the
	// task must say which run it is before the slices hold that run's entries, or a lost
	// task write would leave entries of a run the task does not know (a slice written late
	// is a lost write, which the design tolerates). Progress goes the other way round too:
	// the task's counts first, as they are what watchers wait for.
	slicesFirst := flush && (root.ResultSlices != storedRoot.ResultSlices ||
		(root.Run == storedRoot.Run && root.ObservedGeneration == storedRoot.ObservedGeneration))
	if n > 0 && slicesFirst {
		wrote, wait, ok, err := r.writeSlices(ctx, task, st, n, current, true, now)
		out.slices, out.wait, out.refused = wrote, wait, !ok
		if err != nil {
			return out, err
		}
		if !ok {
			return r.afterWrites(ctx, task, out, storedRoot)
		}
	}
	if rollout.StatusChanged(&storedRoot, &root) {
		wait := r.writeDelay(task, rollout.ObjectSize(task, &root), now)
		if !flush && wait > 0 {
			out.wait = rollout.Soonest(out.wait, wait)
		} else {
			task.Status = root
			replaced := task.ResourceVersion
			// Update, not patch: the write carries the resourceVersion we read, so a status
			// computed from a stale cache is refused instead of overwriting newer results.
			if err := r.Client.Status().Update(ctx, task); err != nil {
				task.Status = *old
				if !apierrors.IsConflict(err) {
					return out, fmt.Errorf("writing status: %w", err)
				}
				log.FromContext(ctx).V(1).Info("status changed meanwhile; will reconcile again", "task", klog.KObj(task))
				out.refused = true
				// The slices this pass wrote hold results all the same: say so.
				return r.afterWrites(ctx, task, out, storedRoot)
			}
			storeMark(&r.lastWrite, task, now)
			if task.ResourceVersion != replaced {
				storeMark(&r.ownWrites, task, ownWrite{replaced: replaced, at: r.now()})
			}
			recordStatusWrite(task)
			out.task = true
			storedRoot = root
		}
	}
	if n > 0 && !slicesFirst && storedRoot.ResultSlices == n {
		wrote, wait, ok, err := r.writeSlices(ctx, task, st, n, current, flush, now)
		out.slices, out.wait, out.refused = out.slices+wrote, rollout.Soonest(out.wait, wait), !ok
		if err != nil {
			return out, err
		}
		if !ok {
			return r.afterWrites(ctx, task, out, storedRoot)
		}
	}
	// Slices the stored task no longer counts are read by nobody: delete them.
	for i, s := range current {
		if i >= storedRoot.ResultSlices {
			if err := r.Client.Delete(ctx, s, client.Preconditions{UID: &s.UID}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return out, fmt.Errorf("deleting result slice %s: %w", s.Name, err)
			}
			mem := r.sliceMemoryOf(task)
			delete(mem.written, i)
			delete(mem.writes, i)
		}
	}
	return r.afterWrites(ctx, task, out, storedRoot)
}

// afterWrites fills in out.after: the stored task's status with its entries, from the
// slices where they are.
func (r *NodeTaskReconciler) afterWrites(ctx context.Context, task *ntv1.NodeTask, out statusWrite, storedRoot ntv1.NodeTaskStatus) (statusWrite, error) {
	out.after = storedRoot
	if storedRoot.ResultSlices > 0 {
		if out.slices == 0 && !out.task {
			return out, nil
		}
		now, err := r.currentSlices(ctx, task)
		if err != nil {
			return out, err
		}
		// All of them, as loadResults reads them on the next pass.
		from := make([]*ntv1.NodeResultSlice, 0, len(now))
		for _, s := range now {
			from = append(from, s)
		}
		out.after.Nodes = ntv1.MergeResultSlices(&storedRoot, from)
	}
	return out, nil
}

// writeSlices writes the slices whose entries changed and whose turn it is (all of them on a
// flush), in parallel. ok is false when a write was refused (a conflict: the pass ends, and
// the next one reads the newer slice).
func (r *NodeTaskReconciler) writeSlices(ctx context.Context, task *ntv1.NodeTask, st *ntv1.NodeTaskStatus, n int32,
	current map[int32]*ntv1.NodeResultSlice, flush bool, now time.Time) (wrote int, wait time.Duration, ok bool, err error) {
	mem := r.sliceMemoryOf(task)
	parts := rollout.SplitResults(st.Nodes, n)
	waitsOnStored := rollout.WaitsOnStoredResults(task)
	var due []*ntv1.NodeResultSlice
	for i := range n {
		cur := current[i]
		if cur != nil && cur.Run == st.Run && cur.Slices == n && rollout.SameEntries(cur.Nodes, parts[i]) {
			continue
		}
		var failed, awaited bool
		if cur != nil {
			failed = rollout.NewlyFailed(cur.Nodes, cur.Run, parts[i], st.Run)
			awaited = waitsOnStored && rollout.NewlyFinished(cur.Nodes, cur.Run, parts[i], st.Run)
		}
		// A slice missing (deleted behind the operator's back) is written at once: its
		// entries are nowhere else.
		// A slice whose every node has its result of this run is written at once, once:
		// Ready then finds little left to write.
		if w := rollout.SliceWriteWait(mem.writes[i], st.Run, now, failed, awaited); cur != nil && !flush && w > 0 &&
			!rollout.AllFinished(parts[i], st.Run) {
			wait = rollout.Soonest(wait, w)
			continue
		}
		s := &ntv1.NodeResultSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: task.Namespace, Name: ntv1.ResultSliceName(task.Name, i),
				Labels: rollout.TaskPodLabels(task.Name)},
			Task: task.Name, Index: i, Slices: n, Run: st.Run, Nodes: parts[i],
		}
		if cur != nil {
			s.ResourceVersion, s.UID = cur.ResourceVersion, cur.UID
		} else if err := controllerutil.SetControllerReference(task, s, r.Client.Scheme()); err != nil {
			return 0, 0, false, err
		}
		if cur != nil {
			s.OwnerReferences = cur.OwnerReferences
		}
		due = append(due, s)
	}
	if len(due) == 0 {
		return 0, wait, true, nil
	}
	for _, s := range due {
		mem.sequence++
		s.Sequence = mem.sequence
		if c := current[s.Index]; c != nil && c.Sequence >= s.Sequence {
			// After a restart this process's count starts below the stored slices'.
			mem.sequence = c.Sequence + 1
			s.Sequence = mem.sequence
		}
	}
	var (
		mu       sync.Mutex
		firstErr error
		refused  bool
	)
	put := func(batch []*ntv1.NodeResultSlice) {
		work := make(chan *ntv1.NodeResultSlice)
		var wg sync.WaitGroup
		for range min(len(batch), max(1, r.CreateWorkers)) {
			wg.Go(func() {
				for s := range work {
					var err error
					if s.ResourceVersion == "" {
						err = r.Client.Create(ctx, s)
					} else {
						err = r.Client.Update(ctx, s)
					}
					mu.Lock()
					switch {
					case err == nil:
						w := writtenSlice{slice: s}
						if prev, ok := mem.written[s.Index]; ok && current[s.Index] == prev.slice {
							// An update of our own create the cache does not show yet.
							w.created = prev.created
						} else if current[s.Index] == nil {
							w.created = now
						}
						mem.written[s.Index] = w
						sw := mem.writes[s.Index]
						if sw.Run != st.Run {
							sw = rollout.SliceWrites{Run: st.Run, First: now}
						}
						sw.Last = now
						mem.writes[s.Index] = sw
						wrote++
						recordSliceWrite(s)
					case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err):
						// Someone else's change (a slice deleted behind our back, too), or a
						// write the cache and this memory do not show: read the slice afresh on
						// the next pass.
						delete(mem.written, s.Index)
						refused = true
					default:
						if firstErr == nil {
							firstErr = fmt.Errorf("writing result slice %s: %w", s.Name, err)
						}
					}
					mu.Unlock()
				}
			})
		}
		for _, s := range batch {
			work <- s
		}
		close(work)
		wg.Wait()
	}
	// New slices first: when the number of slices grows, the old ones are rewritten without
	// the nodes that move only once the new ones hold them, so that a failed create never
	// leaves an entry nowhere.
	var creates, updates []*ntv1.NodeResultSlice
	for _, s := range due {
		if s.ResourceVersion == "" {
			creates = append(creates, s)
		} else {
			updates = append(updates, s)
		}
	}
	put(creates)
	if firstErr == nil && !refused {
		put(updates)
	}
	if firstErr != nil {
		return wrote, wait, false, firstErr
	}
	if refused {
		log.FromContext(ctx).V(1).Info("a result slice changed meanwhile; will reconcile again", "task", klog.KObj(task))
		return wrote, rollout.Soonest(wait, time.Second), false, nil
	}
	return wrote, wait, true, nil
}

func (r *NodeTaskReconciler) inlineResults() int {
	if r.InlineResults > 0 {
		return r.InlineResults
	}
	return rollout.DefaultInlineResults
}
