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
