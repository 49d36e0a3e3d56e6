package rollout

import (
	"slices"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
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
	// Health is the latest evaluation of spec.rollout.healthChecks (health.go); HealthError
	// says why they cannot be evaluated (an expression that does not compile).
	Health      []HealthResult
	HealthError string
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
	// Settling names the nodes that succeeded and count rollout.minReadySeconds.
	Settling []string
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

	// batch is where the run stands with rollout.firstBatch (batches.go).
	batch batch
	// health is where the run stands with rollout.healthChecks (health.go).
	health healthGate
	// holding names the nodes that hold a rollout slot; only with rollout.firstBatch.
	holding map[string]bool
}

// ComputePlan decides, from the observed state alone, which pods to create and delete and
// what each node's entry is. It has no side effects.
func ComputePlan(obs *Observed) *Plan {
	task := obs.Task
	p := &Plan{Revision: obs.Revision}
	p.Run, p.NewRun = CurrentRun(&task.Status, obs.Revision)
	stored := storedEntries(&task.Status, obs.Nodes)
	p.Targets, p.Problem = selectTargets(obs, p.NewRun, stored)
	p.MaxConcurrent, p.MaxFailures = rolloutLimits(task, len(p.Targets))

	asks := p.stepNodes(obs, stored)
	p.batch = batchOf(task, firstBatchNames(task, p.Targets, p.NewRun), p.Targets, p.Run, p.Nodes, p.holding)

	p.BudgetExceeded = countTargets(p.Nodes, p.Targets, p.Run).Failed > int32(p.MaxFailures)
	if p.Problem == nil {
		p.Problem = obs.Admission.Refused
	}
	if p.Problem == nil && obs.HealthError != "" {
		p.Problem = &Problem{Reason: ntv1.ReasonInvalidSpec, Message: obs.HealthError}
	}
	p.health = healthOf(task, obs.Health, obs.Now)
	// The checks hold back only nodes that would start or be claimed: with none left, a
	// failing check stalls nothing (a finished run is done, not Stalled for good).
	healthGates := len(asks.starts)+len(asks.claims) > 0
	if len(p.health.failing) > 0 && healthGates {
		// Looked at again while nodes wait for it.
		p.RequeueAfter = Soonest(p.RequeueAfter, p.health.next)
	}
	if p.Problem == nil {
		starting := min(len(asks.starts), max(0, p.MaxConcurrent-p.InFlight))
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
			if len(asks.starts) > 0 {
				// Woken by the clock at the opening, not by polling.
				p.RequeueAfter = Soonest(p.RequeueAfter, next.Sub(obs.Now))
			}
		}
	}
	p.Gate = gateOf(gateFacts{suspended: task.Spec.Suspend, budgetExceeded: p.BudgetExceeded, firstBatchFailed: len(p.batch.failed) > 0,
		problem: p.Problem != nil, windowClosed: windowClosed, awaitingApproval: p.batch.awaitingApproval,
		healthStalled: healthGates && len(p.health.stalled) > 0, healthFailing: healthGates && len(p.health.failing) > 0})
	p.allot(asks)
	p.gate(obs)
	if len(p.Create) == 0 {
		p.Create = nil
	}
	return p
}

// selectTargets returns the nodes the current run runs on, or the problem with the selector.
func selectTargets(obs *Observed, newRun bool, stored map[string]ntv1.NodeStatus) (map[string]bool, *Problem) {
	targets := map[string]bool{}
	sel, err := newNodeSelection(&obs.Task.Spec)
	if err != nil {
		return targets, &Problem{Reason: ntv1.ReasonInvalidSpec, Message: "spec.nodeSelector is invalid: " + err.Error()}
	}
	for name, node := range obs.Nodes {
		if targetExclusion(sel, obs.Task, newRun, stored, node) == "" {
			targets[name] = true
		}
	}
	return targets, nil
}

// rolloutLimits scales rollout.maxConcurrent (at least 1) and rollout.maxFailures to the
// target count.
func rolloutLimits(task *ntv1.NodeTask, targets int) (maxConcurrent, maxFailures int) {
	maxConcurrent, _ = intstr.GetScaledValueFromIntOrPercent(
		intstr.ValueOrDefault(task.Spec.Rollout.MaxConcurrent, intstr.FromString("25%")), targets, true)
	maxFailures, _ = intstr.GetScaledValueFromIntOrPercent(
		intstr.ValueOrDefault(task.Spec.Rollout.MaxFailures, intstr.FromInt32(0)), targets, false)
	return max(maxConcurrent, 1), maxFailures
}

// slotAsks are the nodes' actions that wait for the rollout's slots and gate.
type slotAsks struct {
	// starts need a free slot.
	starts []PodRequest
	// claims need a free slot.
	claims []NodeOp
	// claimed are the steps of claimed nodes on their way to their run (cordon, drain,
	// start within the claim's slot): they go on unless the rollout stops.
	claimed []nodeStep
}

// stepNodes runs every node's step, in name order: the targets, the nodes with a stored
// entry and those with pods. It fills in the plan's entries, counts and the actions that
// need neither a slot nor an open gate, and returns the others.
func (p *Plan) stepNodes(obs *Observed, stored map[string]ntv1.NodeStatus) slotAsks {
	steps := newStepper(obs.Task, p.Run, p.Revision, obs.Now)
	podsByNode := map[string][]*corev1.Pod{}
	for _, pod := range obs.Pods {
		podsByNode[pod.Spec.NodeName] = append(podsByNode[pod.Spec.NodeName], pod)
	}
	var asks slotAsks
	// Only a first batch asks which nodes hold a slot: at 5000 nodes in flight the set
	// would otherwise be built on every pass for nothing.
	batched := obs.Task.Spec.Rollout.FirstBatch != nil
	if batched {
		p.holding = map[string]bool{}
	}
	for _, name := range passNodes(p.Targets, stored, podsByNode) {
		var prev *ntv1.NodeStatus
		if e, ok := stored[name]; ok {
			prev = &e
		}
		s := steps.step(nodeInput{name: name, node: obs.Nodes[name], target: p.Targets[name], stored: prev,
			pods: podsByNode[name], drain: obs.Drains[name], staleClaim: obs.StaleClaims[name]})
		if s.listed && (obs.Admission.Refused == nil || !s.neverStarted(p.Run)) {
			// A task whose pods are refused lists no entry for a node it never started:
			// thousands of "Pending" entries would say nothing and cost a large status.
			p.Nodes = append(p.Nodes, s.entry)
		}
		if s.slot != slotNone {
			p.InFlight++
			if batched {
				p.holding[name] = true
			}
		}
		switch s.slot {
		case slotReleasing:
			p.Releasing = append(p.Releasing, name)
		case slotSettling:
			p.Settling = append(p.Settling, name)
		}
		switch a := s.action; {
		case a.kind == actStart:
			asks.starts = append(asks.starts, a.start)
		case a.kind == actClaim:
			asks.claims = append(asks.claims, a.op)
		case a.holdsClaimed():
			asks.claimed = append(asks.claimed, s)
		case a.kind == actRestart:
			p.Reboots = append(p.Reboots, a.restart)
		case a.kind == actReclaim || a.kind == actRelease:
			p.NodeOps = append(p.NodeOps, a.op)
		}
		p.Delete = append(p.Delete, s.deletes...)
		p.Unstarted += s.pods.unstarted
		p.OtherRunsInFlight = p.OtherRunsInFlight || s.pods.otherRun
		p.RequeueAfter = Soonest(p.RequeueAfter, s.requeue)
	}
	return asks
}

// passNodes are the nodes a pass looks at, sorted: the targets, the nodes with a stored
// entry and those with pods.
func passNodes(targets map[string]bool, stored map[string]ntv1.NodeStatus, podsByNode map[string][]*corev1.Pod) []string {
	names := make([]string, 0, len(targets)+len(stored))
	seen := make(map[string]bool, cap(names))
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	for n := range targets {
		add(n)
	}
	for n := range stored {
		add(n)
	}
	for n := range podsByNode {
		add(n)
	}
	sort.Strings(names)
	return names
}

// allot lets the nodes' asks through the gate: starts and claims within the free slots
// while the gate is open; a claimed node goes on with its maintenance and its run in a
// closed window, but lets go of its claim (and the cordon it made) when the rollout stops.
func (p *Plan) allot(asks slotAsks) {
	if p.Gate == GateOpen {
		// Starts and claims share the free slots (a task that checks before it claims asks
		// for both): claims first, so that a node already found non-compliant is fixed
		// before more nodes are checked.
		slots := max(0, p.MaxConcurrent-p.InFlight)
		claims := slices.DeleteFunc(asks.claims, func(op NodeOp) bool { return p.batch.holds(op.Node) })
		claims = claims[:min(slots, len(claims))]
		p.NodeOps = append(p.NodeOps, claims...)
		slots -= len(claims)
		starts := slices.DeleteFunc(asks.starts, func(r PodRequest) bool { return p.batch.holds(r.Node) })
		p.Create = starts[:min(slots, len(starts))]
	}
	stopped := p.Gate.stops()
	var claimed []PodRequest
	for _, s := range asks.claimed {
		switch a := s.action; {
		case stopped:
			p.NodeOps = append(p.NodeOps, NodeOp{Node: s.entry.Name, Kind: OpRelease, Uncordon: true,
				Why: "the rollout stopped before its run"})
		case a.kind == actCordon:
			p.NodeOps = append(p.NodeOps, a.op)
		case a.kind == actDrain:
			p.Evict = append(p.Evict, a.evict...)
		case a.kind == actStartClaimed:
			claimed = append(claimed, a.start)
		}
	}
	p.Create = append(p.Create, claimed...)
}

// Gate is what holds back a rollout's new starts and claims. The values are in the order of
// precedence: when several hold, the task reports the first.
type Gate int

const (
	// GateOpen lets nodes start within the free rollout slots.
	GateOpen Gate = iota
	// GateFirstBatchFailed: a node of rollout.firstBatch failed (Stalled). Before the budget:
	// raising maxFailures would not let the run go on.
	GateFirstBatchFailed
	// GateBudgetExceeded: more targets failed than rollout.maxFailures allows (Stalled).
	GateBudgetExceeded
	// GateProblem: something a person must fix (Stalled with the problem's reason).
	GateProblem
	// GateHealthStalled: a health check has not held for its failAfterSeconds (Stalled
	// until it holds again).
	GateHealthStalled
	// GateSuspended: spec.suspend.
	GateSuspended
	// GateWindowClosed: outside spec.window; nodes already claimed go on.
	GateWindowClosed
	// GateHealthFailing: a health check does not hold; nodes already claimed go on.
	GateHealthFailing
	// GateAwaitingApproval: the first batch succeeded and the run waits for
	// spec.rollout.approvedRun (pauseAfterFirstBatch).
	GateAwaitingApproval
)

// gateFacts are what the gate is computed from.
type gateFacts struct {
	suspended, budgetExceeded, firstBatchFailed, problem, windowClosed, awaitingApproval bool
	healthStalled, healthFailing                                                         bool
}

// gateOf returns the gate of the first condition that holds, in precedence order.
func gateOf(f gateFacts) Gate {
	switch {
	case f.firstBatchFailed:
		return GateFirstBatchFailed
	case f.budgetExceeded:
		return GateBudgetExceeded
	case f.problem:
		return GateProblem
	case f.healthStalled:
		return GateHealthStalled
	case f.suspended:
		return GateSuspended
	case f.windowClosed:
		return GateWindowClosed
	case f.healthFailing:
		return GateHealthFailing
	case f.awaitingApproval:
		return GateAwaitingApproval
	}
	return GateOpen
}

// stops reports whether the gate stops the rollout: claimed nodes that have not started
// their run are let go. A closed window or a wait for approval only holds new starts back.
func (g Gate) stops() bool {
	return g == GateBudgetExceeded || g == GateFirstBatchFailed || g == GateProblem || g == GateHealthStalled || g == GateSuspended
}

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
