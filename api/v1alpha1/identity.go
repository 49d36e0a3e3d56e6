package v1alpha1

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// A pod's identity: the labels and annotation the operator puts on the pods (and script
// ConfigMaps) it makes, and their readers. The controller, the metrics and the kubectl
// plugin all read pods through these, so that the encoding lives in one place.
const (
	// LabelTask names the NodeTask (shortened with a hash when the name is longer than a label value may be).
	LabelTask = "nodetask.io/task"
	// LabelNode names the node a pod runs on, when the name fits in a label value.
	LabelNode = "nodetask.io/node"
	// LabelRevision is the task revision (the hash of what runs) a pod runs.
	LabelRevision = "nodetask.io/revision"
	// LabelRun is the run (status.run) a pod or script ConfigMap belongs to.
	LabelRun = "nodetask.io/run"
	// LabelAttempt is the attempt number, from 1, of a pod on its node in its run.
	LabelAttempt = "nodetask.io/attempt"
	// LabelNodeUID is the UID of the Node object a pod was made for: a node deleted and
	// created again under its name is another machine.
	LabelNodeUID = "nodetask.io/node-uid"
	// LabelRole is "reboot" on the pod that restarts a node; a task's run pods have none.
	LabelRole = "nodetask.io/role"
	// RoleReboot is the value of LabelRole on restart pods.
	RoleReboot = "reboot"
	// LabelManagedBy marks objects made by this operator.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of LabelManagedBy.
	ManagedByValue = "nodetask-operator"
	// AnnotationBootID on a restart pod is the node's boot ID when the pod was made.
	AnnotationBootID = "nodetask.io/boot-id"
)

// PodRevision returns the task revision a pod runs.
func PodRevision(pod *corev1.Pod) string { return pod.Labels[LabelRevision] }

// PodNodeUID returns the UID of the Node object a pod was made for, or "".
func PodNodeUID(pod *corev1.Pod) string { return pod.Labels[LabelNodeUID] }

// PodRun returns the run a pod belongs to, or 0.
func PodRun(pod *corev1.Pod) int64 {
	n, _ := strconv.ParseInt(pod.Labels[LabelRun], 10, 64)
	return n
}

// PodAttempt returns a pod's attempt number on its node in its run, or 0.
func PodAttempt(pod *corev1.Pod) int32 {
	n, _ := strconv.ParseInt(pod.Labels[LabelAttempt], 10, 32)
	return int32(n)
}

// IsRebootPod reports whether the pod restarts a node rather than running an attempt.
func IsRebootPod(pod *corev1.Pod) bool { return pod.Labels[LabelRole] == RoleReboot }
