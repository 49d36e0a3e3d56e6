package rollout

import (
	"testing"

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
