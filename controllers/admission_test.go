package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

var (
	psRefusal = &rollout.Problem{Reason: ntv1.ReasonPodSecurityRejected, Message: "Pod Security refuses"}
	admitted  = rollout.Admission{Confirmed: true}
)

func TestAdmissionBackoff(t *testing.T) {
	g := NewWithT(t)
	var got []time.Duration
	for n := 1; n <= 7; n++ {
		got = append(got, admissionBackoff(n))
	}
	g.Expect(got).To(Equal([]time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute,
		8 * time.Minute, 10 * time.Minute, 10 * time.Minute}))
}

// TestAdmissionMemo: a verdict is reused for its run, revision and namespace labels; a
// refusal is asked again after its backoff, which grows with each refusal for the same key.
func TestAdmissionMemo(t *testing.T) {
	g := NewWithT(t)
	r := &NodeTaskReconciler{}
	task := newTask()
	key := admissionKey{run: 1, revision: "r1", namespace: "ops", nsLabels: "pod-security.kubernetes.io/enforce=baseline"}

	v, wait := r.recallAdmission(task, key, t0)
	g.Expect(v.Decided()).To(BeFalse(), "nothing remembered")
	g.Expect(wait).To(BeZero())

	g.Expect(r.rememberAdmission(task, key, rollout.Admission{Refused: psRefusal}, t0)).To(Equal(30 * time.Second))
	v, wait = r.recallAdmission(task, key, t0.Add(10*time.Second))
	g.Expect(v.Refused).To(Equal(psRefusal))
	g.Expect(wait).To(Equal(20 * time.Second))
	v, _ = r.recallAdmission(task, key, t0.Add(30*time.Second))
	g.Expect(v.Decided()).To(BeFalse(), "asked again once the backoff ends")
	g.Expect(r.rememberAdmission(task, key, rollout.Admission{Refused: psRefusal}, t0.Add(30*time.Second))).To(Equal(time.Minute))

	relabelled := key
	relabelled.nsLabels = "pod-security.kubernetes.io/enforce=privileged"
	v, _ = r.recallAdmission(task, relabelled, t0.Add(31*time.Second))
	g.Expect(v.Decided()).To(BeFalse(), "new namespace labels: asked again at once")
	g.Expect(r.rememberAdmission(task, relabelled, rollout.Admission{Refused: psRefusal}, t0)).To(Equal(admissionRelabelRecheck),
		"the API server had not seen the new labels yet")

	g.Expect(r.rememberAdmission(task, key, admitted, t0)).To(BeZero())
	v, _ = r.recallAdmission(task, key, t0.Add(time.Hour))
	g.Expect(v.Confirmed).To(BeTrue(), "a confirmation lasts for its key")
	next := key
	next.run = 2
	v, _ = r.recallAdmission(task, next, t0)
	g.Expect(v.Decided()).To(BeFalse(), "a new run asks again")

	other := newTask(func(t *ntv1.NodeTask) { t.UID = "another-incarnation" })
	v, _ = r.recallAdmission(other, key, t0)
	g.Expect(v.Decided()).To(BeFalse(), "a task created again under the name asks again")
}

// TestDrainSkipsOnlyNodeTaskPods: the drain leaves alone what it must (finished, mirror,
// DaemonSet and NodeTask pods), and a pod that only carries the operator's label is drained.
func TestDrainSkipsOnlyNodeTaskPods(t *testing.T) {
	task := newTask()
	ds := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "agent", UID: "ds", Controller: new(true)}
	for _, tc := range []struct {
		name string
		pod  corev1.Pod
		want bool
	}{
		{"a workload", corev1.Pod{}, true},
		{"a pod with the operator's label alone", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{ntv1.LabelTask: "patch"}}}, true},
		{"a NodeTask's pod", corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{rollout.OwnerRef(task)}}}, false},
		{"a DaemonSet's pod", corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{ds}}}, false},
		{"a mirror pod", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{corev1.MirrorPodAnnotationKey: "x"}}}, false},
		{"a finished pod", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(drained(&tc.pod)).To(Equal(tc.want))
		})
	}
}
