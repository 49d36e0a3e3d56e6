package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

// claimJanitor lets go of the nodes a deleted task had claimed: it removes the claim and,
// if that claim cordoned the node and no one changed its schedulability since (rollout.NodePatch),
// uncordons it. A forged claim, naming a task that never existed, is removed the same way,
// and uncordons nothing the operator did not cordon. Without it, deleting a task in the middle
// of a node's maintenance would leave the node cordoned until another task took it over.
// (A task has no finalizer to do this itself: the operator never writes a task's metadata
// or spec, so that Argo CD and Flux see no drift.)
type claimJanitor struct {
	client client.Client
	now    func() time.Time
}

func (j *claimJanitor) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	node := &corev1.Node{}
	if err := j.client.Get(ctx, req.NamespacedName, node); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	c := rollout.ReadClaim(node)
	if c == nil || !claimIsStale(ctx, j.client, c) {
		return reconcile.Result{}, nil
	}
	// The gone task releases its own claim: rollout.NodePatch with the task's identity.
	ns, name, _ := cutTaskKey(c.Task)
	gone := &ntv1.NodeTask{}
	gone.Namespace, gone.Name, gone.UID = ns, name, c.UID
	patch := rollout.NodePatch(gone, node, rollout.NodeOp{Kind: rollout.OpRelease, Uncordon: true}, j.now())
	if patch == nil {
		return reconcile.Result{}, nil
	}
	err := j.client.Patch(ctx, &corev1.Node{ObjectMeta: node.ObjectMeta}, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(rollout.FieldManager))
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return reconcile.Result{Requeue: true}, nil
	}
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("releasing node %s: %w", node.Name, err)
	}
	log.FromContext(ctx).Info("released the claim of a deleted task", "node", klog.KObj(node), "task", c.Task)
	return reconcile.Result{}, nil
}

// nodesClaimedBy maps a deleted task to the nodes its claim is still on.
func (j *claimJanitor) nodesClaimedBy(ctx context.Context, o client.Object) []reconcile.Request {
	var nodes corev1.NodeList
	if err := j.client.List(ctx, &nodes, client.MatchingLabels{rollout.OSLabel: rollout.WindowsOS}, client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "listing nodes")
		return nil
	}
	var reqs []reconcile.Request
	for i := range nodes.Items {
		if c := rollout.ReadClaim(&nodes.Items[i]); c != nil && c.UID == o.GetUID() {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: nodes.Items[i].Name}})
		}
	}
	return reqs
}

// setupClaimJanitor registers the janitor: it looks at claimed nodes when they change (and
// once at start), and at the nodes of a task when the task is deleted.
func setupClaimJanitor(mgr ctrl.Manager, now func() time.Time) error {
	j := &claimJanitor{client: mgr.GetClient(), now: now}
	claimed := predicate.NewPredicateFuncs(func(o client.Object) bool {
		_, ok := o.GetAnnotations()[rollout.AnnotationClaim]
		return ok
	})
	onlyDeletes := predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false },
		UpdateFunc:  func(event.UpdateEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&corev1.Node{}, builder.WithPredicates(claimed)).
		Watches(&ntv1.NodeTask{}, handler.EnqueueRequestsFromMapFunc(j.nodesClaimedBy), builder.WithPredicates(onlyDeletes)).
		Named("nodeclaim").
		Complete(j)
}
