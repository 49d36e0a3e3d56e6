package rollout

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// The whole status of a NodeTask is computed here, from the observed state, the plan and
// what applying the plan did. Nothing else writes status fields.

const (
	// maxObjectBytes is the size the serialized NodeTask must stay under, measured as stored:
	// metadata (annotations such as kubectl's last-applied copy of the spec, managedFields),
	// spec and status. etcd refuses objects over 1.5 MiB; staying under 1 MiB leaves room
	// for a spec that grows and for watchers that decode the object on every change.
	maxObjectBytes = 1 << 20
	// reservedBytes is kept free for what changes after we measure: the new status's
	// managedFields time, resourceVersion, conditions' messages.
	reservedBytes = 64 << 10
	// hardObjectBytes is what a status write may never exceed: etcd's limit less room for
	// the API server's own fields. Past the budget above, the task is Stalled; past this,
	// its entries are not rewritten either.
	hardObjectBytes = 3<<19 - reservedBytes
	// maxNamesInMessage is how many node names a condition message lists before "(N more)".
	maxNamesInMessage = 3
)

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

// counts are the per-phase totals over the targets of the current run.
type counts struct {
	Targets, Pending, Running, Succeeded, Failed int32
}

// countTargets counts the target entries by phase; a target whose entry belongs to an older
// run, or that has no entry, has not started the current one and counts as pending.
func countTargets(entries []ntv1.NodeStatus, targets map[string]bool, run int64) counts {
	c := counts{Targets: int32(len(targets))}
	for i := range entries {
		e := &entries[i]
		if !targets[e.Name] || e.Run != run {
			continue
		}
		switch {
		case e.Phase == ntv1.NodeRunning || e.Phase == ntv1.NodeRebooting:
			c.Running++
		case e.Phase == ntv1.NodeSucceeded:
			c.Succeeded++
		case e.Phase == ntv1.NodeFailed:
			c.Failed++
		}
	}
	c.Pending = c.Targets - c.Running - c.Succeeded - c.Failed
	return c
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

	entries := append([]ntv1.NodeStatus(nil), p.Nodes...)
	if len(out.Started)+len(out.Rejected) > 0 {
		at := make(map[string]int, len(entries))
		for i := range entries {
			at[entries[i].Name] = i
		}
		// What apply did is the lifecycle's to record, like every other change of an entry.
		lc := newLifecycle(task, p.Run, p.Revision, obs.Now)
		for _, a := range out.Started {
			if i, ok := at[a.Node]; ok {
				entries[i] = lc.started(a)
			}
		}
		for _, a := range out.Rejected {
			if i, ok := at[a.Node]; ok {
				entries[i] = lc.rejected(a)
			}
		}
	}

	c := countTargets(entries, p.Targets, p.Run)
	st.Targets, st.Pending, st.Running, st.Succeeded, st.Failed = c.Targets, c.Pending, c.Running, c.Succeeded, c.Failed
	if c.Targets > 0 && c.Pending == 0 && c.Running == 0 {
		st.CompletionTime = task.Status.CompletionTime
		if p.NewRun || st.CompletionTime == nil {
			st.CompletionTime = &now
		}
	}

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
	}
	if f.Problem == nil && out.Problem != nil {
		// Found by apply (a pod refused after the dry run, a missing script ConfigMap): it
		// stalls the task unless a spent failure budget already does.
		f.Problem = out.Problem
		if f.Gate != GateBudgetExceeded {
			f.Gate = GateProblem
		}
	}
	f.Waiting = out.Waiting
	for i := range entries {
		e := &entries[i]
		if !p.Targets[e.Name] || e.Run != p.Run {
			continue
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
	case GateProblem:
		stalledReason, stalledMsg = f.Problem.Reason, f.Problem.Message
	}
	if stalledReason != "" {
		set(ntv1.ConditionStalled, metav1.ConditionTrue, stalledReason, stalledMsg)
		set(ntv1.ConditionReconciling, metav1.ConditionFalse, stalledReason, "stalled: "+progress)
		set(ntv1.ConditionReady, metav1.ConditionFalse, stalledReason, stalledMsg)
		return
	}

	set(ntv1.ConditionStalled, metav1.ConditionFalse, ntv1.ReasonProgressing, "")
	done := c.Targets > 0 && c.Pending == 0 && c.Running == 0 && len(f.Releasing) == 0
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
		set(ntv1.ConditionReconciling, metav1.ConditionFalse, ntv1.ReasonSucceeded, "")
		set(ntv1.ConditionReady, metav1.ConditionTrue, ntv1.ReasonSucceeded, msg)
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
		case c.Running > 0:
		case len(f.Releasing) > 0 && c.Pending == 0:
			msg = progress + "; releasing (uncordoning) " + NameList(f.Releasing)
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

// NodeCount is "1 node" or "N nodes".
func NodeCount(n int) string { return CountOf(n, "node") }

// CountOf is "1 <noun>" or "N <noun>s".
func CountOf(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// NameList names at most maxNamesInMessage items, then "(N more)".
func NameList(names []string) string {
	if len(names) <= maxNamesInMessage {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s (%d more)", strings.Join(names[:maxNamesInMessage], ", "), len(names)-maxNamesInMessage)
}

// fitOutputs shortens the nodes' outputs, keeping their ends, so that the whole object
// stays under maxObjectBytes, and returns the object's size without outputs. Entries
// themselves are never dropped. Nodes that did not succeed have the first claim on the
// room, since their output says what went wrong; succeeded nodes share what is left.
// Within each group every output gets the same cap, as large as fits, and an output
// shorter than the cap leaves the rest to the others.
func fitOutputs(task *ntv1.NodeTask, st *ntv1.NodeTaskStatus) int {
	var first, second []int // indexes of entries with output, by priority
	for i := range st.Nodes {
		switch {
		case st.Nodes[i].Output == "":
		case st.Nodes[i].Phase == ntv1.NodeSucceeded:
			second = append(second, i)
		default:
			first = append(first, i)
		}
	}
	outputs := make([]string, len(st.Nodes))
	for i := range st.Nodes {
		outputs[i], st.Nodes[i].Output = st.Nodes[i].Output, ""
	}
	size := ObjectSize(task, st)
	available := maxObjectBytes - reservedBytes - size
	for _, group := range [][]int{first, second} {
		limit, used := largestLimit(outputs, group, max(available, 0))
		for _, i := range group {
			st.Nodes[i].Output = tailBytes(outputs[i], limit)
		}
		available -= used
	}
	return size
}

// ObjectSize is the size of the task as stored with the given status: metadata with its
// annotations and managedFields, spec, and status. The entries are counted field by field
// rather than encoded: at 5000 nodes that is the difference between microseconds and
// milliseconds on every reconcile.
func ObjectSize(task *ntv1.NodeTask, st *ntv1.NodeTaskStatus) int {
	probe := ntv1.NodeTask{ObjectMeta: task.ObjectMeta, Spec: task.Spec, Status: *st}
	probe.Status.Nodes = nil
	b, err := json.Marshal(&probe)
	if err != nil {
		return 0 // cannot happen for plain data
	}
	return len(b) + nodesJSONLen(st.Nodes, true)
}

// nodesJSONLen is what a list of entries adds to the object, with or without their outputs.
func nodesJSONLen(entries []ntv1.NodeStatus, outputs bool) int {
	if len(entries) == 0 {
		return 0
	}
	n := len(`,"nodes":[]`) + len(entries) - 1
	for i := range entries {
		n += entryJSONLen(&entries[i], outputs)
	}
	return n
}

// entryJSONLen is the length of an entry's JSON encoding (with or without its output), at
// most a few bytes more where a string needs escapes that jsonStringLen overcounts.
func entryJSONLen(e *ntv1.NodeStatus, output bool) int {
	const timeLen = len(`"2006-01-02T15:04:05Z"`) // metav1.Time encodes as RFC 3339 in UTC
	n := len(`{"name":"","phase":""}`) + jsonStringLen(e.Name) + jsonStringLen(string(e.Phase))
	if e.Run != 0 {
		n += len(`,"run":`) + len(strconv.FormatInt(e.Run, 10))
	}
	if e.Attempts != 0 {
		n += len(`,"attempts":`) + len(strconv.FormatInt(int64(e.Attempts), 10))
	}
	if e.ExitCode != nil {
		n += len(`,"exitCode":`) + len(strconv.FormatInt(int64(*e.ExitCode), 10))
	}
	if e.Reason != "" {
		n += len(`,"reason":""`) + jsonStringLen(e.Reason)
	}
	if output && e.Output != "" {
		n += len(`,"output":""`) + jsonStringLen(e.Output)
	}
	if e.StartTime != nil {
		n += len(`,"startTime":`) + timeLen
	}
	if e.FinishTime != nil {
		n += len(`,"finishTime":`) + timeLen
	}
	if e.BootIDBefore != "" {
		n += len(`,"bootIDBefore":""`) + jsonStringLen(e.BootIDBefore)
	}
	if e.BootIDAfter != "" {
		n += len(`,"bootIDAfter":""`) + jsonStringLen(e.BootIDAfter)
	}
	return n
}

// statusTooLarge reports the problem of a task whose per-node results, without outputs,
// no longer fit in the object (5000 long node names with a large inline script, which
// kubectl apply also copies into an annotation).
func statusTooLarge(task *ntv1.NodeTask, entries []ntv1.NodeStatus, starting int) *Problem {
	budget := maxObjectBytes - reservedBytes
	meta := ObjectSize(task, &ntv1.NodeTaskStatus{Conditions: task.Status.Conditions})
	// Each pod about to start adds a start time to its entry.
	size := meta + nodesJSONLen(entries, false) + starting*len(`,"startTime":"2006-01-02T15:04:05Z"`)
	if size <= budget {
		return nil
	}
	return &Problem{Reason: ntv1.ReasonStatusTooLarge, Message: fmt.Sprintf(
		"the results of %d nodes no longer fit in the NodeTask: it would take %d KiB, over the %d KiB this operator allows "+
			"(etcd refuses objects over 1.5 MiB), and its metadata and spec take %d KiB of that. No further node starts and no pod "+
			"is deleted, so no result is lost. Split the task into several with narrower spec.nodeSelector, or move a large inline "+
			"script into a ConfigMap (spec.script.configMapKeyRef): `kubectl apply` keeps a second copy of the spec in an annotation, "+
			"which server-side apply does not", len(entries), size>>10, budget>>10, meta>>10)}
}

// largestLimit finds the largest per-output cap, at most maxOutputBytes, at which the outputs
// named by group fit in available bytes of JSON, and returns it with the bytes it takes.
func largestLimit(outputs []string, group []int, available int) (limit, used int) {
	// cost is what the outputs add to the object when each keeps its last limit bytes. The
	// outputs are valid UTF-8 already (podResult made them so), so cutting is just slicing.
	cost := func(limit int) int {
		sum := 0
		for _, i := range group {
			if t := tailBytes(outputs[i], limit); t != "" {
				sum += len(`,"output":""`) + jsonStringLen(t)
			}
		}
		return sum
	}
	if c := cost(maxOutputBytes); c <= available {
		return maxOutputBytes, c
	}
	// Search upwards from small limits: each probe then reads about as many bytes as the
	// budget holds, not every byte of every output.
	lo, hi := 0, 1
	for hi < maxOutputBytes && cost(hi) <= available {
		lo, hi = hi, hi*2
	}
	hi = min(hi, maxOutputBytes) - 1 // cost(hi+1) > available
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if cost(mid) <= available {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo, cost(lo)
}

// tailBytes returns the last n bytes of a valid UTF-8 string, cut at a rune boundary.
func tailBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	for len(s) > 0 && !utf8.RuneStart(s[0]) {
		s = s[1:]
	}
	return s
}

// jsonStringLen is an upper bound of the encoded length of s as a JSON string body,
// counting the escapes encoding/json writes.
func jsonStringLen(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case b == '"' || b == '\\' || b == '\n' || b == '\r' || b == '\t':
			n += 2
		case b < 0x20 || b == '<' || b == '>' || b == '&':
			n += 6
		case b == 0xE2 && i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xA8 || s[i+2] == 0xA9):
			n += 6 // U+2028 and U+2029 are escaped
			i += 2
		default:
			n++
		}
	}
	return n
}

// StatusChanged reports whether writing st would change the stored status, that is whether
// their JSON differs. It compares without encoding (at 5000 nodes, encoding both took an
// eighth of the manager's CPU): the entries field by field, the rest with storedEquality.
// Times count to the second, as the API stores them; empty lists equal absent ones.
func StatusChanged(old, st *ntv1.NodeTaskStatus) bool {
	if len(old.Nodes) != len(st.Nodes) {
		return true
	}
	for i := range old.Nodes {
		if !sameEntry(&old.Nodes[i], &st.Nodes[i]) {
			return true
		}
	}
	a, b := *old, *st
	a.Nodes, b.Nodes = nil, nil
	return !storedEquality.DeepEqual(&a, &b)
}

// sameEntry compares two node entries as their JSON would. TestSameEntryComparesEveryField
// fails when a field of NodeStatus is left out here.
func sameEntry(a, b *ntv1.NodeStatus) bool {
	return a.Name == b.Name && a.Phase == b.Phase && a.Run == b.Run && a.Attempts == b.Attempts &&
		ptr.Equal(a.ExitCode, b.ExitCode) && a.Reason == b.Reason && a.Output == b.Output &&
		sameTime(a.StartTime, b.StartTime) && sameTime(a.FinishTime, b.FinishTime) &&
		a.BootIDBefore == b.BootIDBefore && a.BootIDAfter == b.BootIDAfter
}

// sameTime compares optional times to the second.
func sameTime(a, b *metav1.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Unix() == b.Unix()
}

// storedEquality compares values as their stored JSON would: Semantic's forked DeepEqual
// already takes nil and empty slices and maps as equal.
var storedEquality = conversion.EqualitiesOrDie(
	func(a, b metav1.Time) bool { return a.Unix() == b.Unix() },
)

// NewResults returns the final results of the current run that st holds and old did not.
func NewResults(old, st *ntv1.NodeTaskStatus) []ntv1.NodeStatus {
	var out []ntv1.NodeStatus
	for i := range st.Nodes {
		e := st.Nodes[i]
		e.Run = st.RunOf(&e)
		if e.Run != st.Run || (e.Phase != ntv1.NodeSucceeded && e.Phase != ntv1.NodeFailed) {
			continue
		}
		if o := old.Node(e.Name); o != nil {
			if old.RunOf(o) == e.Run && o.Phase == e.Phase && o.Attempts == e.Attempts {
				continue
			}
		}
		out = append(out, e)
	}
	return out
}

// FailedNames names the failed nodes among results.
func FailedNames(results []ntv1.NodeStatus) []string {
	var names []string
	for _, e := range results {
		if e.Phase == ntv1.NodeFailed {
			names = append(names, e.Name)
		}
	}
	return names
}
