package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// disruptiveTask cordons, drains and restarts every node.
func disruptiveTask() *ntv1.NodeTask {
	task := rebootTask(ntv1.RebootAlways, 2)
	task.Spec.Drain = &ntv1.DrainSpec{}
	return task
}

var psRefusal = &Problem{Reason: ntv1.ReasonPodSecurityRejected, Message: "Pod Security refuses"}

// TestPlanActsOnNoNodeBeforeAdmission: until the API server admitted the run's pods, the plan
// creates no pod and claims, cordons, drains and restarts no node, whatever the task asks.
func TestPlanActsOnNoNodeBeforeAdmission(t *testing.T) {
	for _, tc := range []struct {
		name      string
		admission Admission
		wantProbe bool
		wantStall string
		wantOps   int
		wantNodes int
	}{
		{name: "not asked yet: the first node is the probe", wantProbe: true, wantNodes: 3},
		{name: "refused: stalled, and no entry for a node that never started", admission: Admission{Refused: psRefusal},
			wantStall: ntv1.ReasonPodSecurityRejected},
		{name: "waiting for a quota: nothing is done meanwhile", admission: Admission{Waiting: &Problem{Reason: ntv1.ReasonQuotaExceeded}},
			wantNodes: 3},
		{name: "confirmed: the first nodes are claimed", admission: admitted, wantOps: 2, wantNodes: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newMaintWorld(t, disruptiveTask(), "win-a", "win-b", "win-c")
			w.admission = tc.admission
			p := w.reconcile()
			g := w.g
			g.Expect(p.Create).To(BeEmpty())
			g.Expect(p.Reboots).To(BeEmpty())
			g.Expect(p.Evict).To(BeEmpty())
			g.Expect(p.NodeOps).To(HaveLen(tc.wantOps))
			if tc.wantOps == 0 {
				g.Expect(w.claimed()).To(BeEmpty())
				for name, n := range w.nodes {
					g.Expect(n.Spec.Unschedulable).To(BeFalse(), name)
				}
			}
			if tc.wantProbe {
				g.Expect(p.AdmissionProbe).To(Equal(&PodRequest{Node: "win-a", NodeUID: "uid-win-a", Attempt: 1}))
			} else {
				g.Expect(p.AdmissionProbe).To(BeNil())
			}
			stalled := ""
			if p.Problem != nil {
				stalled = p.Problem.Reason
			}
			g.Expect(stalled).To(Equal(tc.wantStall))
			g.Expect(w.task.Status.Nodes).To(HaveLen(tc.wantNodes))
			g.Expect(w.task.Status.Targets).To(Equal(int32(3)))
			g.Expect(w.task.Status.Pending).To(Equal(int32(3)))
		})
	}
}

// TestPlanRefusalLetsGoOfClaimedNodes: a refusal found after nodes were claimed (the
// namespace's level was lowered) stops the rollout: the claimed nodes are let go, and the
// cordon their claim made is undone; the results of nodes that ran stay.
func TestPlanRefusalLetsGoOfClaimedNodes(t *testing.T) {
	w := newMaintWorld(t, disruptiveTask(), "win-a", "win-b", "win-c")
	w.reconcile()
	g := w.g
	g.Expect(w.claimed()).To(ConsistOf("win-a", "win-b"))
	g.Expect(w.node("win-a").Spec.Unschedulable).To(BeTrue())

	web := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1"}}
	w.drains = map[string]*DrainObservation{"win-a": {Pods: []*corev1.Pod{web}, Evictable: []*corev1.Pod{web}}, "win-b": {}}
	w.admission = Admission{Refused: psRefusal}
	p := w.reconcile()
	g.Expect(p.Evict).To(BeEmpty())
	g.Expect(p.Problem).To(Equal(psRefusal))
	g.Expect(w.claimed()).To(BeEmpty())
	g.Expect(w.node("win-a").Spec.Unschedulable).To(BeFalse())
	g.Expect(w.node("win-b").Spec.Unschedulable).To(BeFalse())
	g.Expect(p.Create).To(BeEmpty())
}

// TestPlanGateProbesTheRestartToo: a node whose run succeeded waits for its restart pod
// until the API server admitted the task's pods (a manager restarted after the run).
func TestPlanGateProbesTheRestartToo(t *testing.T) {
	w := newMaintWorld(t, rebootTask(ntv1.RebootAlways, 1), "win-a")
	for range 3 {
		w.reconcile()
		w.finishRuns(0)
	}
	g := w.g
	g.Expect(entry(&w.task.Status, "win-a").Phase).To(Equal(ntv1.NodeRebooting))
	w.pods = removePod(w.pods, RebootPodName(w.task, w.task.Status.Run, PodRequest{Node: "win-a", NodeUID: "uid-win-a", Attempt: 1}))
	w.admission = Admission{}
	p := w.reconcile()
	g.Expect(p.Reboots).To(BeEmpty())
	g.Expect(p.AdmissionProbe).NotTo(BeNil())
	g.Expect(p.AdmissionProbe.Node).To(Equal("win-a"))
}

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
	g.Expect(v.decided()).To(BeFalse(), "nothing remembered")
	g.Expect(wait).To(BeZero())

	g.Expect(r.rememberAdmission(task, key, Admission{Refused: psRefusal}, t0)).To(Equal(30 * time.Second))
	v, wait = r.recallAdmission(task, key, t0.Add(10*time.Second))
	g.Expect(v.Refused).To(Equal(psRefusal))
	g.Expect(wait).To(Equal(20 * time.Second))
	v, _ = r.recallAdmission(task, key, t0.Add(30*time.Second))
	g.Expect(v.decided()).To(BeFalse(), "asked again once the backoff ends")
	g.Expect(r.rememberAdmission(task, key, Admission{Refused: psRefusal}, t0.Add(30*time.Second))).To(Equal(time.Minute))

	relabelled := key
	relabelled.nsLabels = "pod-security.kubernetes.io/enforce=privileged"
	v, _ = r.recallAdmission(task, relabelled, t0.Add(31*time.Second))
	g.Expect(v.decided()).To(BeFalse(), "new namespace labels: asked again at once")
	g.Expect(r.rememberAdmission(task, relabelled, Admission{Refused: psRefusal}, t0)).To(Equal(admissionRelabelRecheck),
		"the API server had not seen the new labels yet")

	g.Expect(r.rememberAdmission(task, key, admitted, t0)).To(BeZero())
	v, _ = r.recallAdmission(task, key, t0.Add(time.Hour))
	g.Expect(v.Confirmed).To(BeTrue(), "a confirmation lasts for its key")
	next := key
	next.run = 2
	v, _ = r.recallAdmission(task, next, t0)
	g.Expect(v.decided()).To(BeFalse(), "a new run asks again")

	other := newTask(func(t *ntv1.NodeTask) { t.UID = "another-incarnation" })
	v, _ = r.recallAdmission(other, key, t0)
	g.Expect(v.decided()).To(BeFalse(), "a task created again under the name asks again")
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
		{"a NodeTask's pod", corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{ownerRef(task)}}}, false},
		{"a DaemonSet's pod", corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{ds}}}, false},
		{"a mirror pod", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{corev1.MirrorPodAnnotationKey: "x"}}}, false},
		{"a finished pod", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(drained(&tc.pod)).To(Equal(tc.want))
		})
	}
}
