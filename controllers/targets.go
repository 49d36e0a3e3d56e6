package controllers

import (
	"maps"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// Node labels and taints the operator relies on.
const (
	// OSLabel is the well-known label that names a node's operating system.
	OSLabel = corev1.LabelOSStable
	// WindowsOS is the value of OSLabel on Windows nodes.
	WindowsOS = "windows"
)

// conditionTaints are taints that describe a node's passing state rather than a user's
// wish to keep workloads away. The planner handles that state itself (a NotReady node or a
// node under pressure waits, a cordoned node is still a target), so these never exclude a
// node: a short spell of disk pressure must not drop a node from the run, nor make the task
// report Ready and then flip back.
var conditionTaints = func() map[string]bool {
	m := map[string]bool{
		corev1.TaintNodeNotReady:      true,
		corev1.TaintNodeUnreachable:   true,
		corev1.TaintNodeUnschedulable: true,
	}
	maps.Copy(m, unavailableTaints)
	return m
}()

// unavailableTaints are the condition taints during which a node waits to start the task.
// (A cordon does not stop it: node maintenance tasks must run on cordoned nodes.)
var unavailableTaints = map[string]bool{
	corev1.TaintNodeDiskPressure:       true,
	corev1.TaintNodeMemoryPressure:     true,
	corev1.TaintNodePIDPressure:        true,
	corev1.TaintNodeNetworkUnavailable: true,
}

// nodeSelection is a task's node selector, parsed once per reconcile.
type nodeSelection struct {
	selector    labels.Selector
	names       map[string]bool
	tolerations []corev1.Toleration
}

// newNodeSelection parses the selection part of a task's spec.
func newNodeSelection(spec *ntv1.NodeTaskSpec) (*nodeSelection, error) {
	sel := labels.Everything()
	if spec.NodeSelector != nil {
		var err error
		if sel, err = metav1.LabelSelectorAsSelector(spec.NodeSelector); err != nil {
			return nil, err
		}
	}
	var names map[string]bool
	if len(spec.NodeNames) > 0 {
		names = make(map[string]bool, len(spec.NodeNames))
		for _, n := range spec.NodeNames {
			names[n] = true
		}
	}
	return &nodeSelection{selector: sel, names: names, tolerations: spec.Tolerations}, nil
}

// matches reports whether a node is a target of the task: a Windows node that matches the
// selector and the name list and whose NoSchedule and NoExecute taints are all tolerated.
func (s *nodeSelection) matches(node *corev1.Node) bool {
	if node.Labels[OSLabel] != WindowsOS {
		return false
	}
	if s.names != nil && !s.names[node.Name] {
		return false
	}
	if !s.selector.Matches(labels.Set(node.Labels)) {
		return false
	}
	return s.tolerates(node.Spec.Taints)
}

func (s *nodeSelection) tolerates(taints []corev1.Taint) bool {
	for i := range taints {
		t := &taints[i]
		if t.Effect == corev1.TaintEffectPreferNoSchedule || conditionTaints[t.Key] {
			continue
		}
		if !toleratedBy(t, s.tolerations) {
			return false
		}
	}
	return true
}

// toleratedBy reports whether one of the tolerations tolerates the taint.
func toleratedBy(t *corev1.Taint, tolerations []corev1.Toleration) bool {
	for j := range tolerations {
		// Gt/Lt tolerations are alpha in Kubernetes 1.37; like a cluster without the
		// feature gate, the operator does not honour them.
		if tolerations[j].ToleratesTaint(klog.Background(), t, false) {
			return true
		}
	}
	return false
}

// nodeReady reports whether the node's Ready condition is True.
func nodeReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// nodeBlocked says why a target node cannot start an attempt now: NodeNotReady,
// NodeUnavailable (a pressure or network taint the task does not tolerate), or "" if it can.
func nodeBlocked(node *corev1.Node, tolerations []corev1.Toleration) string {
	if !nodeReady(node) {
		return ntv1.NodeReasonNodeNotReady
	}
	for i := range node.Spec.Taints {
		t := &node.Spec.Taints[i]
		if !unavailableTaints[t.Key] || t.Effect == corev1.TaintEffectPreferNoSchedule {
			continue
		}
		if !toleratedBy(t, tolerations) {
			return ntv1.NodeReasonNodeUnavailable
		}
	}
	return ""
}
