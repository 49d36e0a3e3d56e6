package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeResultSlice holds the per-node results of one NodeTask for part of its nodes, the way
// an EndpointSlice holds part of a Service's endpoints. The operator writes them for a task
// with more target nodes than its status carries cheaply (status.resultSlices says how many),
// so that the NodeTask itself stays small: every status write goes to etcd whole and to every
// watcher, and at 5000 nodes the results alone are most of a megabyte. Only the operator
// writes slices; they are owned by their task and deleted with it.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=nrs,categories=all
// +kubebuilder:printcolumn:name="Task",type=string,JSONPath=`.task`
// +kubebuilder:printcolumn:name="Run",type=integer,JSONPath=`.run`
// +kubebuilder:printcolumn:name="Index",type=integer,JSONPath=`.index`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeResultSlice struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// task is the name of the NodeTask (in the same namespace) whose results these are.
	Task string `json:"task"`

	// index is the slice's number among the task's slices: a node's entry is in the slice
	// whose index is the FNV-1a hash of the node's name modulo the task's
	// status.resultSlices, so that a node keeps its slice while other nodes come and go.
	// +kubebuilder:validation:Minimum=0
	Index int32 `json:"index"`

	// slices is the task's status.resultSlices this slice was written for.
	// +kubebuilder:validation:Minimum=1
	Slices int32 `json:"slices"`

	// run is the run of the task's status the slice was written with (the task's
	// status.run, or the run the operator was about to record there); an entry whose run is
	// left out belongs to this run. Entries of a run later than the task's status.run are
	// ignored: their task write was lost.
	// +kubebuilder:validation:Minimum=0
	Run int64 `json:"run"`

	// sequence orders the operator's writes of a task's slices: when a node's entry is found
	// in two slices (their number changed and one was not rewritten yet), the slice written
	// last, with the higher sequence, holds the current entry.
	// +kubebuilder:validation:Minimum=0
	Sequence int64 `json:"sequence"`

	// nodes are the entries of the nodes in this slice, sorted by name, in the form of the
	// NodeTask's status.nodes.
	// +optional
	// +listType=atomic
	Nodes []NodeStatus `json:"nodes,omitempty"`
}

// NodeResultSliceList is a list of NodeResultSlices.
//
// +kubebuilder:object:root=true
type NodeResultSliceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	// items are the NodeResultSlices.
	Items []NodeResultSlice `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NodeResultSlice{}, &NodeResultSliceList{})
}
