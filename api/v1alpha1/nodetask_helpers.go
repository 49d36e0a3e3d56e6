package v1alpha1

import "sort"

// Node returns the entry of the named node in status.nodes, or nil if it has none.
// Entries are kept sorted by name, so the lookup is a binary search.
func (s *NodeTaskStatus) Node(name string) *NodeStatus {
	i := sort.Search(len(s.Nodes), func(i int) bool { return s.Nodes[i].Name >= name })
	if i < len(s.Nodes) && s.Nodes[i].Name == name {
		return &s.Nodes[i]
	}
	return nil
}

// Defaults of fields the CRD defaults, for code that reads a task the API server did not
// default (a task built in a test or by a client): the same numbers as the markers.
const (
	// DefaultTimeoutSeconds is spec.timeoutSeconds when unset.
	DefaultTimeoutSeconds = 600
	// DefaultDrainTimeoutSeconds is spec.drain.timeoutSeconds when unset.
	DefaultDrainTimeoutSeconds = 600
)

// RunOf returns the run an entry of status.nodes belongs to. The stored form leaves an
// entry's run out (0) when it equals status.run, which most entries' does: every reader of
// a stored entry goes through here.
func (s *NodeTaskStatus) RunOf(e *NodeStatus) int64 {
	if e.Run == 0 {
		return s.Run
	}
	return e.Run
}
