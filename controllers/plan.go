package controllers

import (
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// Retry backoff: 10s after the first failure, doubling, at most 5 minutes.
const (
	retryBaseDelay = 10 * time.Second
	retryMaxDelay  = 5 * time.Minute
)

// Observed is the state one reconcile of a task looks at. The planner reads nothing else,
// so every decision can be tested from a literal Observed.
type Observed struct {
	// Task is the NodeTask as read from the cache.
	Task *ntv1.NodeTask
	// Revision is Revision(&Task.Spec).
	Revision string
	// Nodes holds the Windows nodes by name.
	Nodes map[string]*corev1.Node
	// Pods are the task's pods: those in the cache and those created but not yet seen there.
	Pods []*corev1.Pod
	// Now is the reconcile's clock.
	Now time.Time
}

// PodRequest asks for the pod of one attempt on one node.
type PodRequest struct {
	Node    string
	Attempt int32
}

// Plan is what one reconcile decided: the pods to create and delete, and the per-node
// entries the new status starts from.
type Plan struct {
	// Revision is the current revision; NewRevision is true when it differs from status.revision.
	Revision    string
	NewRevision bool
	// Targets are the names of the nodes the current revision runs on.
	Targets map[string]bool
	// Nodes are the per-node entries, sorted by name, with every revision filled in.
	Nodes []ntv1.NodeStatus
	// Create lists the pods to start, in node-name order, within the free rollout slots.
	Create []PodRequest
	// Delete lists finished pods whose results are recorded and whose TTL has run out,
	// and pods left on deleted nodes.
	Delete []*corev1.Pod
	// MaxConcurrent and MaxFailures are the rollout limits scaled to the target count.
	MaxConcurrent int
	MaxFailures   int
	// InFlight is how many nodes have a pod that has not finished, of any revision.
	InFlight int
	// BudgetExceeded is true when more targets failed than MaxFailures allows.
	BudgetExceeded bool
	// NewlyFailed names the nodes whose final failure this plan records for the first time.
	NewlyFailed []string
	// Problem is set when the spec cannot be acted on.
	Problem *Problem
	// RequeueAfter is when the plan changes by itself (a backoff or a TTL ends); 0 for never.
	RequeueAfter time.Duration
}

// Problem is a condition that keeps the task from going on until a person acts.
type Problem struct {
	// Reason is a CamelCase condition reason from the API package.
	Reason string
	// Message tells the user what happened and what to do.
	Message string
}

// planner holds one planning pass.
type planner struct {
	obs     *Observed
	prev    map[string]ntv1.NodeStatus
	retries int32
	plan    *Plan
}

// ComputePlan decides, from the observed state alone, which pods to create and delete and
// what each node's entry is. It has no side effects.
func ComputePlan(obs *Observed) *Plan {
	task := obs.Task
	p := &Plan{
		Revision:    obs.Revision,
		NewRevision: task.Status.Revision != obs.Revision,
		Targets:     map[string]bool{},
	}
	pl := &planner{obs: obs, prev: expandEntries(&task.Status), plan: p}
	if task.Spec.Retries != nil {
		pl.retries = *task.Spec.Retries
	}

	sel, err := newNodeSelection(&task.Spec)
	if err != nil {
		p.Problem = &Problem{Reason: ntv1.ReasonInvalidSpec, Message: "spec.nodeSelector is invalid: " + err.Error()}
	} else {
		for name, node := range obs.Nodes {
			if !sel.matches(node) {
				continue
			}
			// With newNodes=Ignore the targets are fixed when a revision starts: later, only
			// nodes that already have an entry stay targets.
			if task.Spec.NewNodes == ntv1.NewNodesIgnore && !p.NewRevision {
				if _, ok := pl.prev[name]; !ok {
					continue
				}
			}
			p.Targets[name] = true
		}
	}

	podsByNode := map[string][]*corev1.Pod{}
	for _, pod := range obs.Pods {
		podsByNode[pod.Spec.NodeName] = append(podsByNode[pod.Spec.NodeName], pod)
	}
	names := make([]string, 0, len(p.Targets)+len(pl.prev))
	seen := make(map[string]bool, cap(names))
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	for n := range p.Targets {
		add(n)
	}
	for n := range pl.prev {
		add(n)
	}
	for n := range podsByNode {
		add(n)
	}
	sort.Strings(names)

	p.MaxConcurrent, _ = intstr.GetScaledValueFromIntOrPercent(
		intstr.ValueOrDefault(task.Spec.Rollout.MaxConcurrent, intstr.FromString("25%")), len(p.Targets), true)
	p.MaxConcurrent = max(p.MaxConcurrent, 1)
	p.MaxFailures, _ = intstr.GetScaledValueFromIntOrPercent(
		intstr.ValueOrDefault(task.Spec.Rollout.MaxFailures, intstr.FromInt32(0)), len(p.Targets), false)

	var candidates []PodRequest
	for _, name := range names {
		if req, ok := pl.node(name, podsByNode[name]); ok {
			candidates = append(candidates, req)
		}
	}

	p.BudgetExceeded = countTargets(p.Nodes, p.Targets, p.Revision).Failed > int32(p.MaxFailures)
	if !task.Spec.Suspend && !p.BudgetExceeded && p.Problem == nil {
		slots := p.MaxConcurrent - p.InFlight
		if slots > 0 && len(candidates) > 0 {
			p.Create = candidates[:min(slots, len(candidates))]
		}
	}
	return p
}

// node works out one node's entry and whether it may start a new attempt now; it records
// pods to delete and the earliest time the plan changes by itself.
func (pl *planner) node(name string, pods []*corev1.Pod) (PodRequest, bool) {
	obs, p, rev := pl.obs, pl.plan, pl.plan.Revision
	node := obs.Nodes[name]
	nodeGone := node == nil
	prev, hadPrev := pl.prev[name]

	var cur *corev1.Pod // the latest attempt of the current revision
	inFlight := false
	for _, pod := range pods {
		if !podFinished(pod) {
			inFlight = true
		}
		if podRevision(pod) == rev && (cur == nil || podAttempt(pod) > podAttempt(cur)) {
			cur = pod
		}
	}

	var e ntv1.NodeStatus
	switch {
	case cur != nil:
		e = podResult(cur, nodeGone, obs.Now)
	case hadPrev:
		// No pod of this revision: the entry is this revision's stored result, or the node has
		// not started this revision and shows an older one's, whose pod may still be running.
		e = prev
		switch pod := findPod(pods, e.Revision, e.Attempts); {
		case pod != nil:
			e = podResult(pod, nodeGone, obs.Now)
		case e.Phase == ntv1.NodeRunning:
			// The pod of a running attempt is gone, and no one recorded how it ended.
			e = lostAttempt(e, nodeGone, obs.Now)
		}
	default:
		e = ntv1.NodeStatus{Name: name, Phase: ntv1.NodePending, Revision: rev}
	}

	if hadPrev && prev.Revision == e.Revision && prev.Attempts == e.Attempts && prev.FinishTime != nil && e.FinishTime != nil {
		// Times that were read from the clock must not change from one reconcile to the
		// next, or every reconcile would write the status again.
		e.FinishTime = prev.FinishTime
	}
	current := e.Revision == rev
	if current && e.Phase == ntv1.NodeFailed && e.Attempts <= pl.retries && !nodeGone {
		e.Phase, e.Reason = ntv1.NodePending, ntv1.NodeReasonRetryBackoff
	}
	if current && e.Phase == ntv1.NodePending && e.Reason != ntv1.NodeReasonRetryBackoff {
		e.Reason = ""
		if !nodeGone && !nodeReady(node) {
			e.Reason = ntv1.NodeReasonNodeNotReady
		}
	}
	if current && e.Phase == ntv1.NodeFailed && !(hadPrev && prev.Revision == rev && prev.Phase == ntv1.NodeFailed && prev.Attempts == e.Attempts) {
		p.NewlyFailed = append(p.NewlyFailed, name)
	}

	target := p.Targets[name]
	if target || inFlight || (current && e.Attempts > 0) {
		p.Nodes = append(p.Nodes, e)
	}
	if inFlight {
		p.InFlight++
	}
	pl.deletions(pods, prev, hadPrev, nodeGone)

	if !target || inFlight || nodeGone || !nodeReady(node) {
		return PodRequest{}, false
	}
	if !current {
		return PodRequest{Node: name, Attempt: 1}, true
	}
	if e.Phase != ntv1.NodePending {
		return PodRequest{}, false
	}
	if e.Reason == ntv1.NodeReasonRetryBackoff && e.FinishTime != nil {
		if wait := e.FinishTime.Add(retryDelay(e.Attempts)).Sub(obs.Now); wait > 0 {
			pl.requeue(wait)
			return PodRequest{}, false
		}
	}
	return PodRequest{Node: name, Attempt: e.Attempts + 1}, true
}

// deletions queues the node's pods that may go: finished pods whose result the observed
// status already holds, once their TTL has run out, and any recorded pod of a deleted node.
// Only a result read back from the stored status counts as recorded, so a pod is never
// deleted before its result is safe.
func (pl *planner) deletions(pods []*corev1.Pod, prev ntv1.NodeStatus, hadPrev, nodeGone bool) {
	ttl := pl.obs.Task.Spec.PodTTLSecondsAfterFinished
	for _, pod := range pods {
		if pod.DeletionTimestamp != nil || !hadPrev || !recorded(prev, pod, pl.plan.Revision) {
			continue
		}
		switch {
		case nodeGone:
			pl.plan.Delete = append(pl.plan.Delete, pod)
		case ttl != nil && podFinished(pod):
			wait := podFinishTime(pod, pl.obs.Now).Add(time.Duration(*ttl) * time.Second).Sub(pl.obs.Now)
			if wait <= 0 {
				pl.plan.Delete = append(pl.plan.Delete, pod)
			} else {
				pl.requeue(wait)
			}
		}
	}
}

func (pl *planner) requeue(d time.Duration) {
	pl.plan.RequeueAfter = soonest(pl.plan.RequeueAfter, d)
}

// soonest returns the earlier of two requeue delays, where 0 means never.
func soonest(a, b time.Duration) time.Duration {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// recorded reports whether the stored entry already accounts for the pod's outcome: it holds
// that attempt's final result, a later attempt, or the pod belongs to a superseded revision.
func recorded(prev ntv1.NodeStatus, pod *corev1.Pod, current string) bool {
	rev, attempt := podRevision(pod), podAttempt(pod)
	if prev.Revision != rev {
		return rev != current
	}
	return prev.Attempts > attempt || (prev.Attempts == attempt && prev.Phase != ntv1.NodeRunning)
}

// retryDelay is the backoff before the attempt after the given one.
func retryDelay(attempts int32) time.Duration {
	d := retryBaseDelay
	for i := int32(1); i < attempts && d < retryMaxDelay; i++ {
		d *= 2
	}
	return min(d, retryMaxDelay)
}

// lostAttempt records an attempt whose pod disappeared before it finished.
func lostAttempt(e ntv1.NodeStatus, nodeGone bool, now time.Time) ntv1.NodeStatus {
	e.Phase, e.Reason, e.ExitCode = ntv1.NodeFailed, ntv1.NodeReasonPodDeleted, nil
	if nodeGone {
		e.Reason = ntv1.NodeReasonNodeLost
	}
	e.FinishTime = &metav1.Time{Time: now}
	return e
}

func findPod(pods []*corev1.Pod, rev string, attempt int32) *corev1.Pod {
	for _, pod := range pods {
		if podRevision(pod) == rev && podAttempt(pod) == attempt {
			return pod
		}
	}
	return nil
}

func podRevision(pod *corev1.Pod) string { return pod.Labels[LabelRevision] }

func podAttempt(pod *corev1.Pod) int32 {
	n, _ := strconv.ParseInt(pod.Labels[LabelAttempt], 10, 32)
	return int32(n)
}

func podFinished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// expandEntries reads status.nodes into a map, filling in the revisions that the stored form
// leaves out because they equal status.revision.
func expandEntries(st *ntv1.NodeTaskStatus) map[string]ntv1.NodeStatus {
	m := make(map[string]ntv1.NodeStatus, len(st.Nodes))
	for _, e := range st.Nodes {
		if e.Revision == "" {
			e.Revision = st.Revision
		}
		m[e.Name] = e
	}
	return m
}
