package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	corev1 "k8s.io/api/core/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// revisionLength is how many hex digits of the hash a revision keeps: short enough for
// labels and names, long enough that two revisions of one task never collide in practice.
const revisionLength = 10

// revisionInput holds the spec fields that define what runs on a node. Rollout, selection,
// newNodes, suspend, timeout, retries and TTL are left out on purpose: changing them must
// not re-run nodes that have finished.
type revisionInput struct {
	Script             *ntv1.ScriptSpec              `json:"script,omitempty"`
	Container          *ntv1.ContainerSpec           `json:"container,omitempty"`
	Env                []corev1.EnvVar               `json:"env,omitempty"`
	RunAsUserName      string                        `json:"runAsUserName,omitempty"`
	Resources          *corev1.ResourceRequirements  `json:"resources,omitempty"`
	PriorityClassName  string                        `json:"priorityClassName,omitempty"`
	ServiceAccountName string                        `json:"serviceAccountName,omitempty"`
	ImagePullSecrets   []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
	PodLabels          map[string]string             `json:"podLabels,omitempty"`
	PodAnnotations     map[string]string             `json:"podAnnotations,omitempty"`
	RerunToken         string                        `json:"rerunToken,omitempty"`
}

// Revision returns the hash of the spec fields that define what runs on a node.
func Revision(spec *ntv1.NodeTaskSpec) string {
	in := revisionInput{
		Script:             spec.Script,
		Container:          spec.Container,
		Env:                spec.Env,
		RunAsUserName:      spec.RunAsUserName,
		Resources:          spec.Resources,
		PriorityClassName:  spec.PriorityClassName,
		ServiceAccountName: spec.ServiceAccountName,
		ImagePullSecrets:   spec.ImagePullSecrets,
		PodLabels:          spec.PodLabels,
		PodAnnotations:     spec.PodAnnotations,
		RerunToken:         spec.RerunToken,
	}
	// encoding/json sorts map keys, so equal specs always hash alike.
	b, err := json.Marshal(in)
	if err != nil {
		// Every field is plain data; Marshal cannot fail on it.
		panic(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:revisionLength]
}
