package rollout

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The vocabulary between the decisions and the reconciler: what a plan asks the reconciler
// to do (pods to create and delete, node operations, restarts), what the reconciler
// observed beyond the cache (a drain) and did (the attempts of Outcome, in
// nodetask_status.go), and a Problem that stops the rollout. Every file of the package may
// use it; it uses none of them.

// NodeOpKind says what a NodeOp does.
type NodeOpKind string

const (
	// OpClaim takes the node's claim for the task, and cordons it if Cordon says so.
	OpClaim NodeOpKind = "Claim"
	// OpCordon cordons a node the task has claimed already.
	OpCordon NodeOpKind = "Cordon"
	// OpRelease removes the task's claim, and uncordons the node if Uncordon says so.
	OpRelease NodeOpKind = "Release"
)

// NodeOp is a change of one node's claim or schedulability.
type NodeOp struct {
	Node string
	Kind NodeOpKind
	// Cordon (with OpClaim) cordons the node, unless it is cordoned already.
	Cordon bool
	// Uncordon (with OpRelease) uncordons the node, if this claim cordoned it and no one
	// changed its schedulability since: NodePatch checks that against the claim and the
	// node's managedFields, so callers say only whether they want it.
	Uncordon bool
	// TakeOverCordon (with OpClaim) makes this task's claim the owner of a cordon that the
	// claim of a task that no longer exists made and left behind.
	TakeOverCordon bool
	// Why says why, for the log.
	Why string
}

// RebootRequest asks for the pod that restarts one node after its run succeeded.
type RebootRequest struct {
	PodRequest
	// BootID is the node's boot ID now; the node is back once it reports another.
	BootID string
}

// PodRequest asks for the pod of one attempt on one node.
type PodRequest struct {
	Node string
	// NodeUID is the UID of the Node object the attempt is for: a node deleted and created
	// again under its name is another machine, and gets other pods.
	NodeUID types.UID
	Attempt int32
}

// PodDeletion is a pod the plan lets go.
type PodDeletion struct {
	Pod *corev1.Pod
	// Force deletes the pod at once (grace period 0): no kubelet will confirm a graceful
	// deletion on a node that is gone or not Ready.
	Force bool
	// Why says why, for the log.
	Why string
}

// Problem is a condition that keeps the task from going on until a person acts, or, for
// Outcome.Waiting, a reason the rollout is slower than asked.
type Problem struct {
	// Reason is a CamelCase condition reason from the API package.
	Reason string
	// Message tells the user what happened and what to do.
	Message string
}

// Soonest returns the earlier of two requeue delays, where 0 means never.
func Soonest(a, b time.Duration) time.Duration {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// StartedAttempt is an attempt whose pod exists.
type StartedAttempt struct {
	PodRequest
	At time.Time
}

// RejectedAttempt is an attempt whose pod the API server refused.
type RejectedAttempt struct {
	PodRequest
	Message string
}

// DrainObservation is what a drain of one node sees: the pods it must still evict.
type DrainObservation struct {
	// Pods are the node's pods the drain waits for: those to evict, those terminating, and
	// those it may not evict (emptyDir data without drain.deleteEmptyDirData).
	Pods []*corev1.Pod
	// Evictable are the pods of Pods to evict now.
	Evictable []*corev1.Pod
	// Blocked says why the last eviction was refused (a PodDisruptionBudget, a pod with
	// emptyDir data), or "".
	Blocked string
}

// HealthResult is one evaluation of a rollout.healthChecks check, made by the reconciler
// (controllers/healthcheck) from the objects the check names.
type HealthResult struct {
	Name    string
	Healthy bool
	// Message says why the check did not hold, never what the objects hold.
	Message string
}
