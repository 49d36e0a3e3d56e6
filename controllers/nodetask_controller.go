package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

const (
	// podOwnerIndex indexes pods by the name of the NodeTask that controls them.
	podOwnerIndex = ".metadata.controller"
	// taskNodeIndex indexes NodeTasks by the nodes they care about: the nodes in their status,
	// and allNodesKey for tasks that take on new nodes.
	taskNodeIndex = ".status.nodes.name"
	allNodesKey   = "*"
	// podSecurityEnforceLabel sets a namespace's Pod Security admission level.
	podSecurityEnforceLabel = "pod-security.kubernetes.io/enforce"
	// stalledRetry is how often a stalled task tries again: a missing ConfigMap may appear
	// at any time, and the operator does not watch ConfigMaps (it would have to cache them all).
	stalledRetry = time.Minute
	// createPassBudget is how long one pass feeds pod creations before it writes the status
	// and goes on in the next pass: a watcher sees the rollout start and progress while
	// thousands of pods are created.
	createPassBudget = 2 * time.Second
	// createsBeforeFirstWrite is the most pods the first pass of a run creates before the
	// run's status is written: more wait for the next pass.
	createsBeforeFirstWrite = 100
	// quotaRetry is how often a task whose pods a ResourceQuota refused tries again, in case
	// the quota frees up without one of its own pods finishing.
	quotaRetry = 10 * time.Second
)

// NodeTaskReconciler runs NodeTasks: it observes a task, its pods and the Windows nodes,
// lets ComputePlan decide, applies the plan, and writes the status ComputeStatus returns.
type NodeTaskReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// APIReader reads ConfigMaps, and pods whose names are taken, straight from the API
	// server, so that they are never cached.
	APIReader client.Reader
	// Recorder emits events about tasks.
	Recorder events.EventRecorder
	// Pods builds the pods and ConfigMaps.
	Pods rollout.PodBuilder
	// CreateWorkers is how many pods one reconcile creates in parallel.
	CreateWorkers int
	// MaxConcurrentReconciles is how many tasks are reconciled at once.
	MaxConcurrentReconciles int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Health evaluates rollout.healthChecks; nil leaves every check "not evaluated yet".
	Health *HealthChecks
	// InlineResults is how many per-node entries status.nodes holds before they move to
	// NodeResultSlices; 0 means rollout.DefaultInlineResults.
	InlineResults int

	expectations *expectations
	// lastWrite holds, by task key, a uidMark with when its status was last written.
	lastWrite sync.Map
	// cleaned holds, by task key, a uidMark with the run whose older script ConfigMaps are deleted.
	cleaned sync.Map
	// nodeWrites holds the nodes this process patched until the cache shows them.
	nodeWrites nodeWrites
	// drainRefusals holds, by task key, a uidMark with why the last pass's evictions were
	// refused, by node name.
	drainRefusals sync.Map
	// admissions holds, by task key, a uidMark with the API server's last verdict on the
	// task's pods (an admissionRecord).
	admissions sync.Map
	// ownWrites holds, by task key, a uidMark with the resourceVersion a status write of this
	// process replaced, until the cache shows a newer one.
	ownWrites sync.Map
	// sliceMemories holds, by task key, a uidMark with what this process wrote of the
	// task's NodeResultSlices (a *sliceMemory).
	sliceMemories sync.Map
	// healthMemos holds, by task key, a uidMark with the compiled health checks and their
	// last evaluation (a healthMemo).
	healthMemos sync.Map
}

// uidMark is a value remembered for one incarnation of a task: a task deleted and created
// again under its name starts with nothing remembered.
type uidMark[T any] struct {
	uid   types.UID
	value T
}

// loadMark returns the value remembered for the task, if it is for this incarnation.
func loadMark[T any](m *sync.Map, task *ntv1.NodeTask) (T, bool) {
	var zero T
	v, ok := m.Load(client.ObjectKeyFromObject(task))
	if !ok || v.(uidMark[T]).uid != task.UID {
		return zero, false
	}
	return v.(uidMark[T]).value, true
}

func storeMark[T any](m *sync.Map, task *ntv1.NodeTask, value T) {
	m.Store(client.ObjectKeyFromObject(task), uidMark[T]{uid: task.UID, value: value})
}

// +kubebuilder:rbac:groups=nodetask.io,resources=nodetasks,verbs=get;list;watch
// +kubebuilder:rbac:groups=nodetask.io,resources=nodetasks/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=nodetask.io,resources=nodetasks/finalizers,verbs=update
// +kubebuilder:rbac:groups=nodetask.io,resources=noderesultslices,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;create;delete
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one NodeTask one step closer to done: observe, plan, apply, then write
// the status under the write budget (writeStatus) and the events it implies.
func (r *NodeTaskReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	task := &ntv1.NodeTask{}
	if err := r.Client.Get(ctx, req.NamespacedName, task); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !task.DeletionTimestamp.IsZero() {
		// Pods, ConfigMaps and result slices carry owner references: the garbage collector
		// removes them.
		return ctrl.Result{}, nil
	}
	if r.cacheBehindOwnWrite(task) {
		// The event of our own write will bring the task again; a status computed from
		// this copy would be refused (a conflict) after a full pass over every node.
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	if err := r.loadResults(ctx, task); err != nil {
		return ctrl.Result{}, err
	}
	// The status as read, with the entries from the slices if they hold them.
	old := *task.Status.DeepCopy()

	obs, adm, awaiting, err := r.observe(ctx, task)
	if err != nil {
		return ctrl.Result{}, err
	}
	plan, recheck, err := r.planAdmitted(ctx, task, obs, adm)
	if err != nil {
		return ctrl.Result{}, err
	}
	out, err := r.apply(ctx, task, obs, plan)
	if err != nil {
		return ctrl.Result{}, err
	}
	if out.Problem != nil && out.Problem.Reason == ntv1.ReasonPodSecurityRejected {
		// The namespace's level changed since the dry run: remembered like its refusal.
		recheck = r.rememberAdmission(task, adm.key, rollout.Admission{Refused: out.Problem}, obs.Now)
	}
	if out.Waiting == nil {
		out.Waiting = obs.Admission.Waiting
	}
	st := rollout.ComputeStatus(obs, plan, out)

	requeue := rollout.Soonest(plan.RequeueAfter, recheck)
	if awaiting {
		requeue = rollout.Soonest(requeue, 5*time.Second)
	}
	if out.Waiting != nil {
		requeue = rollout.Soonest(requeue, quotaRetry)
	}

	w, err := r.writeStatus(ctx, task, &old, &st, obs.Now)
	if err != nil {
		return ctrl.Result{}, err
	}
	requeue = rollout.Soonest(requeue, w.wait)
	if out.Deferred > 0 {
		// The pods left for the next pass: at once, unless a write was refused (the cache
		// has not the newer object yet, or a slice's name is taken): then not in a hot loop.
		if w.refused {
			requeue = rollout.Soonest(requeue, time.Second)
		} else {
			requeue = rollout.Soonest(requeue, time.Millisecond)
		}
	}
	if w.task || w.slices > 0 {
		results := rollout.NewResults(&old, &w.after)
		recordResults(task, results)
		// Events describe what is now stored, never a write that failed.
		r.emitEvents(task, &old, plan, results)
	}

	if meta.IsStatusConditionTrue(st.Conditions, ntv1.ConditionStalled) && !plan.BudgetExceeded && recheck == 0 {
		// A missing ConfigMap may appear at any time. A refusal of the pods has its own,
		// growing, wait (recheck).
		requeue = rollout.Soonest(requeue, stalledRetry)
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// writeDelay returns how long to hold back a progress-only write of the task object of the
// given size: until rollout.ProgressInterval has passed since the last write.
func (r *NodeTaskReconciler) writeDelay(task *ntv1.NodeTask, size int, now time.Time) time.Duration {
	last, ok := loadMark[time.Time](&r.lastWrite, task)
	if !ok {
		return 0
	}
	return last.Add(rollout.ProgressInterval(size)).Sub(now)
}

// forget drops what this process remembers of a task that is gone.
func (r *NodeTaskReconciler) forget(key types.NamespacedName) {
	r.expectations.forget(key)
	forgetMetrics(key)
	r.lastWrite.Delete(key)
	r.cleaned.Delete(key)
	r.drainRefusals.Delete(key)
	r.admissions.Delete(key)
	r.healthMemos.Delete(key)
	r.sliceMemories.Delete(key)
	r.ownWrites.Delete(key)
}

// ownWrite is the resourceVersion a status write of this process replaced, and when.
type ownWrite struct {
	replaced string
	at       time.Time
}

// ownWriteWait is how long a pass waits for the cache to show this process's own write.
const ownWriteWait = 5 * time.Second

// cacheBehindOwnWrite reports whether the cached task is still the one this process's last
// status write replaced.
func (r *NodeTaskReconciler) cacheBehindOwnWrite(task *ntv1.NodeTask) bool {
	w, ok := loadMark[ownWrite](&r.ownWrites, task)
	if !ok {
		return false
	}
	// Within a few seconds only: an event that never comes must not stop the task.
	if task.ResourceVersion == w.replaced && r.now().Sub(w.at) < ownWriteWait {
		return true
	}
	r.ownWrites.Delete(client.ObjectKeyFromObject(task))
	return false
}

// observe reads what the planner needs from the cache, and the remembered admission verdict
// of the task's current run. awaiting says whether created pods are still missing from the cache.
func (r *NodeTaskReconciler) observe(ctx context.Context, task *ntv1.NodeTask) (obs *rollout.Observed, adm admissionView, awaiting bool, err error) {
	now := r.now()
	var nodes corev1.NodeList
	// The objects are only read: skip the deep copy of thousands of nodes and pods.
	if err := r.Client.List(ctx, &nodes, client.MatchingLabels{rollout.OSLabel: rollout.WindowsOS}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, adm, false, fmt.Errorf("listing nodes: %w", err)
	}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(task.Namespace),
		client.MatchingFields{podOwnerIndex: task.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, adm, false, fmt.Errorf("listing pods: %w", err)
	}
	obs = &rollout.Observed{
		Task:     task,
		Revision: rollout.Revision(&task.Spec),
		Nodes:    make(map[string]*corev1.Node, len(nodes.Items)),
		Now:      now,
	}
	run, _ := rollout.CurrentRun(&task.Status, obs.Revision)
	adm = admissionView{key: r.admissionKeyOf(ctx, task, run, obs.Revision)}
	obs.Admission, adm.recheck = r.recallAdmission(task, adm.key, now)
	for i := range nodes.Items {
		obs.Nodes[nodes.Items[i].Name] = &nodes.Items[i]
	}
	cached := make([]*corev1.Pod, 0, len(pods.Items))
	for i := range pods.Items {
		// By UID: the pods of a deleted task of the same name, which the garbage collector
		// has not removed yet, are not this task's.
		if metav1.IsControlledBy(&pods.Items[i], task) {
			cached = append(cached, &pods.Items[i])
		}
	}
	obs.Pods, awaiting = r.expectations.merge(client.ObjectKeyFromObject(task), task.UID, cached, now)
	if err := r.observeMaintenance(ctx, obs); err != nil {
		return nil, adm, false, err
	}
	r.observeHealth(ctx, obs)
	return obs, adm, awaiting, nil
}

// apply carries out the plan: it deletes the pods the plan lets go, makes sure the run's
// script ConfigMap exists, creates the new pods, and deletes script ConfigMaps no pod needs.
// Problems the user must fix come back in the Outcome; other errors are returned to retry.
func (r *NodeTaskReconciler) apply(ctx context.Context, task *ntv1.NodeTask, obs *rollout.Observed, plan *rollout.Plan) (rollout.Outcome, error) {
	logger := log.FromContext(ctx)
	for _, del := range plan.Delete {
		pod := del.Pod
		opts := []client.DeleteOption{client.Preconditions{UID: &pod.UID}}
		if del.Force {
			// No kubelet is left to confirm a graceful deletion: like the pod garbage
			// collector, remove the pod at once.
			opts = append(opts, client.GracePeriodSeconds(0))
		}
		err := r.Client.Delete(ctx, pod, opts...)
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return rollout.Outcome{}, fmt.Errorf("deleting pod %s: %w", pod.Name, err)
		}
		logger.V(1).Info("deleted pod", "task", klog.KObj(task), "pod", klog.KObj(pod), "node", pod.Spec.NodeName, "why", del.Why)
	}
	if err := r.cleanScripts(ctx, task, plan); err != nil {
		return rollout.Outcome{}, err
	}
	if err := r.applyMaintenance(ctx, task, obs, plan); err != nil {
		return rollout.Outcome{}, err
	}
	if (task.Spec.Script != nil || task.Spec.Check != nil) && (len(plan.Create) > 0 || plan.Unstarted > 0) {
		// Checked on every pass that starts pods or has pods waiting to start, never
		// remembered: someone may have deleted it, and pods would then hang in
		// ContainerCreating until their timeout.
		if problem, err := r.ensureScript(ctx, task, plan.Run, plan.Revision); problem != nil || err != nil {
			return rollout.Outcome{Problem: problem}, err
		}
	}
	if len(plan.Create) == 0 {
		return rollout.Outcome{}, nil
	}
	if plan.NewRun && len(plan.Create) > createsBeforeFirstWrite {
		// A large fan-out takes the API server seconds to minutes: let the new run's status
		// (every target pending) out first, so that watchers see the run start at once.
		return rollout.Outcome{Deferred: len(plan.Create)}, nil
	}
	out, err := r.createPods(ctx, task, obs, plan)
	if n := len(out.Started); n > 0 {
		logger.V(1).Info("created pods", "task", klog.KObj(task), "count", n, "run", plan.Run, "revision", plan.Revision)
	}
	return out, err
}

// createPods creates the plan's pods in parallel. The API server's refusals are sorted by
// whom they concern: Pod Security rejects every pod of the namespace (the task stalls), a
// full ResourceQuota frees up as pods finish (the task waits), anything else concerns that
// one pod (that node's attempt fails).
func (r *NodeTaskReconciler) createPods(ctx context.Context, task *ntv1.NodeTask, obs *rollout.Observed, plan *rollout.Plan) (rollout.Outcome, error) {
	var (
		mu      sync.Mutex
		out     rollout.Outcome
		created []*corev1.Pod
		errs    []error
		stop    bool
	)
	work := make(chan rollout.PodRequest)
	var wg sync.WaitGroup
	for range max(1, min(r.CreateWorkers, len(plan.Create))) {
		wg.Go(func() {
			for req := range work {
				pod := r.Pods.Pod(task, plan.Run, plan.Revision, req)
				err := r.Client.Create(ctx, pod)
				var existing *corev1.Pod
				if apierrors.IsAlreadyExists(err) {
					existing, err = r.existingPod(ctx, task, pod)
				}
				mu.Lock()
				switch {
				case err == nil && existing != nil:
					// This attempt's own pod, made by an earlier pass whose status write was
					// lost. Until the cache shows it, it holds its rollout slot like a new one.
					out.Started = append(out.Started, rollout.StartedAttempt{PodRequest: req, At: existing.CreationTimestamp.Time})
					created = append(created, existing)
				case err == nil:
					out.Started = append(out.Started, rollout.StartedAttempt{PodRequest: req, At: pod.CreationTimestamp.Time})
					created = append(created, pod)
				case isPodSecurityRejection(err):
					// The namespace's level changed since the dry run: the task stalls.
					out.Problem, _ = admissionProblem(task, err)
					stop = true
				case isQuotaRefusal(err):
					_, out.Waiting = admissionProblem(task, err)
					stop = true
				case apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsBadRequest(err) || errors.Is(err, errForeignPod):
					out.Rejected = append(out.Rejected, rollout.RejectedAttempt{PodRequest: req, Message: fmt.Sprintf(
						"the API server refused pod %s: %s", pod.Name, apiMessage(err))})
				default:
					errs = append(errs, fmt.Errorf("creating pod for node %s: %w", req.Node, err))
				}
				mu.Unlock()
			}
		})
	}
	deadline := time.Now().Add(createPassBudget)
	for i, req := range plan.Create {
		mu.Lock()
		halt := stop
		mu.Unlock()
		if halt {
			break
		}
		if time.Now().After(deadline) {
			out.Deferred = len(plan.Create) - i
			break
		}
		work <- req
	}
	close(work)
	wg.Wait()
	r.expectations.created(client.ObjectKeyFromObject(task), task.UID, created, obs.Now)
	return out, errors.Join(errs...)
}

// errForeignPod says a pod by the attempt's name exists and is not this task's.
var errForeignPod = errors.New("a pod by this name exists and is not controlled by this NodeTask")

// existingPod reads the pod that holds the attempt's name, and returns it if this task
// controls it: a name alone never makes a pod ours.
func (r *NodeTaskReconciler) existingPod(ctx context.Context, task *ntv1.NodeTask, want *corev1.Pod) (*corev1.Pod, error) {
	var pod corev1.Pod
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(want), &pod); err != nil {
		return nil, err
	}
	if !metav1.IsControlledBy(&pod, task) || pod.Labels[ntv1.LabelRun] != want.Labels[ntv1.LabelRun] ||
		pod.Labels[ntv1.LabelRevision] != want.Labels[ntv1.LabelRevision] || pod.Labels[ntv1.LabelAttempt] != want.Labels[ntv1.LabelAttempt] {
		return nil, errForeignPod
	}
	return &pod, nil
}

// ensureScript makes sure the run's immutable script ConfigMap exists. The script is
// copied from spec.script.inline or from the referenced ConfigMap when the run first
// starts, so every node of a run runs the same text; if someone deletes it, it is made
// again from the spec.
func (r *NodeTaskReconciler) ensureScript(ctx context.Context, task *ntv1.NodeTask, run int64, revision string) (*rollout.Problem, error) {
	key := types.NamespacedName{Namespace: task.Namespace, Name: rollout.ScriptConfigMapName(task, run, revision)}
	var existing corev1.ConfigMap
	err := r.APIReader.Get(ctx, key, &existing)
	if err == nil && metav1.IsControlledBy(&existing, task) {
		return nil, nil
	}
	if err == nil {
		return &rollout.Problem{Reason: ntv1.ReasonScriptConfigMapConflict, Message: fmt.Sprintf(
			"ConfigMap %q, where this run's script goes, exists and is not this NodeTask's: delete it, or change spec.rerunToken to start a run under another name",
			key.Name)}, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("reading script ConfigMap: %w", err)
	}

	var texts rollout.ScriptTexts
	if s := task.Spec.Script; s != nil {
		text, problem, err := r.scriptText(ctx, task, "spec.script", s.Inline, s.ConfigMapKeyRef)
		if problem != nil || err != nil {
			return problem, err
		}
		texts.Script = text
	}
	if c := task.Spec.Check; c != nil {
		text, problem, err := r.scriptText(ctx, task, "spec.check", c.Inline, c.ConfigMapKeyRef)
		if problem != nil || err != nil {
			return problem, err
		}
		texts.Check = text
	}
	if err := r.Client.Create(ctx, rollout.ScriptConfigMap(task, run, revision, texts)); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating script ConfigMap: %w", err)
	}
	return nil, nil
}

// scriptText returns the text of a script (field is spec.script or spec.check): inline, or
// the named key of a ConfigMap in the task's namespace.
func (r *NodeTaskReconciler) scriptText(ctx context.Context, task *ntv1.NodeTask, field string, inline *string,
	ref *ntv1.ConfigMapKeyReference) (string, *rollout.Problem, error) {
	if ref == nil {
		return ptr.Deref(inline, ""), nil, nil
	}
	var src corev1.ConfigMap
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: task.Namespace, Name: ref.Name}, &src)
	if apierrors.IsNotFound(err) {
		return "", &rollout.Problem{Reason: ntv1.ReasonConfigMapNotFound, Message: fmt.Sprintf(
			"ConfigMap %q, named by %s.configMapKeyRef, does not exist in namespace %q: create it with the script under key %q, or fix the reference",
			ref.Name, field, task.Namespace, ref.Key)}, nil
	}
	if err != nil {
		return "", nil, fmt.Errorf("reading ConfigMap %s: %w", ref.Name, err)
	}
	text, ok := src.Data[ref.Key]
	if !ok {
		// The other keys are not named: the task's author may not be allowed to read them.
		return "", &rollout.Problem{Reason: ntv1.ReasonConfigMapNotFound, Message: fmt.Sprintf(
			"ConfigMap %q has no key %q: add the script under that key, or fix %s.configMapKeyRef.key",
			ref.Name, ref.Key, field)}, nil
	}
	return text, nil, nil
}

// cleanScripts deletes the task's script ConfigMaps of other runs once no pod of another
// run is unfinished (only an unstarted pod still needs its script). It lists them once per
// run, not on every pass.
func (r *NodeTaskReconciler) cleanScripts(ctx context.Context, task *ntv1.NodeTask, plan *rollout.Plan) error {
	if plan.OtherRunsInFlight || plan.Run <= 1 {
		return nil
	}
	if done, ok := loadMark[int64](&r.cleaned, task); ok && done == plan.Run {
		return nil
	}
	var cms corev1.ConfigMapList
	if err := r.APIReader.List(ctx, &cms, client.InNamespace(task.Namespace),
		client.MatchingLabels{ntv1.LabelTask: rollout.TaskLabelValue(task.Name), ntv1.LabelManagedBy: ntv1.ManagedByValue}); err != nil {
		return fmt.Errorf("listing script ConfigMaps: %w", err)
	}
	current := rollout.ScriptConfigMapName(task, plan.Run, plan.Revision)
	for i := range cms.Items {
		cm := &cms.Items[i]
		if cm.Name == current || !metav1.IsControlledBy(cm, task) {
			continue
		}
		if err := r.Client.Delete(ctx, cm, client.Preconditions{UID: &cm.UID}); client.IgnoreNotFound(err) != nil && !apierrors.IsConflict(err) {
			return fmt.Errorf("deleting script ConfigMap %s: %w", cm.Name, err)
		}
	}
	storeMark(&r.cleaned, task, plan.Run)
	return nil
}

// emitEvents reports what the status write just stored: a run starting, nodes failing, a
// stall, completion. results are the node results the write newly stored (rollout.NewResults).
// Events summarize; there is never one event per succeeded node.
func (r *NodeTaskReconciler) emitEvents(task *ntv1.NodeTask, old *ntv1.NodeTaskStatus, plan *rollout.Plan, results []ntv1.NodeStatus) {
	if r.Recorder == nil {
		return
	}
	st := &task.Status
	newRun := st.Run != old.Run
	if newRun {
		r.Recorder.Eventf(task, nil, corev1.EventTypeNormal, "RolloutStarted", "Start",
			"run %d (revision %s) on %d nodes, at most %d at once", st.Run, st.Revision, st.Targets, plan.MaxConcurrent)
	}
	if failed := rollout.FailedNames(results); len(failed) > 0 {
		r.Recorder.Eventf(task, nil, corev1.EventTypeWarning, "NodeFailed", "Run",
			"%s failed: %s", rollout.NodeCount(len(failed)), rollout.NameList(failed))
	}
	was := func(typ string) bool { return meta.IsStatusConditionTrue(old.Conditions, typ) }
	if stalled := meta.FindStatusCondition(st.Conditions, ntv1.ConditionStalled); stalled != nil &&
		stalled.Status == metav1.ConditionTrue && (!was(ntv1.ConditionStalled) || newRun) {
		r.Recorder.Eventf(task, nil, corev1.EventTypeWarning, stalled.Reason, "Run", "%s", stalled.Message)
	}
	if ready := meta.FindStatusCondition(st.Conditions, ntv1.ConditionReady); ready != nil &&
		ready.Status == metav1.ConditionTrue && (!was(ntv1.ConditionReady) || newRun) {
		r.Recorder.Eventf(task, nil, corev1.EventTypeNormal, "Completed", "Run", "%s", ready.Message)
	}
}

func (r *NodeTaskReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// SetupWithManager registers the controller, its indexes and its watches.
func (r *NodeTaskReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.expectations = newExpectations()
	registerMetrics()
	if r.CreateWorkers <= 0 {
		r.CreateWorkers = 16
	}
	ctx := context.Background()
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Pod{}, podOwnerIndex, func(o client.Object) []string {
		if ref := metav1.GetControllerOf(o); ref != nil && isNodeTaskRef(ref) {
			return []string{ref.Name}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &ntv1.NodeTask{}, taskNodeIndex, func(o client.Object) []string {
		task := o.(*ntv1.NodeTask)
		keys := make([]string, 0, len(task.Status.Nodes)+1)
		// A task whose entries are in slices is not indexed by its nodes' names: it hears of
		// every node, as it would of new nodes.
		if task.Spec.NewNodes != ntv1.NewNodesIgnore || task.Status.ResultSlices > 0 {
			keys = append(keys, allNodesKey)
		}
		for i := range task.Status.Nodes {
			keys = append(keys, task.Status.Nodes[i].Name)
		}
		return keys
	}); err != nil {
		return err
	}
	if err := setupClaimJanitor(mgr, r.now); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&ntv1.NodeTask{}).
		Owns(&corev1.Pod{}).
		// Only this controller writes slices: it hears of one deleted behind its back.
		Owns(&ntv1.NodeResultSlice{}, builder.WithPredicates(predicate.Funcs{
			CreateFunc:  func(event.CreateEvent) bool { return false },
			UpdateFunc:  func(event.UpdateEvent) bool { return false },
			GenericFunc: func(event.GenericEvent) bool { return false },
		})).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.tasksForNode), builder.WithPredicates(nodeChanged)).
		// A namespace labelled for privileged pods unblocks the tasks Pod Security stalled there.
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.tasksInNamespace), builder.WithPredicates(labelsChanged)).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(1, r.MaxConcurrentReconciles)}).
		Named("nodetask").
		Complete(r)
}

// tasksForNode maps a node event to the tasks it concerns, through an index rather than a
// scan of every task: tasks that list the node in their status, and tasks that take on new nodes.
func (r *NodeTaskReconciler) tasksForNode(ctx context.Context, o client.Object) []ctrl.Request {
	var reqs []ctrl.Request
	seen := map[types.NamespacedName]bool{}
	for _, key := range []string{o.GetName(), allNodesKey} {
		var tasks ntv1.NodeTaskList
		if err := r.Client.List(ctx, &tasks, client.MatchingFields{taskNodeIndex: key}, client.UnsafeDisableDeepCopy); err != nil {
			log.FromContext(ctx).Error(err, "listing tasks for node", "node", o.GetName())
			continue
		}
		for i := range tasks.Items {
			nn := client.ObjectKeyFromObject(&tasks.Items[i])
			if !seen[nn] {
				seen[nn] = true
				reqs = append(reqs, ctrl.Request{NamespacedName: nn})
			}
		}
	}
	return reqs
}

// tasksInNamespace maps a namespace event to the tasks in that namespace.
func (r *NodeTaskReconciler) tasksInNamespace(ctx context.Context, o client.Object) []ctrl.Request {
	var tasks ntv1.NodeTaskList
	if err := r.Client.List(ctx, &tasks, client.InNamespace(o.GetName()), client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "listing tasks in namespace", "namespace", o.GetName())
		return nil
	}
	reqs := make([]ctrl.Request, len(tasks.Items))
	for i := range tasks.Items {
		reqs[i] = ctrl.Request{NamespacedName: client.ObjectKeyFromObject(&tasks.Items[i])}
	}
	return reqs
}

// labelsChanged passes only label updates (Pod Security levels are labels); creations and
// deletions of namespaces concern no existing task.
var labelsChanged = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return !maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels())
	},
}

// nodeChanged passes node events that can change a plan: a node appearing or going, and
// changes of labels, the operator's annotations (claims), taints, schedulability, readiness
// or boot ID (a restart). Heartbeats and image lists do not.
var nodeChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		a, okA := e.ObjectOld.(*corev1.Node)
		b, okB := e.ObjectNew.(*corev1.Node)
		if !okA || !okB {
			return true
		}
		return !maps.Equal(a.Labels, b.Labels) || !slices.EqualFunc(a.Spec.Taints, b.Spec.Taints, sameTaint) ||
			a.Spec.Unschedulable != b.Spec.Unschedulable || rollout.NodeReady(a) != rollout.NodeReady(b) ||
			a.Status.NodeInfo.BootID != b.Status.NodeInfo.BootID ||
			a.Annotations[rollout.AnnotationClaim] != b.Annotations[rollout.AnnotationClaim] ||
			a.Annotations[rollout.AnnotationCordonedBy] != b.Annotations[rollout.AnnotationCordonedBy]
	},
	GenericFunc: func(event.GenericEvent) bool { return false },
}

func isPodSecurityRejection(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "violates PodSecurity")
}

// isQuotaRefusal reports whether a ResourceQuota refused a pod: it frees up as pods finish.
func isQuotaRefusal(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "exceeded quota")
}

func apiMessage(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return status.Status().Message
	}
	return err.Error()
}

func sameTaint(a, b corev1.Taint) bool {
	return a.Key == b.Key && a.Value == b.Value && a.Effect == b.Effect
}
