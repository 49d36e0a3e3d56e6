package rollout

import (
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// The maintenance around one node's run, for a task that cordons, drains or reboots:
//
//	Pending ──claim(+cordon)──▶ Pending(Draining|DrainBlocked) ──drained──▶ Running
//	   │ NodeBusy: another task's claim       │ drain.timeoutSeconds ──▶ Failed(DrainTimeout)
//	Running ──success, reboot wanted──▶ Rebooting ──new bootID, Ready──▶ Succeeded(Rebooted)
//	                                        │   (the host restarted: the restart pod's phase no longer matters)
//	                                        ├── restart pod failed, same bootID for rebootFailureGrace ──▶ Failed(RebootFailed)
//	                                        └── rebootTimeoutSeconds ──▶ Failed(RebootTimeout)
//	final result stored ──▶ release: uncordon (if this claim cordoned it and no one changed its
//	                        schedulability since, and it succeeded or drain.uncordonOnFailure)
//	                        and remove the claim
//
// Every step's state is kept where a restarted manager reads it back, never in memory: the
// claim (with its time) and the cordon mark are node annotations, the cordon is the node's
// own spec.unschedulable, the drain is the pods still on the node, the restart is a pod
// with a deterministic name that records the boot ID it restarted, and the result is the
// status entry. So a kill -9 at any step resumes at that step, a node is restarted at most
// once per run, and a node this task cordoned is uncordoned once its success is stored.

// Node annotations through which tasks coordinate their work on one node.
const (
	// AnnotationClaim holds the claim of the task that cordons, drains or restarts the
	// node: JSON with the task's namespace/name, its UID and the claim's time.
	AnnotationClaim = "nodetask.io/claim"
	// AnnotationCordonedBy holds the UID of the task that cordoned the node, for people
	// reading the node (a failed node stays cordoned). The operator never obeys it: what
	// decides an uncordon is the claim's own record and the operator's ownership of
	// spec.unschedulable (OperatorCordoned). A mark that no longer matches is dropped.
	AnnotationCordonedBy = "nodetask.io/cordoned-by"
)

// drainPoll is how often a draining node is looked at again: the evicted pods are not the
// operator's, so no watch event says when they are gone.
const drainPoll = 5 * time.Second

// rebootFailureGrace is how long a restart pod reported Failed, on a node that still
// reports the boot ID from before the restart, waits for a new boot ID before the restart
// counts as failed. After a boot the kubelet reports pod status (its status manager, on
// change) and node status (every nodeStatusUpdateFrequency, 10 s by default, retried up to
// 5 times) from two loops, in either order: a pod killed by the shutdown can be reported
// Failed a few seconds before the node's new boot ID. A minute covers the node status
// interval several times over, and is short next to a restart's own minutes. It counts from
// when the kubelet reported the failure (the pod's latest condition change), not from the
// container's end, which the kubelet may date from before the host went down.
const rebootFailureGrace = time.Minute

// NodeClaim is the value of AnnotationClaim.
type NodeClaim struct {
	// Task is the claiming task's namespace/name, for people reading the node.
	Task string `json:"task"`
	// UID is the claiming task's UID: a task re-created under the same name is another task.
	UID types.UID `json:"uid"`
	// Since is when the claim was taken; the drain's timeout counts from it.
	Since metav1.Time `json:"since"`
	// Cordoned says this claim made the node unschedulable: the node was schedulable when
	// it was claimed, and the operator cordoned it. Only then does the release uncordon it.
	Cordoned bool `json:"cordoned,omitempty"`
}

// ReadClaim returns the node's claim, or nil when it has none. A value that does not parse
// is someone's claim all the same: it comes back with an empty UID, which no task has.
func ReadClaim(node *corev1.Node) *NodeClaim {
	if node == nil {
		return nil
	}
	v, ok := node.Annotations[AnnotationClaim]
	if !ok {
		return nil
	}
	var c NodeClaim
	if err := json.Unmarshal([]byte(v), &c); err != nil {
		return &NodeClaim{Task: v}
	}
	return &c
}

// ClaimValue is the AnnotationClaim value of the task's claim taken at the given time.
func ClaimValue(task *ntv1.NodeTask, at time.Time, cordoned bool) string {
	b, err := json.Marshal(NodeClaim{Task: task.Namespace + "/" + task.Name, UID: task.UID, Since: metav1.NewTime(at), Cordoned: cordoned})
	if err != nil {
		panic(err) // plain strings and a time
	}
	return string(b)
}

// FieldManager is the field manager of the operator's writes to nodes. The API server
// records in a node's managedFields which manager last set spec.unschedulable, and hands
// the field to whoever changes it next: so the operator tells its own cordon from one a
// person made after it (kubectl uncordon, then cordon) without trusting any annotation.
const FieldManager = "nodetask-operator"

// OperatorCordoned reports whether the node is unschedulable by the operator's own write:
// no one changed spec.unschedulable since the operator set it.
func OperatorCordoned(node *corev1.Node) bool {
	if !node.Spec.Unschedulable {
		return false
	}
	for _, mf := range node.ManagedFields {
		if mf.Manager != FieldManager || mf.FieldsV1 == nil {
			continue
		}
		var fields struct {
			Spec map[string]json.RawMessage `json:"f:spec"`
		}
		if json.Unmarshal(mf.FieldsV1.Raw, &fields) == nil && fields.Spec["f:unschedulable"] != nil {
			return true
		}
	}
	return false
}

// maintenance is what a task asks around each node's run.
type maintenance struct {
	uid types.UID
	// claims: the task cordons, drains or reboots, and so claims each node it works on.
	claims            bool
	cordon            bool
	drain             bool
	drainTimeout      time.Duration
	uncordonOnFailure bool
	reboot            ntv1.RebootPolicy
	rebootTimeout     time.Duration
}

// ClaimsNodes reports whether the task claims the nodes it works on: it cordons, drains or
// restarts them.
func ClaimsNodes(task *ntv1.NodeTask) bool { return newMaintenance(task).claims }

// RestartsNodes reports whether the task may restart its nodes (reboot IfRequired or Always).
func RestartsNodes(task *ntv1.NodeTask) bool { return newMaintenance(task).reboot != ntv1.RebootNever }

func newMaintenance(task *ntv1.NodeTask) maintenance {
	spec := &task.Spec
	m := maintenance{
		uid:           task.UID,
		cordon:        spec.Cordon || spec.Drain != nil,
		drain:         spec.Drain != nil,
		reboot:        spec.Reboot,
		rebootTimeout: 1800 * time.Second,
	}
	if m.reboot == "" {
		m.reboot = ntv1.RebootNever
	}
	m.claims = m.cordon || m.reboot != ntv1.RebootNever
	if spec.RebootTimeoutSeconds != nil {
		m.rebootTimeout = time.Duration(*spec.RebootTimeoutSeconds) * time.Second
	}
	if d := spec.Drain; d != nil {
		m.drainTimeout = ntv1.DefaultDrainTimeoutSeconds * time.Second
		if d.TimeoutSeconds != nil {
			m.drainTimeout = time.Duration(*d.TimeoutSeconds) * time.Second
		}
		m.uncordonOnFailure = d.UncordonOnFailure
	}
	return m
}

// claimState is how a node's claim stands for the task.
type claimState int

const (
	claimFree    claimState = iota // no claim, or one left by a task that no longer exists
	claimOurs                      // this task holds the claim
	claimForeign                   // another task holds it
)

func (m *maintenance) claimOf(node *corev1.Node, stale bool) (claimState, *NodeClaim) {
	c := ReadClaim(node)
	switch {
	case c == nil || stale:
		return claimFree, c
	case c.UID == m.uid:
		return claimOurs, c
	default:
		return claimForeign, c
	}
}

// rebootWanted reports whether a node whose attempt succeeded with entry e is restarted.
func (m *maintenance) rebootWanted(e *ntv1.NodeStatus) bool {
	switch m.reboot {
	case ntv1.RebootAlways:
		return true
	case ntv1.RebootIfRequired:
		return e.Reason == ntv1.NodeReasonRebootRequired
	}
	return false
}

// maintainInput is what one node's maintenance step looks at beyond the lifecycle's input.
type maintainInput struct {
	nodeInput
	// storedFinal: the stored entry holds this run's final result.
	storedFinal bool
	// busy: a pod of the task on the node has not finished.
	busy bool
	// restartPod is the current run's restart pod, or nil.
	restartPod *corev1.Pod
	// claim is how the node's claim stands for the task; held is the claim itself.
	claim claimState
	held  *NodeClaim
	// verdict is shouldStart's answer for the node.
	verdict startVerdict
}

// next is the maintenance part of one node's step, after the lifecycle worked out the
// node's entry e from its pods: it turns a success into a restart where one is wanted,
// takes the node's claim, cordons and drains it before its run (as shouldStart found
// wanting), starts the run within the claim's slot, and releases the node once its result
// is stored. It returns the node's entry, its action and when to look again.
func (m *maintenance) next(lc *lifecycle, in maintainInput, e ntv1.NodeStatus) (ntv1.NodeStatus, nodeAction, time.Duration) {
	current := e.Run == lc.run
	done := e.Phase == ntv1.NodeSucceeded || e.Phase == ntv1.NodeFailed

	// The restart after a successful run.
	if current && !in.storedFinal && in.node != nil &&
		(e.Phase == ntv1.NodeRebooting || (e.Phase == ntv1.NodeSucceeded && m.rebootWanted(&e))) {
		return m.rebootStep(lc, in, e)
	}

	if in.claim == claimOurs {
		switch {
		case current && in.storedFinal && done && !in.busy:
			// Released only once the result is stored: a restarted manager then never finds
			// a released node whose result it must work out again.
			return e, release(in.name, e.Phase == ntv1.NodeSucceeded || m.uncordonOnFailure, "its work is done"), 0
		case !in.target && !in.busy && e.Phase != ntv1.NodeRunning:
			return e, release(in.name, true, "it is no longer a target"), 0
		}
	}

	switch v := in.verdict; v.hold {
	case mayStart: // within this task's claim: shouldStart holds back a node without one
		return e, nodeAction{kind: actStartClaimed, start: v.request}, 0
	case holdUnchecked:
		// The check before the claim is a pod like any other: it needs a slot and an open gate.
		return e, nodeAction{kind: actStart, start: v.request}, 0
	case holdUnclaimed:
		// The claim comes first; the next pass, which sees it, cordons, drains and starts.
		return e, nodeAction{kind: actClaim, op: NodeOp{Node: in.name, Kind: OpClaim, Cordon: m.cordon,
			TakeOverCordon: in.staleClaim && in.held != nil && in.held.Cordoned && OperatorCordoned(in.node),
			Why:            "the task cordons, drains or restarts its nodes"}}, 0
	case holdClaimedElsewhere:
		if current && e.Phase == ntv1.NodePending {
			e.Reason = ntv1.NodeReasonNodeBusy
		}
	case holdUncordoned:
		return e, nodeAction{kind: actCordon, op: NodeOp{Node: in.name, Kind: OpCordon, Why: "the task cordons its nodes"}}, 0
	case holdUndrained:
		return m.drainStep(lc, in, e)
	}
	return e, nodeAction{}, 0
}

func release(node string, uncordon bool, why string) nodeAction {
	return nodeAction{kind: actRelease, op: NodeOp{Node: node, Kind: OpRelease, Uncordon: uncordon, Why: why}}
}

// drainStep evicts the node's pods before its run's first attempt; shouldStart lets the
// attempt start once none is left. A drain that outlasts drain.timeoutSeconds fails the node.
func (m *maintenance) drainStep(lc *lifecycle, in maintainInput, e ntv1.NodeStatus) (ntv1.NodeStatus, nodeAction, time.Duration) {
	if e.Run != lc.run {
		// The node showed its previous run's result until now: the drain is this run's.
		e = ntv1.NodeStatus{Name: in.name, Phase: ntv1.NodePending, Run: lc.run}
	}
	if in.drain == nil {
		return e, nodeAction{}, drainPoll // not looked at in this pass
	}
	deadline := in.held.Since.Add(m.drainTimeout)
	if !lc.now.Before(deadline) {
		e.Phase, e.Reason, e.ExitCode = ntv1.NodeFailed, ntv1.NodeReasonDrainTimeout, nil
		e.FinishTime = &metav1.Time{Time: deadline}
		e.Output = fmt.Sprintf("the drain did not finish within drain.timeoutSeconds (%ds): %s", int(m.drainTimeout/time.Second),
			drainSummary(in.drain))
		return e, nodeAction{}, 0
	}
	e.Reason, e.Output = ntv1.NodeReasonDraining, drainSummary(in.drain)
	if in.drain.Blocked != "" {
		e.Reason = ntv1.NodeReasonDrainBlocked
	}
	var act nodeAction
	if len(in.drain.Evictable) > 0 {
		// Pods that are only terminating, or that may not be evicted, are waited for: the
		// node then asks for nothing in this pass.
		act = nodeAction{kind: actDrain, evict: in.drain.Evictable}
	}
	return e, act, min(drainPoll, deadline.Sub(lc.now))
}

// drainSummary says what a drain still waits for.
func drainSummary(o *DrainObservation) string {
	names := make([]string, 0, len(o.Pods))
	for _, p := range o.Pods {
		names = append(names, p.Namespace+"/"+p.Name)
	}
	s := fmt.Sprintf("%d pods left to evict: %s", len(o.Pods), NameList(names))
	if o.Blocked != "" {
		s += "; " + o.Blocked
	}
	return s
}

// rebootStep restarts a node whose run succeeded, and follows it until the node is back.
func (m *maintenance) rebootStep(lc *lifecycle, in maintainInput, e ntv1.NodeStatus) (ntv1.NodeStatus, nodeAction, time.Duration) {
	node, pod := in.node, in.restartPod
	bootNow := node.Status.NodeInfo.BootID
	before := e.BootIDBefore
	if pod != nil {
		before = pod.Annotations[ntv1.AnnotationBootID]
	}
	requested := pod != nil || e.BootIDBefore != ""
	e.Phase, e.Reason, e.BootIDBefore = ntv1.NodeRebooting, ntv1.NodeReasonRebootRequested, before
	// The host decides: once it restarted, whatever the kubelet reports of the restart pod
	// (Succeeded before the shutdown, Failed after the boot, nothing) does not matter.
	restarted := requested && hostRestarted(node, before, pod)
	failed := pod != nil && pod.Status.Phase == corev1.PodFailed && !restarted
	switch {
	case restarted && NodeReady(node):
		// The exit code (3010) and the run's output stay: they say why it restarted.
		e.Phase, e.Reason, e.BootIDAfter = ntv1.NodeSucceeded, ntv1.NodeReasonRebooted, node.Status.NodeInfo.BootID
		e.FinishTime = &metav1.Time{Time: lc.now}
	case failed && !lc.now.Before(failureReported(pod).Add(rebootFailureGrace)):
		r := podResult(pod, false, lc.now)
		e.Phase, e.Reason, e.ExitCode, e.FinishTime = ntv1.NodeFailed, ntv1.NodeReasonRebootFailed, r.ExitCode, r.FinishTime
		e.Output = "the restart command failed and the node kept its boot ID: " + r.Output
	case pod != nil:
		// Waiting: for the host to go down and come back, for the node to be Ready again,
		// or, for a failed restart pod, for a new boot ID the kubelet may report late.
		deadline := pod.CreationTimestamp.Add(m.rebootTimeout)
		if !lc.now.Before(deadline) {
			e.Phase, e.Reason = ntv1.NodeFailed, ntv1.NodeReasonRebootTimeout
			e.FinishTime = &metav1.Time{Time: deadline}
			e.Output = fmt.Sprintf("the node did not come back Ready with a new boot ID within rebootTimeoutSeconds (%ds)",
				int(m.rebootTimeout/time.Second))
			return e, nodeAction{}, 0
		}
		wait := deadline.Sub(lc.now)
		if failed {
			wait = min(wait, failureReported(pod).Add(rebootFailureGrace).Sub(lc.now))
		}
		return e, nodeAction{}, max(wait, time.Millisecond)
	case restarted:
		// Restarted, its restart pod gone (deleted after the boot), not Ready yet: the
		// node's Ready change wakes the task. Never a second restart.
	case in.claim == claimForeign:
		// Someone removed this task's claim and another task took the node: wait for it.
		e.Reason = ntv1.NodeReasonNodeBusy
	case in.claim == claimFree:
		return e, nodeAction{kind: actReclaim, op: NodeOp{Node: in.name, Kind: OpClaim,
			Why: "it must restart and its claim was removed"}}, 0
	default:
		// No restart pod: never made, or deleted before the node restarted (the boot ID
		// is still the one recorded). Its name is fixed per run: at most one exists.
		e.BootIDBefore = bootNow
		return e, nodeAction{kind: actRestart, restart: RebootRequest{
			PodRequest: PodRequest{Node: in.name, NodeUID: node.UID, Attempt: e.Attempts}, BootID: bootNow}}, 0
	}
	return e, nodeAction{}, 0
}

// hostRestarted reports whether the node's host restarted since its boot ID was before: it
// reports another boot ID. A node whose kubelet reports no boot ID counts as restarted once
// its Ready condition changed after the restart pod was made (it went down, or came back).
func hostRestarted(node *corev1.Node, before string, pod *corev1.Pod) bool {
	if before != "" {
		return node.Status.NodeInfo.BootID != "" && node.Status.NodeInfo.BootID != before
	}
	if pod == nil {
		return false
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.LastTransitionTime.After(pod.CreationTimestamp.Time)
		}
	}
	return false
}

// failureReported is when the kubelet reported the pod's failure: its latest condition
// change, or, without one, when its container ended.
func failureReported(pod *corev1.Pod) time.Time {
	at := podFinishTime(pod)
	for _, c := range pod.Status.Conditions {
		if c.LastTransitionTime.After(at) {
			at = c.LastTransitionTime.Time
		}
	}
	return at
}
