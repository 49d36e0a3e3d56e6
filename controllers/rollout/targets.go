package rollout

import (
	"fmt"
	"maps"
	"slices"
	"strings"

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

// exclusion says why a node is not selected by the task, or "" if it is: a target is a
// Windows node that matches the selector and the name list and whose NoSchedule and
// NoExecute taints are all tolerated.
func (s *nodeSelection) exclusion(node *corev1.Node) string {
	if os := node.Labels[OSLabel]; os != WindowsOS {
		if os == "" {
			return "not a Windows node (no " + OSLabel + " label)"
		}
		return "not a Windows node (" + OSLabel + "=" + os + ")"
	}
	if s.names != nil && !s.names[node.Name] {
		return "not in spec.nodeNames"
	}
	if !s.selector.Matches(labels.Set(node.Labels)) {
		return "spec.nodeSelector does not match"
	}
	if t := s.untolerated(node.Spec.Taints); t != nil {
		return "taint " + t.ToString() + " not tolerated"
	}
	return ""
}

// untolerated returns the first NoSchedule or NoExecute taint the task does not tolerate,
// leaving out the taints that describe a node's passing state.
func (s *nodeSelection) untolerated(taints []corev1.Taint) *corev1.Taint {
	for i := range taints {
		t := &taints[i]
		if t.Effect == corev1.TaintEffectPreferNoSchedule || conditionTaints[t.Key] {
			continue
		}
		if !toleratedBy(t, s.tolerations) {
			return t
		}
	}
	return nil
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

// NodeReady reports whether the node's Ready condition is True.
func NodeReady(node *corev1.Node) bool {
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
	if !NodeReady(node) {
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

// TargetDecision is whether one node is a target of a task now, and why (not).
type TargetDecision struct {
	// Node is the node's name.
	Node string `json:"node"`
	// Target is true when the task runs on the node.
	Target bool `json:"target"`
	// Excluded says why the node is not a target: not Windows, not selected, a taint the
	// task does not tolerate, or a node that joined after the run started (newNodes: Ignore).
	Excluded string `json:"excluded,omitempty"`
	// Waits names, for a target, why it cannot start now (NodeNotReady or NodeUnavailable).
	Waits string `json:"waits,omitempty"`
}

// ExplainTargets decides, with the controller's own selection code, which of the nodes are
// targets of the task now and why the others are not, sorted by node name. A task not yet
// created (no status) is judged as at the start of its first run.
func ExplainTargets(task *ntv1.NodeTask, nodes []corev1.Node) ([]TargetDecision, error) {
	sel, err := newNodeSelection(&task.Spec)
	if err != nil {
		return nil, fmt.Errorf("spec.nodeSelector is invalid: %w", err)
	}
	byName := make(map[string]*corev1.Node, len(nodes))
	for i := range nodes {
		byName[nodes[i].Name] = &nodes[i]
	}
	_, newRun := CurrentRun(&task.Status, Revision(&task.Spec))
	stored := storedEntries(&task.Status, byName)
	out := make([]TargetDecision, 0, len(nodes))
	for i := range nodes {
		node := &nodes[i]
		d := TargetDecision{Node: node.Name, Excluded: targetExclusion(sel, task, newRun, stored, node)}
		if d.Target = d.Excluded == ""; d.Target {
			d.Waits = nodeBlocked(node, task.Spec.Tolerations)
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b TargetDecision) int { return strings.Compare(a.Node, b.Node) })
	return out, nil
}

// targetExclusion says why a node is not a target of the task's current run, or "" if it
// is one. stored holds the entries of the task's status that still describe their node.
func targetExclusion(sel *nodeSelection, task *ntv1.NodeTask, newRun bool, stored map[string]ntv1.NodeStatus, node *corev1.Node) string {
	if why := sel.exclusion(node); why != "" {
		return why
	}
	// With newNodes=Ignore the targets are fixed when a run starts: later, only nodes that
	// already have an entry stay targets.
	if task.Spec.NewNodes == ntv1.NewNodesIgnore && !newRun {
		if _, ok := stored[node.Name]; !ok {
			return "joined after the run started (spec.newNodes: Ignore)"
		}
	}
	return ""
}

// counts are the per-phase totals over the targets of the current run.
type counts struct {
	Targets, Pending, Running, Succeeded, Failed int32
	// Compliant (Remediated included), Remediated and NonCompliant count what spec.check
	// found on the targets in the current run.
	Compliant, Remediated, NonCompliant int32
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
		switch e.Compliance {
		case ntv1.Remediated:
			c.Remediated++
			c.Compliant++
		case ntv1.Compliant:
			c.Compliant++
		case ntv1.NonCompliant:
			c.NonCompliant++
		}
	}
	c.Pending = c.Targets - c.Running - c.Succeeded - c.Failed
	return c
}
