package rollout

import (
	"encoding/json"
	"time"

	corev1 "k8s.io/api/core/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// NodePatch is the JSON merge patch that carries out op on the node as last read, or nil
// when there is nothing to change. It names the node's resourceVersion, so that the API
// server refuses it if the node changed meanwhile: two tasks never both take a claim.
//
// The cordon belongs to the claim that made it: a claim records whether it cordoned the
// node, and the release uncordons only such a node, and only while the operator's write
// is still the last one to spec.unschedulable (OperatorCordoned). A cordoned-by mark that
// no longer matches the node is dropped on the way.
func NodePatch(task *ntv1.NodeTask, node *corev1.Node, op NodeOp, now time.Time) []byte {
	ann := map[string]any{}
	spec := map[string]any{}
	claim := ReadClaim(node)
	ours := claim != nil && claim.UID == task.UID
	marked := false // the patch sets or removes the cordoned-by mark
	mark := func(v any) { ann[AnnotationCordonedBy], marked = v, true }
	switch op.Kind {
	case OpClaim:
		cordon := op.Cordon && !node.Spec.Unschedulable
		ann[AnnotationClaim] = ClaimValue(task, now, cordon || op.TakeOverCordon)
		if cordon {
			spec["unschedulable"] = true
		}
		if cordon || op.TakeOverCordon {
			mark(string(task.UID))
		}
	case OpCordon:
		if ours && !node.Spec.Unschedulable {
			ann[AnnotationClaim] = ClaimValue(task, claim.Since.Time, true)
			spec["unschedulable"] = true
			mark(string(task.UID))
		}
	case OpRelease:
		if ours {
			ann[AnnotationClaim] = nil
		}
		if op.Uncordon && ours && claim.Cordoned && OperatorCordoned(node) {
			spec["unschedulable"] = nil
			mark(nil)
		}
	}
	if _, ok := node.Annotations[AnnotationCordonedBy]; ok && !marked && len(ann) > 0 && !OperatorCordoned(node) {
		// Someone changed the node's schedulability since the operator's cordon: the mark
		// no longer says who cordoned it.
		ann[AnnotationCordonedBy] = nil
	}
	if len(ann) == 0 && len(spec) == 0 {
		return nil
	}
	patch := map[string]any{"metadata": map[string]any{"resourceVersion": node.ResourceVersion, "annotations": ann}}
	if len(spec) > 0 {
		patch["spec"] = spec
	}
	b, err := json.Marshal(patch)
	if err != nil {
		panic(err) // strings, booleans and nils
	}
	return b
}
