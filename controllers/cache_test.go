package controllers

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

// TestCachedPodsKeepNoManagedFields: the pod cache drops managedFields (a fifth of the cached
// bytes at 5000 nodes) and keeps what the planner reads.
func TestCachedPodsKeepNoManagedFields(t *testing.T) {
	var transform func(any) (any, error)
	for obj, by := range CacheOptions().ByObject {
		if _, ok := obj.(*corev1.Pod); ok {
			transform = by.Transform
		}
	}
	if transform == nil {
		t.Fatal("the pod cache has no transform")
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{ntv1.LabelTask: "t"},
			OwnerReferences: []metav1.OwnerReference{rollout.OwnerRef(newTask())},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kwok", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:status":{}}`)}}}},
		Spec:   corev1.PodSpec{NodeName: "win-a"},
		Status: corev1.PodStatus{Phase: corev1.PodSucceeded},
	}
	out, err := transform(pod)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Pod)
	if got.ManagedFields != nil {
		t.Errorf("managedFields kept: %v", got.ManagedFields)
	}
	if got.Labels[ntv1.LabelTask] != "t" || got.Spec.NodeName != "win-a" || got.Status.Phase != corev1.PodSucceeded {
		t.Errorf("the transform lost what the planner reads: %+v", got)
	}
}

// TestCachedForeignPodsKeepOnlyTheirIdentity: a pod that carries the operator's task label
// but that no NodeTask controls (anyone who can create a pod can set a label) is cached as
// its identity alone: it costs the cache next to nothing and never counts as a task's.
func TestCachedForeignPodsKeepOnlyTheirIdentity(t *testing.T) {
	var transform func(any) (any, error)
	for obj, by := range CacheOptions().ByObject {
		if _, ok := obj.(*corev1.Pod); ok {
			transform = by.Transform
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "disguised", UID: "u1", Labels: map[string]string{ntv1.LabelTask: "t"},
			Annotations: map[string]string{"big": strings.Repeat("x", 1<<16)}},
		Spec: corev1.PodSpec{NodeName: "win-a", Containers: []corev1.Container{{Name: "c", Image: "img"}}},
	}
	out, err := transform(pod)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Pod)
	want := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "disguised", UID: "u1"}}
	if !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("a foreign pod is cached as %+v, want only its identity", got)
	}
}

// TestCachedSchedulesKeepNoManagedFields: the schedule cache drops managedFields and keeps
// the spec and status the schedule controller reads.
func TestCachedSchedulesKeepNoManagedFields(t *testing.T) {
	var transform func(any) (any, error)
	for obj, by := range CacheOptions().ByObject {
		if _, ok := obj.(*ntv1.NodeTaskSchedule); ok {
			transform = by.Transform
		}
	}
	if transform == nil {
		t.Fatal("the schedule cache has no transform")
	}
	s := &ntv1.NodeTaskSchedule{
		ObjectMeta: metav1.ObjectMeta{Name: "s", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec:       ntv1.NodeTaskScheduleSpec{Schedule: "@daily"},
		Status:     ntv1.NodeTaskScheduleStatus{LastRunOutcome: ntv1.RunSucceeded},
	}
	out, err := transform(s.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*ntv1.NodeTaskSchedule)
	if got.ManagedFields != nil || got.Spec.Schedule != "@daily" || got.Status.LastRunOutcome != ntv1.RunSucceeded {
		t.Errorf("got %+v", got)
	}
}
