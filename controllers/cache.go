package controllers

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

// CacheOptions limits the manager's cache to what the controller reads: the pods it made
// (by label, without managedFields) and the Windows nodes, trimmed to the fields the planner
// uses. At 5000 nodes a full Node object (images, volumes, managedFields) is several
// kilobytes; the trimmed one a few hundred bytes. ConfigMaps are never cached: the controller reads them straight from
// the API server, and rarely.
func CacheOptions() cache.Options {
	managed, err := labels.NewRequirement(ntv1.LabelTask, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant, valid requirement
	}
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			// managedFields are a fifth of the pods' cached bytes (heap profile at 5000
			// nodes) and nothing reads them.
			&corev1.Pod{}: {Label: labels.NewSelector().Add(*managed), Transform: trimForeignPod},
			&corev1.Node{}: {
				Label:     labels.SelectorFromSet(labels.Set{rollout.OSLabel: rollout.WindowsOS}),
				Transform: TrimNode,
			},
			// Namespaces are watched only for their labels (Pod Security levels).
			&corev1.Namespace{}: {Transform: keepLabelsOnly},
			// Schedules: nothing reads their managedFields either.
			&ntv1.NodeTaskSchedule{}: {Transform: dropManagedFields},
			// Result slices: only this controller writes them.
			&ntv1.NodeResultSlice{}: {Transform: dropManagedFields},
		},
	}
}

// trimForeignPod is a cache transform for pods: it drops managedFields, and keeps of a pod
// that carries the operator's label but is no NodeTask's only its identity. A label is
// anyone's to set: such pods must cost the cache next to nothing, and mean nothing.
func trimForeignPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	if ref := metav1.GetControllerOf(pod); ref == nil || !isNodeTaskRef(ref) {
		stub := &corev1.Pod{}
		stub.Name, stub.Namespace, stub.UID, stub.ResourceVersion = pod.Name, pod.Namespace, pod.UID, pod.ResourceVersion
		return stub, nil
	}
	pod.ManagedFields = nil
	return pod, nil
}

// UncachedObjects are read from the API server directly.
var UncachedObjects = []client.Object{&corev1.ConfigMap{}}

// TrimNode is a cache transform that keeps only the fields of a Node the planner reads:
// name, UID and creation time, labels, the operator's own annotations (claims) and
// managedFields entry, taints, schedulability, the boot ID and the Ready condition.
func TrimNode(obj any) (any, error) {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	trimmed := &corev1.Node{}
	trimmed.Name = node.Name
	trimmed.UID = node.UID
	// Identity of the machine: a node created after an attempt started is another machine.
	trimmed.CreationTimestamp = node.CreationTimestamp
	trimmed.ResourceVersion = node.ResourceVersion
	trimmed.Labels = node.Labels
	trimmed.DeletionTimestamp = node.DeletionTimestamp
	for k, v := range node.Annotations {
		if strings.HasPrefix(k, annotationPrefix) {
			if trimmed.Annotations == nil {
				trimmed.Annotations = map[string]string{}
			}
			trimmed.Annotations[k] = v
		}
	}
	trimmed.Status.NodeInfo.BootID = node.Status.NodeInfo.BootID
	trimmed.Spec.Taints = node.Spec.Taints
	trimmed.Spec.Unschedulable = node.Spec.Unschedulable
	for _, mf := range node.ManagedFields {
		// The operator's own entry says whether its cordon is still the last word (rollout.OperatorCordoned).
		if mf.Manager == rollout.FieldManager {
			trimmed.ManagedFields = append(trimmed.ManagedFields, mf)
		}
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			// The transition time tells a restart from a kubelet that reports no boot ID.
			trimmed.Status.Conditions = []corev1.NodeCondition{{Type: c.Type, Status: c.Status, LastTransitionTime: c.LastTransitionTime}}
		}
	}
	return trimmed, nil
}

// annotationPrefix starts the node annotations the operator reads.
const annotationPrefix = "nodetask.io/"

// keepLabelsOnly is a cache transform that keeps an object's identity and labels.
func keepLabelsOnly(obj any) (any, error) {
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj, nil
	}
	trimmed := &corev1.Namespace{}
	trimmed.Name, trimmed.UID, trimmed.ResourceVersion, trimmed.Labels = ns.Name, ns.UID, ns.ResourceVersion, ns.Labels
	return trimmed, nil
}

// dropManagedFields is a cache transform that drops an object's managedFields.
func dropManagedFields(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok {
		o.SetManagedFields(nil)
	}
	return obj, nil
}
