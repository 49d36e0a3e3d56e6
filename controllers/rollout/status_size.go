package rollout

import (
	"encoding/json"
	"fmt"
	"strconv"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// The size budget of a NodeTask's status: outputs shortened to fit, the object's size
// counted without encoding, and the problem of a status that no longer fits.

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
)

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
