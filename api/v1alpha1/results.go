package v1alpha1

import (
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
)

// Where a task's per-node results live: in status.nodes, or, when status.resultSlices is set,
// in NodeResultSlices. Both the operator and `kubectl nodetask` read them through here.

// ResultSliceIndex is the slice a node's entry belongs in, out of slices: the FNV-1a hash of
// the name, so that a node keeps its slice while others come and go.
func ResultSliceIndex(node string, slices int32) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(node))
	return int32(h.Sum32() % uint32(slices))
}

// ResultSliceName is the name of a task's slice with the given index. A task name too long
// for the suffix is cut and followed by a hash of it, so that names stay unique and valid.
func ResultSliceName(task string, index int32) string {
	suffix := "-results-" + itoa(int64(index))
	if len(task)+len(suffix) <= maxNameLength {
		return task + suffix
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(task))
	tag := "-" + strconv.FormatUint(uint64(h.Sum32()), 16)
	return strings.TrimRight(task[:maxNameLength-len(suffix)-len(tag)], "-.") + tag + suffix
}

// maxNameLength is the longest object name (a DNS subdomain).
const maxNameLength = 253

func itoa(n int64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// MergeResultSlices returns the entries the slices hold for the status, in the stored form of
// status.nodes (sorted by name; an entry's run left out when it equals st.Run). A node found in
// two slices (their number changed and not every slice was rewritten) takes the entry of the
// slice written last. Slices of other tasks, or of nothing, must be filtered out by the caller.
func MergeResultSlices(st *NodeTaskStatus, from []*NodeResultSlice) []NodeStatus {
	type found struct {
		entry    NodeStatus
		sequence int64
	}
	byName := map[string]found{}
	for _, s := range from {
		for _, e := range s.Nodes {
			if e.Run == 0 {
				e.Run = s.Run
			}
			if e.Run > st.Run {
				// Written ahead of the task (its write was lost): as if not written.
				continue
			}
			if f, ok := byName[e.Name]; ok && f.sequence > s.Sequence {
				continue
			}
			byName[e.Name] = found{entry: e, sequence: s.Sequence}
		}
	}
	out := make([]NodeStatus, 0, len(byName))
	for _, f := range byName {
		if f.entry.Run == st.Run {
			f.entry.Run = 0
		}
		out = append(out, f.entry)
	}
	slices.SortFunc(out, func(a, b NodeStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}
