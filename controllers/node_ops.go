package controllers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

// This file holds the side of node maintenance that talks to the API server: reading
// claims and drains for the planner, and carrying out its NodeOps, evictions and restarts.

// +kubebuilder:rbac:groups="",resources=nodes,verbs=patch
// +kubebuilder:rbac:groups="",resources=pods/eviction,verbs=create

// evictionTimeout bounds one eviction call.
const evictionTimeout = 10 * time.Second

// nodeWriteTTL bounds how long a node this process patched is read from its own write
// rather than the cache.
const nodeWriteTTL = time.Minute

// nodeWrites remembers the nodes this process patched until the cache shows the patch, as
// expectations does for pods: without it, a reconcile that runs before the cache catches up
// would see a node it claimed as free, and claim more nodes than rollout.maxConcurrent.
type nodeWrites struct {
	m sync.Map // node name → writtenNode
}

type writtenNode struct {
	node     *corev1.Node
	version  uint64
	deadline time.Time
}

func (w *nodeWrites) store(node *corev1.Node, now time.Time) {
	v, err := strconv.ParseUint(node.ResourceVersion, 10, 64)
	if err != nil {
		return // not a version we can compare: rely on the cache and the optimistic lock
	}
	trimmed, _ := TrimNode(node)
	w.m.Store(node.Name, writtenNode{node: trimmed.(*corev1.Node), version: v, deadline: now.Add(nodeWriteTTL)})
}

// overlay replaces the cached nodes that are older than this process's own writes.
func (w *nodeWrites) overlay(nodes map[string]*corev1.Node, now time.Time) {
	w.m.Range(func(k, v any) bool {
		name, wn := k.(string), v.(writtenNode)
		cached := nodes[name]
		if cached == nil || now.After(wn.deadline) {
			w.m.Delete(name)
			return true
		}
		if cv, err := strconv.ParseUint(cached.ResourceVersion, 10, 64); err != nil || cv >= wn.version {
			w.m.Delete(name)
			return true
		}
		nodes[name] = wn.node
		return true
	})
}

// observeMaintenance adds to obs what the planner needs for a task that claims nodes: the
// claims of tasks that no longer exist, and the drains of the nodes this task claimed.
func (r *NodeTaskReconciler) observeMaintenance(ctx context.Context, obs *rollout.Observed) error {
	task := obs.Task
	if !rollout.ClaimsNodes(task) {
		return nil
	}
	r.nodeWrites.overlay(obs.Nodes, obs.Now)
	// Nodes with an attempt of the current run need no drain: it ran before the attempt.
	// Attempt 0, spec.check's check before the claim, runs before the drain.
	run, _ := rollout.CurrentRun(&task.Status, obs.Revision)
	running := map[string]bool{}
	for _, pod := range obs.Pods {
		if ntv1.PodRun(pod) == run && ntv1.PodRevision(pod) == obs.Revision && !ntv1.IsRebootPod(pod) && ntv1.PodAttempt(pod) > 0 {
			running[pod.Spec.NodeName] = true
		}
	}
	for name, node := range obs.Nodes {
		c := rollout.ReadClaim(node)
		switch {
		case c == nil:
		case c.UID != task.UID:
			if claimIsStale(ctx, r.Client, c) {
				if obs.StaleClaims == nil {
					obs.StaleClaims = map[string]bool{}
				}
				obs.StaleClaims[name] = true
			}
		case task.Spec.Drain != nil && node.Spec.Unschedulable && !running[name]:
			d, err := r.observeDrain(ctx, task, node)
			if err != nil {
				return err
			}
			if obs.Drains == nil {
				obs.Drains = map[string]*rollout.DrainObservation{}
			}
			obs.Drains[name] = d
		}
	}
	return nil
}

// claimIsStale reports whether a claim names a task that no longer exists: none under its
// name, or another one (by UID). It reads the cache, where every task the manager has acted
// on is. A claim this operator did not write is never stale: it is respected.
func claimIsStale(ctx context.Context, reader client.Reader, c *rollout.NodeClaim) bool {
	ns, name, ok := cutTaskKey(c.Task)
	if !ok || c.UID == "" {
		return false
	}
	var other ntv1.NodeTask
	err := reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &other)
	return apierrors.IsNotFound(err) || (err == nil && other.UID != c.UID)
}

// cutTaskKey splits a claim's "namespace/name".
func cutTaskKey(key string) (ns, name string, ok bool) {
	ns, name, ok = strings.Cut(key, "/")
	return ns, name, ok && ns != "" && name != ""
}

// observeDrain lists the pods on the node that the drain must still evict, straight from
// the API server: the cache holds only the operator's own pods.
func (r *NodeTaskReconciler) observeDrain(ctx context.Context, task *ntv1.NodeTask, node *corev1.Node) (*rollout.DrainObservation, error) {
	var pods corev1.PodList
	if err := r.APIReader.List(ctx, &pods, client.MatchingFields{"spec.nodeName": node.Name}); err != nil {
		return nil, fmt.Errorf("listing pods on node %s: %w", node.Name, err)
	}
	spec := task.Spec.Drain
	sel := labels.Everything()
	if spec.PodSelector != nil {
		var err error
		if sel, err = metav1.LabelSelectorAsSelector(spec.PodSelector); err != nil {
			return nil, err // CEL and the planner's own check make this unreachable
		}
	}
	d := &rollout.DrainObservation{}
	var emptyDir []string
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !drained(pod) || !sel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		d.Pods = append(d.Pods, pod)
		if pod.DeletionTimestamp != nil {
			continue // on its way out: wait for it
		}
		if !spec.DeleteEmptyDirData && hasEmptyDir(pod) {
			emptyDir = append(emptyDir, pod.Namespace+"/"+pod.Name)
			continue
		}
		d.Evictable = append(d.Evictable, pod)
	}
	if len(emptyDir) > 0 {
		d.Blocked = fmt.Sprintf("%s with emptyDir data (%s): set spec.drain.deleteEmptyDirData to evict them",
			rollout.CountOf(len(emptyDir), "pod"), rollout.NameList(emptyDir))
	}
	if refused, _ := loadMark[map[string]string](&r.drainRefusals, task); len(d.Evictable) > 0 {
		d.Blocked = joinNonEmpty(d.Blocked, refused[node.Name])
	}
	return d, nil
}

// drained reports whether a drain evicts (or waits for) the pod: not finished, not a mirror
// pod, not a DaemonSet's (the DaemonSet controller would put it back), not a NodeTask's.
// A NodeTask's pod is one a NodeTask controls, not one that carries the operator's labels:
// anyone who can create a pod can set a label, and must not exempt it from every drain.
func drained(pod *corev1.Pod) bool {
	if rollout.PodFinished(pod) {
		return false
	}
	if _, mirror := pod.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		return false
	}
	if ref := metav1.GetControllerOf(pod); ref != nil && (ref.Kind == "DaemonSet" || isNodeTaskRef(ref)) {
		return false
	}
	return true
}

// isNodeTaskRef reports whether an owner reference names a NodeTask.
func isNodeTaskRef(ref *metav1.OwnerReference) bool {
	return ref.APIVersion == ntv1.GroupVersion.String() && ref.Kind == "NodeTask"
}

func hasEmptyDir(pod *corev1.Pod) bool {
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir != nil {
			return true
		}
	}
	return false
}

func joinNonEmpty(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// applyMaintenance carries out the plan's node changes, evictions and restart pods. A node
// changed meanwhile (a conflict) is left for the next pass, which sees the change.
func (r *NodeTaskReconciler) applyMaintenance(ctx context.Context, task *ntv1.NodeTask, obs *rollout.Observed, plan *rollout.Plan) error {
	logger := log.FromContext(ctx)
	for _, op := range plan.NodeOps {
		node := obs.Nodes[op.Node]
		if node == nil {
			continue
		}
		patch := rollout.NodePatch(task, node, op, obs.Now)
		if patch == nil {
			continue
		}
		written := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node.Name}}
		err := r.Client.Patch(ctx, written, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(rollout.FieldManager))
		switch {
		case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
			logger.V(1).Info("node changed meanwhile", "task", klog.KObj(task), "node", op.Node, "op", op.Kind)
			continue
		case err != nil:
			return fmt.Errorf("%s node %s: %w", op.Kind, op.Node, err)
		}
		r.nodeWrites.store(written, obs.Now)
		logger.Info("node "+string(op.Kind), "task", klog.KObj(task), "node", op.Node, "why", op.Why,
			"unschedulable", written.Spec.Unschedulable)
	}
	refused := map[string]string{}
	for _, pod := range plan.Evict {
		ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace}}
		// Bounded: the API server can hold an eviction for a while (a budget it has not
		// processed yet), and one pod must not hold up the task's reconcile.
		evictCtx, cancel := context.WithTimeout(ctx, evictionTimeout)
		err := r.Client.SubResource("eviction").Create(evictCtx, pod, ev)
		if err != nil && evictCtx.Err() != nil && ctx.Err() == nil {
			err = apierrors.NewTimeoutError(fmt.Sprintf("the eviction did not answer within %s", evictionTimeout), 0)
		}
		cancel()
		switch {
		case err == nil:
			logger.V(1).Info("evicted pod", "task", klog.KObj(task), "pod", klog.KObj(pod), "node", pod.Spec.NodeName)
		case apierrors.IsNotFound(err):
		case apierrors.IsTooManyRequests(err) || apierrors.IsForbidden(err) || apierrors.IsInternalError(err) || apierrors.IsTimeout(err):
			// Refused: a PodDisruptionBudget allows no disruption now, or something else
			// stands in the way. The drain waits, and tries again.
			refused[pod.Spec.NodeName] = joinNonEmpty(refused[pod.Spec.NodeName],
				fmt.Sprintf("eviction of pod %s/%s refused: %s", pod.Namespace, pod.Name, evictionMessage(err)))
		default:
			return fmt.Errorf("evicting pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
	}
	// What the next pass's drains say is refused: only this pass's refusals, so a message
	// goes once its eviction succeeds or its node no longer drains.
	if len(obs.Drains) > 0 {
		storeMark(&r.drainRefusals, task, refused)
	} else {
		r.drainRefusals.Delete(client.ObjectKeyFromObject(task))
	}
	var created []*corev1.Pod
	for _, req := range plan.Reboots {
		pod := r.Pods.RebootPod(task, plan.Run, plan.Revision, req)
		err := r.Client.Create(ctx, pod)
		if apierrors.IsAlreadyExists(err) {
			// Made by a pass whose status write was lost: the node is not restarted twice.
			if pod, err = r.existingPod(ctx, task, pod); err != nil {
				return fmt.Errorf("restart pod for node %s: %w", req.Node, err)
			}
		} else if err != nil {
			return fmt.Errorf("creating restart pod for node %s: %w", req.Node, err)
		}
		created = append(created, pod)
		logger.Info("restarting node", "task", klog.KObj(task), "node", req.Node, "pod", klog.KObj(pod), "bootID", req.BootID)
	}
	r.expectations.created(client.ObjectKeyFromObject(task), task.UID, created, obs.Now)
	return nil
}

// evictionMessage is the API server's refusal with its causes, which name the
// PodDisruptionBudget ("The disruption budget web needs 2 healthy pods and has 2 currently").
func evictionMessage(err error) string {
	msg := apiMessage(err)
	var status apierrors.APIStatus
	if errors.As(err, &status) && status.Status().Details != nil {
		for _, c := range status.Status().Details.Causes {
			if c.Message != "" {
				msg = joinNonEmpty(msg, c.Message)
			}
		}
	}
	return msg
}
