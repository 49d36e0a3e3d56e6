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
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
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
)

// NodeTaskReconciler runs NodeTasks: it observes a task, its pods and the Windows nodes,
// lets ComputePlan decide, applies the plan, and writes the status ComputeStatus returns.
type NodeTaskReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// APIReader reads ConfigMaps straight from the API server, so that they are never cached.
	APIReader client.Reader
	// Recorder emits events about tasks.
	Recorder events.EventRecorder
	// Pods builds the pods and ConfigMaps.
	Pods PodBuilder
	// CreateWorkers is how many pods one reconcile creates in parallel.
	CreateWorkers int
	// MaxConcurrentReconciles is how many tasks are reconciled at once.
	MaxConcurrentReconciles int
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	expectations *expectations
	// scripts remembers the script ConfigMaps known to exist, by task UID and name: a task
	// deleted and created again under the same name must get its ConfigMap again.
	scripts sync.Map
}

// +kubebuilder:rbac:groups=nodetask.io,resources=nodetasks,verbs=get;list;watch
// +kubebuilder:rbac:groups=nodetask.io,resources=nodetasks/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=nodetask.io,resources=nodetasks/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;create
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one NodeTask one step closer to done.
func (r *NodeTaskReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	task := &ntv1.NodeTask{}
	if err := r.Client.Get(ctx, req.NamespacedName, task); err != nil {
		if apierrors.IsNotFound(err) {
			r.expectations.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !task.DeletionTimestamp.IsZero() {
		// Pods and ConfigMaps carry owner references: the garbage collector removes them.
		return ctrl.Result{}, nil
	}

	obs, awaiting, err := r.observe(ctx, task)
	if err != nil {
		return ctrl.Result{}, err
	}
	plan := ComputePlan(obs)
	out, err := r.apply(ctx, task, obs, plan)
	if err != nil {
		return ctrl.Result{}, err
	}
	st := ComputeStatus(obs, plan, out)
	r.emitEvents(task, plan, &st)
	if statusChanged(&task.Status, &st) {
		task.Status = st
		// Update, not patch: the write carries the resourceVersion we read, so a status
		// computed from a stale cache is refused instead of overwriting newer results.
		if err := r.Client.Status().Update(ctx, task); err != nil {
			if apierrors.IsConflict(err) {
				// The newer object is on its way to the cache and will trigger a reconcile.
				logger.V(1).Info("status changed meanwhile; will reconcile again", "task", klog.KObj(task))
				return ctrl.Result{}, nil
			}
			return ctrl.Result{}, fmt.Errorf("writing status: %w", err)
		}
	}

	requeue := plan.RequeueAfter
	if awaiting {
		requeue = soonest(requeue, 5*time.Second)
	}
	if meta.IsStatusConditionTrue(st.Conditions, ntv1.ConditionStalled) && !plan.BudgetExceeded {
		retry := stalledRetry
		if out.Problem != nil && out.Problem.Reason == ntv1.ReasonPodSecurityRejected && r.namespacePrivileged(ctx, task.Namespace) {
			// The namespace allows privileged pods now, but the API server's admission had
			// not seen the new label yet: try again shortly.
			retry = 2 * time.Second
		}
		requeue = soonest(requeue, retry)
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// namespacePrivileged reports whether the namespace's Pod Security level allows HostProcess pods.
func (r *NodeTaskReconciler) namespacePrivileged(ctx context.Context, name string) bool {
	var ns corev1.Namespace
	if err := r.Client.Get(ctx, types.NamespacedName{Name: name}, &ns); err != nil {
		return false
	}
	return ns.Labels[podSecurityEnforceLabel] == "privileged"
}

// observe reads what the planner needs from the cache. awaiting says whether created pods
// are still missing from the cache.
func (r *NodeTaskReconciler) observe(ctx context.Context, task *ntv1.NodeTask) (*Observed, bool, error) {
	now := r.now()
	var nodes corev1.NodeList
	// The objects are only read: skip the deep copy of thousands of nodes and pods.
	if err := r.Client.List(ctx, &nodes, client.MatchingLabels{OSLabel: WindowsOS}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, false, fmt.Errorf("listing nodes: %w", err)
	}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(task.Namespace),
		client.MatchingFields{podOwnerIndex: task.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, false, fmt.Errorf("listing pods: %w", err)
	}
	obs := &Observed{
		Task:     task,
		Revision: Revision(&task.Spec),
		Nodes:    make(map[string]*corev1.Node, len(nodes.Items)),
		Now:      now,
	}
	for i := range nodes.Items {
		obs.Nodes[nodes.Items[i].Name] = &nodes.Items[i]
	}
	cached := make([]*corev1.Pod, 0, len(pods.Items))
	for i := range pods.Items {
		if metav1.IsControlledBy(&pods.Items[i], task) {
			cached = append(cached, &pods.Items[i])
		}
	}
	var awaiting bool
	obs.Pods, awaiting = r.expectations.merge(client.ObjectKeyFromObject(task), task.UID, cached, now)
	return obs, awaiting, nil
}

// apply carries out the plan: it deletes the pods the plan lets go, then creates the new ones.
// Problems the user must fix come back in the Outcome; other errors are returned to retry.
func (r *NodeTaskReconciler) apply(ctx context.Context, task *ntv1.NodeTask, obs *Observed, plan *Plan) (Outcome, error) {
	logger := log.FromContext(ctx)
	for _, pod := range plan.Delete {
		opts := []client.DeleteOption{client.Preconditions{UID: &pod.UID}}
		if _, ok := obs.Nodes[pod.Spec.NodeName]; !ok {
			// No kubelet is left to confirm a graceful deletion; like the pod garbage
			// collector, remove the pod of a deleted node at once.
			opts = append(opts, client.GracePeriodSeconds(0))
		}
		err := r.Client.Delete(ctx, pod, opts...)
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return Outcome{}, fmt.Errorf("deleting pod %s: %w", pod.Name, err)
		}
	}
	if len(plan.Create) == 0 {
		return Outcome{}, nil
	}
	if task.Spec.Script != nil {
		if problem, err := r.ensureScript(ctx, task, plan.Revision); problem != nil || err != nil {
			return Outcome{Problem: problem}, err
		}
	}

	var (
		mu      sync.Mutex
		out     Outcome
		created []*corev1.Pod
		errs    []error
		stop    bool
	)
	work := make(chan PodRequest)
	var wg sync.WaitGroup
	for range max(1, min(r.CreateWorkers, len(plan.Create))) {
		wg.Go(func() {
			for req := range work {
				pod := r.Pods.Pod(task, req.Node, plan.Revision, req.Attempt)
				err := r.Client.Create(ctx, pod)
				mu.Lock()
				switch {
				case err == nil:
					out.Created = append(out.Created, req)
					created = append(created, pod)
				case apierrors.IsAlreadyExists(err):
					// A pod by this name is this attempt's pod: names are deterministic. Until
					// the cache shows it, it holds its rollout slot like a new one.
					out.Created = append(out.Created, req)
					created = append(created, pod)
				case isPodSecurityRejection(err):
					out.Problem, stop = &Problem{Reason: ntv1.ReasonPodSecurityRejected, Message: fmt.Sprintf(
						"Pod Security admission in namespace %q rejected the task's pods: HostProcess pods need a privileged namespace. "+
							"Label it with `kubectl label namespace %s pod-security.kubernetes.io/enforce=privileged` (only where every user "+
							"who can create pods there may run code as SYSTEM on the nodes). The API server said: %s",
						task.Namespace, task.Namespace, apiMessage(err))}, true
				case apierrors.IsInvalid(err) || apierrors.IsForbidden(err):
					out.Problem, stop = &Problem{Reason: ntv1.ReasonPodCreateFailed, Message: fmt.Sprintf(
						"the API server refused pod %s for node %s: %s", pod.Name, req.Node, apiMessage(err))}, true
				default:
					errs = append(errs, fmt.Errorf("creating pod for node %s: %w", req.Node, err))
				}
				mu.Unlock()
			}
		})
	}
	for _, req := range plan.Create {
		mu.Lock()
		halt := stop
		mu.Unlock()
		if halt {
			break
		}
		work <- req
	}
	close(work)
	wg.Wait()
	r.expectations.created(client.ObjectKeyFromObject(task), task.UID, created, obs.Now)
	if len(created) > 0 {
		logger.V(1).Info("created pods", "task", klog.KObj(task), "count", len(created), "revision", plan.Revision)
	}
	return out, errors.Join(errs...)
}

// ensureScript makes sure the revision's immutable script ConfigMap exists. The script is
// copied from spec.script.inline or from the referenced ConfigMap when the revision first
// starts, so every node of a revision runs the same text.
func (r *NodeTaskReconciler) ensureScript(ctx context.Context, task *ntv1.NodeTask, revision string) (*Problem, error) {
	key := types.NamespacedName{Namespace: task.Namespace, Name: ScriptConfigMapName(task.Name, revision)}
	memo := string(task.UID) + "/" + key.Name
	if _, ok := r.scripts.Load(memo); ok {
		return nil, nil
	}
	var existing corev1.ConfigMap
	err := r.APIReader.Get(ctx, key, &existing)
	if err == nil && metav1.IsControlledBy(&existing, task) {
		r.scripts.Store(memo, struct{}{})
		return nil, nil
	}
	if err == nil {
		// Left by a deleted task of the same name, not yet garbage collected.
		return nil, fmt.Errorf("script ConfigMap %s belongs to another object; waiting for it to be deleted", key.Name)
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("reading script ConfigMap: %w", err)
	}

	var script string
	switch s := task.Spec.Script; {
	case s.Inline != nil:
		script = *s.Inline
	case s.ConfigMapKeyRef != nil:
		var src corev1.ConfigMap
		ref := s.ConfigMapKeyRef
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: task.Namespace, Name: ref.Name}, &src)
		if apierrors.IsNotFound(err) {
			return &Problem{Reason: ntv1.ReasonConfigMapNotFound, Message: fmt.Sprintf(
				"ConfigMap %q, named by spec.script.configMapKeyRef, does not exist in namespace %q: create it with the script under key %q, or fix the reference",
				ref.Name, task.Namespace, ref.Key)}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading ConfigMap %s: %w", ref.Name, err)
		}
		text, ok := src.Data[ref.Key]
		if !ok {
			return &Problem{Reason: ntv1.ReasonConfigMapNotFound, Message: fmt.Sprintf(
				"ConfigMap %q has no key %q (it has: %s): add the script under that key, or fix spec.script.configMapKeyRef.key",
				ref.Name, ref.Key, nameList(slices.Sorted(maps.Keys(src.Data))))}, nil
		}
		script = text
	}
	if err := r.Client.Create(ctx, ScriptConfigMap(task, revision, script)); err != nil {
		// AlreadyExists too: the next reconcile reads it back and checks its owner.
		return nil, fmt.Errorf("creating script ConfigMap: %w", err)
	}
	r.scripts.Store(memo, struct{}{})
	return nil, nil
}

// emitEvents reports what changed: a revision starting, nodes failing, a stall, completion.
// Events summarize; there is never one event per succeeded node.
func (r *NodeTaskReconciler) emitEvents(task *ntv1.NodeTask, plan *Plan, st *ntv1.NodeTaskStatus) {
	if r.Recorder == nil {
		return
	}
	if plan.NewRevision {
		r.Recorder.Eventf(task, nil, corev1.EventTypeNormal, "RolloutStarted", "Start",
			"revision %s on %d nodes, at most %d at once", plan.Revision, st.Targets, plan.MaxConcurrent)
	}
	if len(plan.NewlyFailed) > 0 {
		r.Recorder.Eventf(task, nil, corev1.EventTypeWarning, "NodeFailed", "Run",
			"%d nodes failed: %s", len(plan.NewlyFailed), nameList(plan.NewlyFailed))
	}
	was := func(typ string) bool { return meta.IsStatusConditionTrue(task.Status.Conditions, typ) }
	if stalled := meta.FindStatusCondition(st.Conditions, ntv1.ConditionStalled); stalled != nil &&
		stalled.Status == metav1.ConditionTrue && (!was(ntv1.ConditionStalled) || plan.NewRevision) {
		r.Recorder.Eventf(task, nil, corev1.EventTypeWarning, stalled.Reason, "Run", "%s", stalled.Message)
	}
	if ready := meta.FindStatusCondition(st.Conditions, ntv1.ConditionReady); ready != nil &&
		ready.Status == metav1.ConditionTrue && (!was(ntv1.ConditionReady) || plan.NewRevision) {
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
	if r.CreateWorkers <= 0 {
		r.CreateWorkers = 16
	}
	ctx := context.Background()
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Pod{}, podOwnerIndex, func(o client.Object) []string {
		if ref := metav1.GetControllerOf(o); ref != nil && ref.APIVersion == ntv1.GroupVersion.String() && ref.Kind == "NodeTask" {
			return []string{ref.Name}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &ntv1.NodeTask{}, taskNodeIndex, func(o client.Object) []string {
		task := o.(*ntv1.NodeTask)
		keys := make([]string, 0, len(task.Status.Nodes)+1)
		if task.Spec.NewNodes != ntv1.NewNodesIgnore {
			keys = append(keys, allNodesKey)
		}
		for i := range task.Status.Nodes {
			keys = append(keys, task.Status.Nodes[i].Name)
		}
		return keys
	}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&ntv1.NodeTask{}).
		Owns(&corev1.Pod{}).
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
// changes of labels, taints, schedulability or readiness. Heartbeats and image lists do not.
var nodeChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		a, okA := e.ObjectOld.(*corev1.Node)
		b, okB := e.ObjectNew.(*corev1.Node)
		if !okA || !okB {
			return true
		}
		return !maps.Equal(a.Labels, b.Labels) || !slices.EqualFunc(a.Spec.Taints, b.Spec.Taints, sameTaint) ||
			a.Spec.Unschedulable != b.Spec.Unschedulable || nodeReady(a) != nodeReady(b)
	},
	GenericFunc: func(event.GenericEvent) bool { return false },
}

func isPodSecurityRejection(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "violates PodSecurity")
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
