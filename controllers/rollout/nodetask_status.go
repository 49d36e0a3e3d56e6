package rollout

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// The whole status of a NodeTask is computed here, from the observed state, the plan and
// what applying the plan did. Nothing else writes status fields.

// Outcome is what applying a plan did, as far as the status is concerned.
type Outcome struct {
	// Started are the attempts whose pods exist now that the plan asked for them (created,
	// or found to exist and be this task's), with the pods' creation times.
	Started []StartedAttempt
	// Rejected are attempts whose pod the API server refused for reasons of that pod alone:
	// each is that node's failed attempt, not the task's stall.
	Rejected []RejectedAttempt
	// Problem is why no pod could be created, if none could (the task is Stalled).
	Problem *Problem
	// Waiting is why some pods could not be created yet though the task goes on (a
	// ResourceQuota that is full until running pods finish).
	Waiting *Problem
	// Deferred is how many of the plan's pods this pass did not get to create, to let the
	// status out first (at 5000 nodes the API server takes most of a minute for all of
	// them); the next pass, at once, creates them.
	Deferred int
}

// ComputeStatus returns the task's new status. It is a pure function of its arguments.
func ComputeStatus(obs *Observed, p *Plan, out Outcome) ntv1.NodeTaskStatus {
	task := obs.Task
	now := metav1.NewTime(obs.Now)
	st := ntv1.NodeTaskStatus{
		ObservedGeneration: task.Generation,
		Revision:           p.Revision,
		Run:                p.Run,
		StartTime:          task.Status.StartTime,
		Conditions:         append([]metav1.Condition(nil), task.Status.Conditions...),
	}
	if p.NewRun || st.StartTime == nil {
		st.StartTime = &now
	}

	entries := recordOutcome(obs, p, out)
	c := countTargets(entries, p.Targets, p.Run)
	st.Targets, st.Pending, st.Running, st.Succeeded, st.Failed = c.Targets, c.Pending, c.Running, c.Succeeded, c.Failed
	if b := &p.batch; b.names != nil || len(p.health.checks) > 0 {
		st.Rollout = &ntv1.RolloutStatus{HealthChecks: p.health.checks}
		if b.names != nil {
			st.Rollout.FirstBatch, st.Rollout.Batch, st.Rollout.Approved = b.names, ntv1.BatchFirst, b.approved
			if b.rest() {
				st.Rollout.Batch = ntv1.BatchRest
			}
		}
	}
	if task.Spec.Check != nil {
		st.Compliance = &ntv1.ComplianceSummary{Compliant: c.Compliant, NonCompliant: c.NonCompliant,
			Unknown: c.Targets - c.Compliant - c.NonCompliant}
	}
	if c.Targets > 0 && c.Pending == 0 && c.Running == 0 {
		st.CompletionTime = task.Status.CompletionTime
		if p.NewRun || st.CompletionTime == nil {
			st.CompletionTime = &now
		}
	}
	f := factsOf(task, p, out, c, entries)
	setConditions(&st, f)

	// The stored form: an entry's run is left out when it equals status.run (read back
	// with NodeTaskStatus.RunOf).
	for i := range entries {
		if entries[i].Run == st.Run {
			entries[i].Run = 0
		}
	}
	st.Nodes = entries
	if size := fitOutputs(task, &st); size > hardObjectBytes {
		// Even without outputs the results do not fit under etcd's limit, and the write
		// would fail: keep the entries as last stored (no pod is deleted meanwhile, so
		// the pods still hold every newer result) and report the conditions only.
		st.Nodes = task.Status.Nodes
	}
	return st
}

// recordOutcome returns the plan's entries with what apply did recorded: the pods started
// and the pods refused. Those entries are the lifecycle's to write, like every other.
func recordOutcome(obs *Observed, p *Plan, out Outcome) []ntv1.NodeStatus {
	entries := append([]ntv1.NodeStatus(nil), p.Nodes...)
	if len(out.Started)+len(out.Rejected) == 0 {
		return entries
	}
	at := make(map[string]int, len(entries))
	for i := range entries {
		at[entries[i].Name] = i
	}
	lc := newLifecycle(obs.Task, p.Run, p.Revision, obs.Now)
	for _, a := range out.Started {
		if i, ok := at[a.Node]; ok {
			entries[i] = lc.started(a, entries[i])
		}
	}
	for _, a := range out.Rejected {
		if i, ok := at[a.Node]; ok {
			entries[i] = lc.rejected(a)
		}
	}
	return entries
}

// factsOf gathers what the conditions are computed from: the plan's gate and limits, a
// problem apply found, and the targets of the current run in each state that a condition
// message names.
func factsOf(task *ntv1.NodeTask, p *Plan, out Outcome, c counts, entries []ntv1.NodeStatus) conditionFacts {
	f := conditionFacts{
		Generation:    task.Generation,
		Counts:        c,
		Gate:          p.Gate,
		MaxConcurrent: p.MaxConcurrent,
		MaxFailures:   p.MaxFailures,
		Problem:       p.Problem,
		Namespace:     task.Namespace,
		NextWindow:    p.NextWindow,
		Releasing:     p.Releasing,
		Waiting:       out.Waiting,
		Check:         task.Spec.Check != nil,
		Audit:         task.Spec.Mode == ntv1.ModeAudit,
		Name:          task.Name,
		Run:           p.Run,
		Batch:         p.batch,
		Health:        p.health,
		Settling:      p.Settling,
		MinReady:      task.Spec.Rollout.MinReadySeconds,
	}
	if f.Problem == nil && out.Problem != nil {
		// Found by apply (a pod refused after the dry run, a missing script ConfigMap): it
		// stalls the task unless a spent failure budget already does.
		f.Problem = out.Problem
		if f.Gate != GateBudgetExceeded {
			f.Gate = GateProblem
		}
	}
	for i := range entries {
		e := &entries[i]
		if !p.Targets[e.Name] || e.Run != p.Run {
			continue
		}
		if e.Compliance == ntv1.NonCompliant {
			f.NonCompliant = append(f.NonCompliant, e.Name)
		}
		switch {
		case e.Phase == ntv1.NodeFailed:
			f.Failed = append(f.Failed, e.Name)
		case e.Reason == ntv1.NodeReasonRebootRequired:
			f.RebootRequired = append(f.RebootRequired, e.Name)
		case e.Reason == ntv1.NodeReasonNodeNotReady || e.Reason == ntv1.NodeReasonNodeUnavailable:
			f.NotReady = append(f.NotReady, e.Name)
		case e.Reason == ntv1.NodeReasonRetryBackoff:
			f.Backoff = append(f.Backoff, e.Name)
		}
	}
	return f
}

// conditionFacts is what the conditions are computed from.
type conditionFacts struct {
	Generation int64
	Counts     counts
	// Gate is the plan's gate, or GateProblem for a problem apply found.
	Gate          Gate
	MaxConcurrent int
	MaxFailures   int
	Problem       *Problem
	// Waiting is why some pods wait, while the task goes on.
	Waiting   *Problem
	Namespace string
	// NextWindow is the next opening of a closed spec.window.
	NextWindow time.Time
	// RebootRequired names the targets that succeeded with a reboot exit code.
	RebootRequired []string
	// Releasing names the nodes still claimed (and maybe cordoned) after their work.
	Releasing []string
	// Failed, NotReady and Backoff name the targets in those states, sorted. NotReady
	// includes nodes under kubelet pressure taints.
	Failed, NotReady, Backoff []string
	// Check: the task has spec.check; Audit: its mode is Audit. NonCompliant names the
	// targets the check found out of compliance and not put right.
	Check, Audit bool
	NonCompliant []string
	// Name and Run are the task's name and current run, for the approval's command.
	Name string
	Run  int64
	// Batch is where the run stands with rollout.firstBatch.
	Batch batch
	// Health is where the run stands with rollout.healthChecks.
	Health healthGate
	// Settling names the nodes counting rollout.minReadySeconds (MinReady).
	Settling []string
	MinReady int32
}

// setConditions sets Ready, Reconciling and Stalled. All three are always present, so that
// `kubectl wait --for=condition=X=false` works as well as =true.
//
//   - Stalled=True (Ready=False, Reconciling=False): the failure budget is spent, or a
//     Problem (Pod Security, a missing ConfigMap, an invalid spec) blocks every new pod.
//   - Ready=True: every target finished within the failure budget.
//   - Ready=False, Reconciling=False: no target, or suspended with nothing running.
//   - Ready=False, Reconciling=True: pods run, or targets wait for a slot, a retry or a node.
func setConditions(st *ntv1.NodeTaskStatus, f conditionFacts) {
	c := f.Counts
	set := func(typ string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: f.Generation,
		})
	}
	progress := fmt.Sprintf("%d of %d nodes succeeded, %d failed, %d running, %d pending",
		c.Succeeded, c.Targets, c.Failed, c.Running, c.Pending)

	var stalledReason, stalledMsg string
	switch f.Gate {
	case GateBudgetExceeded:
		stalledReason = ntv1.ReasonFailureBudgetExceeded
		stalledMsg = fmt.Sprintf("%s failed (%s), more than rollout.maxFailures allows (%d); no further node starts",
			NodeCount(int(c.Failed)), NameList(f.Failed), f.MaxFailures)
		if c.Running > 0 {
			stalledMsg += fmt.Sprintf(" and the %d running will finish", c.Running)
		}
		stalledMsg += ". Read status.nodes[].output, fix the cause, then change spec.rerunToken to run again, or raise spec.rollout.maxFailures to go on"
	case GateFirstBatchFailed:
		stalledReason = ntv1.ReasonFirstBatchFailed
		stalledMsg = fmt.Sprintf("%s of the first batch failed (%s): the other targets do not start",
			NodeCount(len(f.Batch.failed)), NameList(f.Batch.failed))
		if c.Running > 0 {
			stalledMsg += fmt.Sprintf(" and the %d running will finish", c.Running)
		}
		stalledMsg += ". Read status.nodes[].output, fix the cause, then change spec.rerunToken to run again"
	case GateProblem:
		stalledReason, stalledMsg = f.Problem.Reason, f.Problem.Message
	case GateHealthStalled:
		stalledReason = ntv1.ReasonHealthCheckFailing
		stalledMsg = fmt.Sprintf("%s past its failAfterSeconds, since %s: no further node starts", f.Health.message(f.Health.stalled),
			f.Health.failingSince.UTC().Format(time.RFC3339))
		if c.Running > 0 {
			stalledMsg += fmt.Sprintf(" and the %d running will finish", c.Running)
		}
		stalledMsg += ". The rollout goes on by itself once the check holds again: look at what it checks"
	}
	if stalledReason != "" {
		set(ntv1.ConditionStalled, metav1.ConditionTrue, stalledReason, stalledMsg)
		set(ntv1.ConditionReconciling, metav1.ConditionFalse, stalledReason, "stalled: "+progress)
		set(ntv1.ConditionReady, metav1.ConditionFalse, stalledReason, stalledMsg)
		return
	}

	set(ntv1.ConditionStalled, metav1.ConditionFalse, ntv1.ReasonProgressing, "")
	done := c.Targets > 0 && c.Pending == 0 && c.Running == 0 && len(f.Releasing) == 0 && len(f.Settling) == 0
	switch {
	case done:
		msg := fmt.Sprintf("succeeded on all %d nodes", c.Targets)
		if c.Targets == 1 {
			msg = "succeeded on its only node"
		}
		if c.Failed > 0 {
			msg = fmt.Sprintf("%d of %d nodes succeeded; %d failed (%s), within rollout.maxFailures (%d)",
				c.Succeeded, c.Targets, c.Failed, NameList(f.Failed), f.MaxFailures)
		}
		if n := len(f.RebootRequired); n > 0 {
			msg += fmt.Sprintf("; %d must restart to finish (%s)", n, NameList(f.RebootRequired))
		}
		reason := ntv1.ReasonSucceeded
		if f.Check {
			reason, msg = complianceMessage(f, msg)
		}
		set(ntv1.ConditionReconciling, metav1.ConditionFalse, reason, "")
		set(ntv1.ConditionReady, metav1.ConditionTrue, reason, msg)
	case c.Targets == 0:
		msg := "no Windows node matches spec.nodeSelector, spec.nodeNames and spec.tolerations"
		set(ntv1.ConditionReconciling, metav1.ConditionFalse, ntv1.ReasonNoTargets, "")
		set(ntv1.ConditionReady, metav1.ConditionFalse, ntv1.ReasonNoTargets, msg)
	case f.Gate == GateSuspended && c.Running == 0:
		msg := "suspended: " + progress + "; set spec.suspend to false to go on"
		set(ntv1.ConditionReconciling, metav1.ConditionFalse, ntv1.ReasonSuspended, "")
		set(ntv1.ConditionReady, metav1.ConditionFalse, ntv1.ReasonSuspended, msg)
	default:
		reason, msg := ntv1.ReasonProgressing, progress+fmt.Sprintf(" (rollout.maxConcurrent %d)", f.MaxConcurrent)
		switch {
		case f.Gate == GateSuspended:
			reason, msg = ntv1.ReasonSuspended, "suspended: "+progress+"; the running pods will finish"
		case f.Waiting != nil:
			reason, msg = f.Waiting.Reason, progress+"; "+f.Waiting.Message
		case f.Gate == GateHealthFailing:
			reason = ntv1.ReasonHealthCheckFailing
			msg = fmt.Sprintf("%s; %s, since %s: no node starts until it does", progress, f.Health.message(f.Health.failing),
				f.Health.failingSince.UTC().Format(time.RFC3339))
		case f.Gate == GateAwaitingApproval:
			reason = ntv1.ReasonAwaitingApproval
			msg = fmt.Sprintf("%s; the first batch succeeded (%s) and the run waits for approval: "+
				"run `kubectl nodetask approve %s -n %s`, or set spec.rollout.approvedRun to %d",
				progress, NameList(f.Batch.names), f.Name, f.Namespace, f.Run)
		case f.Batch.names != nil && !f.Batch.done:
			reason = ntv1.ReasonFirstBatch
			msg = fmt.Sprintf("%s; first batch: %s (the other targets wait for it)", progress, NameList(f.Batch.names))
		case c.Running > 0:
		case len(f.Releasing) > 0 && c.Pending == 0:
			msg = progress + "; releasing (uncordoning) " + NameList(f.Releasing)
		case len(f.Settling) > 0 && c.Pending == 0:
			reason = ntv1.ReasonMinReady
			msg = fmt.Sprintf("%s; waiting rollout.minReadySeconds (%ds) for %s", progress, f.MinReady, NameList(f.Settling))
		case f.Gate == GateWindowClosed:
			reason = ntv1.ReasonOutsideMaintenanceWindow
			msg = progress + "; outside spec.window, which opens next at " + f.NextWindow.Format(time.RFC3339)
		case len(f.NotReady) > 0 && int32(len(f.NotReady)) == c.Pending:
			reason = ntv1.ReasonWaitingForNodes
			msg = progress + "; waiting for nodes that are not Ready or are under pressure: " + NameList(f.NotReady)
		case len(f.Backoff) > 0 && int32(len(f.Backoff)) == c.Pending:
			reason = ntv1.ReasonRetryBackoff
			msg = progress + "; waiting to retry: " + NameList(f.Backoff)
		}
		set(ntv1.ConditionReconciling, metav1.ConditionTrue, reason, msg)
		set(ntv1.ConditionReady, metav1.ConditionFalse, reason, msg)
	}
}

// complianceMessage is the Ready message of a finished task with spec.check: how many nodes
// are out of compliance, named. An Audit run that found drift is done (Ready) with reason
// NonCompliant; an Apply run's non-compliant nodes are its failures, and its message says so.
func complianceMessage(f conditionFacts, done string) (reason, msg string) {
	c := f.Counts
	if f.Audit {
		done = fmt.Sprintf("audit finished on %d of %d nodes", c.Compliant+c.NonCompliant, c.Targets)
		if c.Failed > 0 {
			done += fmt.Sprintf("; the check failed on %d (%s)", c.Failed, NameList(f.Failed))
		}
	}
	summary := fmt.Sprintf("%d compliant", c.Compliant)
	if c.Remediated > 0 {
		summary += fmt.Sprintf(" (%d remediated)", c.Remediated)
	}
	if c.NonCompliant == 0 {
		return ntv1.ReasonSucceeded, done + "; " + summary + ", none out of compliance"
	}
	msg = fmt.Sprintf("%s; %s, %s out of compliance (%s)", done, summary, NodeCount(int(c.NonCompliant)), NameList(f.NonCompliant))
	if f.Audit {
		return ntv1.ReasonNonCompliant, msg + ": run the task in mode Apply with a fix in spec.script to repair them"
	}
	return ntv1.ReasonSucceeded, msg
}
