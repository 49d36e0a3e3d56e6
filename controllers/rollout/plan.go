package rollout

import (
	"slices"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
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
	// Pods are the task's pods (controlled by this very task, by UID): those in the cache
	// and those created but not yet seen there.
	Pods []*corev1.Pod
	// Now is the reconcile's clock.
	Now time.Time
	// Drains holds, by node name, what the drain of each node this task claimed and still
	// drains sees (only for a task with spec.drain).
	Drains map[string]*DrainObservation
	// StaleClaims names the nodes whose claim (AnnotationClaim) names a task that no longer
	// exists: such a claim holds nobody back.
	StaleClaims map[string]bool
	// Admission is what the API server said of the current run's pods (admission.go). Until
	// it confirmed them, the plan creates no pod and claims, cordons, drains and restarts
	// no node.
	Admission Admission
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

// Plan is what one reconcile decided: the pods to create and delete, and the per-node
// entries the new status starts from.
type Plan struct {
	// Revision is the hash of what runs; Run is the current run, which NewRun says starts now.
	Revision string
	Run      int64
	NewRun   bool
	// Targets are the names of the nodes the current run runs on.
	Targets map[string]bool
	// Nodes are the per-node entries, sorted by name, with every run filled in.
	Nodes []ntv1.NodeStatus
	// Create lists the pods to start, in node-name order, within the free rollout slots.
	Create []PodRequest
	// NodeOps claim, cordon and release nodes (a task that cordons, drains or reboots);
	// claims come within the free rollout slots, like Create.
	NodeOps []NodeOp
	// Evict lists the pods the drains evict.
	Evict []*corev1.Pod
	// Reboots lists the restart pods to create.
	Reboots []RebootRequest
	// Releasing names the nodes whose work is done and whose claim this task still holds:
	// the task is not Ready until they are uncordoned and let go.
	Releasing []string
	// Delete lists the pods to delete: recorded finished pods past their TTL, recorded pods
	// of deleted nodes or of a machine that was replaced, pods past the operator's deadline,
	// and superseded pods that never started.
	Delete []PodDeletion
	// MaxConcurrent and MaxFailures are the rollout limits scaled to the target count.
	MaxConcurrent int
	MaxFailures   int
	// InFlight is how many nodes have a pod that holds a rollout slot, of any run.
	InFlight int
	// Unstarted is how many pods of the current run have not started yet: they still need
	// the run's script ConfigMap.
	Unstarted int
	// OtherRunsInFlight is true while a pod of another run has not finished (it may still
	// need its run's script ConfigMap).
	OtherRunsInFlight bool
	// BudgetExceeded is true when more targets failed than MaxFailures allows.
	BudgetExceeded bool
	// NextWindow is when a closed spec.window opens next (Gate is GateWindowClosed, or a
	// gate that takes precedence).
	NextWindow time.Time
	// Gate is what holds back the rollout's new starts and claims, computed once here; the
	// conditions report it (setConditions).
	Gate Gate
	// Problem is set when the task cannot go on until a person acts. No pod is created then.
	Problem *Problem
	// AdmissionProbe is set when the plan would create a pod or act on a node but the API
	// server has not yet said whether it admits the run's pods: the node to dry-run a pod
	// for. The plan holds every such action back until then.
	AdmissionProbe *PodRequest
	// RequeueAfter is when the plan changes by itself (a backoff, a TTL or a deadline ends); 0 for never.
	RequeueAfter time.Duration
}

// Problem is a condition that keeps the task from going on until a person acts, or, for
// Outcome.Waiting, a reason the rollout is slower than asked.
type Problem struct {
	// Reason is a CamelCase condition reason from the API package.
	Reason string
	// Message tells the user what happened and what to do.
	Message string
}

// ComputePlan decides, from the observed state alone, which pods to create and delete and
// what each node's entry is. It has no side effects.
func ComputePlan(obs *Observed) *Plan {
	task := obs.Task
	p := &Plan{Revision: obs.Revision, Targets: map[string]bool{}}
	p.Run, p.NewRun = CurrentRun(&task.Status, obs.Revision)
	stored := storedEntries(&task.Status, obs.Nodes)
	lc := newLifecycle(task, p.Run, p.Revision, obs.Now)

	sel, err := newNodeSelection(&task.Spec)
	if err != nil {
		p.Problem = &Problem{Reason: ntv1.ReasonInvalidSpec, Message: "spec.nodeSelector is invalid: " + err.Error()}
	} else {
		for name, node := range obs.Nodes {
			if targetExclusion(sel, task, p.NewRun, stored, node) == "" {
				p.Targets[name] = true
			}
		}
	}

	podsByNode := map[string][]*corev1.Pod{}
	for _, pod := range obs.Pods {
		podsByNode[pod.Spec.NodeName] = append(podsByNode[pod.Spec.NodeName], pod)
	}
	names := make([]string, 0, len(p.Targets)+len(stored))
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
	for n := range stored {
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

	var (
		candidates []PodRequest   // starts that need a free slot
		claims     []NodeOp       // claims, which need a free slot
		claimed    []PodRequest   // starts within the slot of the node's claim
		holding    []nodeDecision // claimed nodes that wait to start
	)
	for _, name := range names {
		var prev *ntv1.NodeStatus
		if e, ok := stored[name]; ok {
			prev = &e
		}
		d := lc.decide(nodeInput{name: name, node: obs.Nodes[name], target: p.Targets[name], stored: prev,
			pods: podsByNode[name], drain: obs.Drains[name], staleClaim: obs.StaleClaims[name]})
		if d.keep && (obs.Admission.Refused == nil || !d.neverStarted(p.Run)) {
			// A task whose pods are refused lists no entry for a node it never started:
			// thousands of "Pending" entries would say nothing and cost a large status.
			p.Nodes = append(p.Nodes, d.entry)
		}
		if d.inFlight {
			p.InFlight++
		}
		switch {
		case d.ask == askClaim:
			claims = append(claims, d.ops...)
		case d.holding():
			holding = append(holding, d)
		default:
			p.NodeOps = append(p.NodeOps, d.ops...)
		}
		if d.releasing {
			p.Releasing = append(p.Releasing, name)
		}
		switch d.ask {
		case askStartClaimed:
			claimed = append(claimed, d.request)
		case askStart:
			candidates = append(candidates, d.request)
		}
		if d.reboot != nil {
			p.Reboots = append(p.Reboots, *d.reboot)
		}
		p.Delete = append(p.Delete, d.deletes...)
		p.Unstarted += d.unstarted
		p.OtherRunsInFlight = p.OtherRunsInFlight || d.otherRunInFlight
		p.RequeueAfter = Soonest(p.RequeueAfter, d.requeue)
	}

	p.BudgetExceeded = countTargets(p.Nodes, p.Targets, p.Run).Failed > int32(p.MaxFailures)
	if p.Problem == nil {
		p.Problem = obs.Admission.Refused
	}
	if p.Problem == nil {
		starting := min(len(candidates), max(0, p.MaxConcurrent-p.InFlight))
		p.Problem = statusTooLarge(task, p.Nodes, starting)
	}
	if p.Problem != nil && p.Problem.Reason == ntv1.ReasonStatusTooLarge {
		// The stored status may no longer hold every result: the pods are then the only
		// record, so none is deleted, and no node starts.
		p.Delete = nil
	}
	windowClosed := false
	if w := task.Spec.Window; w != nil && p.Problem == nil {
		open, next, err := windowState(w, obs.Now)
		switch {
		case err != nil:
			p.Problem = &Problem{Reason: ntv1.ReasonInvalidSpec, Message: err.Error()}
		case !open:
			windowClosed, p.NextWindow = true, next
			if len(candidates) > 0 {
				// Woken by the clock at the opening, not by polling.
				p.RequeueAfter = Soonest(p.RequeueAfter, next.Sub(obs.Now))
			}
		}
	}
	p.Gate = gateOf(task.Spec.Suspend, p.BudgetExceeded, p.Problem != nil, windowClosed)
	stopped := p.Gate.stops()
	if p.Gate == GateOpen {
		slots := max(0, p.MaxConcurrent-p.InFlight)
		p.Create = candidates[:min(slots, len(candidates))]
		p.NodeOps = append(p.NodeOps, claims[:min(slots, len(claims))]...)
	}
	// A claimed node has started its maintenance: it goes on in a closed window, but lets
	// go of its claim (and the cordon it made) when the rollout stops before its run.
	for _, d := range holding {
		if !stopped {
			p.NodeOps = append(p.NodeOps, d.ops...)
			p.Evict = append(p.Evict, d.evict...)
			continue
		}
		p.NodeOps = append(p.NodeOps, NodeOp{Node: d.entry.Name, Kind: OpRelease, Uncordon: true,
			Why: "the rollout stopped before its run"})
		claimed = slices.DeleteFunc(claimed, func(r PodRequest) bool { return r.Node == d.entry.Name })
	}
	if !stopped {
		p.Create = append(p.Create, claimed...)
	}
	p.gate(obs)
	if len(p.Create) == 0 {
		p.Create = nil
	}
	return p
}

// Gate is what holds back a rollout's new starts and claims. The values are in the order of
// precedence: when several hold, the task reports the first.
type Gate int

const (
	// GateOpen lets nodes start within the free rollout slots.
	GateOpen Gate = iota
	// GateBudgetExceeded: more targets failed than rollout.maxFailures allows (Stalled).
	GateBudgetExceeded
	// GateProblem: something a person must fix (Stalled with the problem's reason).
	GateProblem
	// GateSuspended: spec.suspend.
	GateSuspended
	// GateWindowClosed: outside spec.window; nodes already claimed go on.
	GateWindowClosed
)

// gateOf returns the gate of the first condition that holds, in precedence order.
func gateOf(suspended, budgetExceeded, problem, windowClosed bool) Gate {
	switch {
	case budgetExceeded:
		return GateBudgetExceeded
	case problem:
		return GateProblem
	case suspended:
		return GateSuspended
	case windowClosed:
		return GateWindowClosed
	}
	return GateOpen
}

// stops reports whether the gate stops the rollout: claimed nodes that have not started
// their run are let go. A closed window only holds new starts back.
func (g Gate) stops() bool { return g == GateBudgetExceeded || g == GateProblem || g == GateSuspended }

// gate holds back every pod and every node action (claim, cordon, eviction, restart) until
// the API server has confirmed it admits the run's pods; releases go ahead, since they undo.
// When nothing is decided yet, AdmissionProbe names the node of the first held-back action.
func (p *Plan) gate(obs *Observed) {
	if obs.Admission.Confirmed {
		return
	}
	probe := p.firstAction(obs)
	if probe == nil {
		return
	}
	if !obs.Admission.Decided() {
		p.AdmissionProbe = probe
	}
	p.Create, p.Evict, p.Reboots = nil, nil, nil
	p.NodeOps = slices.DeleteFunc(p.NodeOps, func(op NodeOp) bool { return op.Kind != OpRelease })
}

// firstAction returns the pod request of the first pod or node action of the plan that
// needs admission, or nil if there is none.
func (p *Plan) firstAction(obs *Observed) *PodRequest {
	switch {
	case len(p.Create) > 0:
		return &p.Create[0]
	case len(p.Reboots) > 0:
		return &p.Reboots[0].PodRequest
	}
	nodes := make([]string, 0, 1)
	for _, op := range p.NodeOps {
		if op.Kind != OpRelease {
			nodes = append(nodes, op.Node)
			break
		}
	}
	if len(p.Evict) > 0 {
		nodes = append(nodes, p.Evict[0].Spec.NodeName)
	}
	for _, name := range nodes {
		if node := obs.Nodes[name]; node != nil {
			return &PodRequest{Node: name, NodeUID: node.UID, Attempt: 1}
		}
	}
	return nil
}

// CurrentRun returns the run a reconcile works on, and whether it starts now. A run is a
// run, not only a content hash: going back to content that ran before (a GitOps revert, an
// old rerunToken) starts a new run as any other change does.
func CurrentRun(st *ntv1.NodeTaskStatus, revision string) (run int64, isNew bool) {
	if st.Revision != revision || st.Run == 0 {
		return st.Run + 1, true
	}
	return st.Run, false
}

// Soonest returns the earlier of two requeue delays, where 0 means never.
func Soonest(a, b time.Duration) time.Duration {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// retryDelay is the backoff before the attempt after the given one.
func retryDelay(attempts int32) time.Duration {
	d := retryBaseDelay
	for i := int32(1); i < attempts && d < retryMaxDelay; i++ {
		d *= 2
	}
	return min(d, retryMaxDelay)
}

// storedEntries reads status.nodes into a map, filling in the runs that the stored form
// leaves out because they equal status.run. The entry of a node whose Node object was
// created after the entry's attempt started belongs to a machine that is gone (deleted and
// registered again under the same name: a reimage, a reused name) and is left out: the new
// machine starts afresh.
func storedEntries(st *ntv1.NodeTaskStatus, nodes map[string]*corev1.Node) map[string]ntv1.NodeStatus {
	m := make(map[string]ntv1.NodeStatus, len(st.Nodes))
	for _, e := range st.Nodes {
		e.Run = st.RunOf(&e)
		if n := nodes[e.Name]; n != nil && e.StartTime != nil && n.CreationTimestamp.After(e.StartTime.Time) {
			continue
		}
		m[e.Name] = e
	}
	return m
}
