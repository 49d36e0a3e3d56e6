package rollout

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// The restart is judged by the host, not by its pod: each test plays one order in which a
// Windows kubelet may report the restart pod and the node around a restart.

// shutdownKilled is what a Windows container killed by the host's shutdown reports
// (0x40010004, STATUS_SYSTEM_SHUTDOWN... as the kubelet sees it after the boot).
const shutdownKilled = 1073807364

// untilRestartPod runs the task on its one node until the restart pod exists, and returns it.
func (w *maintWorld) untilRestartPod(node string) *corev1.Pod {
	for range 10 {
		w.reconcile()
		for _, p := range w.pods {
			if ntv1.IsRebootPod(p) && p.Spec.NodeName == node {
				return p
			}
			if !PodFinished(p) {
				exited(0, "done", w.now)(p)
			}
		}
		w.now = w.now.Add(time.Second)
	}
	w.g.Expect("a restart pod").To(BeEmpty(), "none was made")
	return nil
}

// setNodeReady plays the node's Ready condition changing now.
func (w *maintWorld) setNodeReady(name string, ready bool) {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	w.node(name).Status.Conditions[0] = corev1.NodeCondition{Type: corev1.NodeReady, Status: status,
		LastTransitionTime: metav1.NewTime(w.now)}
}

// podFailedNow plays the kubelet reporting the restart pod Failed with the exit code now.
func (w *maintWorld) podFailedNow(pod *corev1.Pod, code int32, finishedAt time.Time) {
	exitedRaw(code, "", finishedAt)(pod)
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse,
		LastTransitionTime: metav1.NewTime(w.now)}}
}

func (w *maintWorld) step(d time.Duration) {
	w.now = w.now.Add(d)
	w.reconcile()
}

func (w *maintWorld) entryOf(name string) ntv1.NodeStatus { return *entry(&w.task.Status, name) }

func TestRestartPodSucceededThenHostDown(t *testing.T) {
	w := newMaintWorld(t, rebootTask(ntv1.RebootAlways, 1), "win-a")
	pod := w.untilRestartPod("win-a")
	exited(0, "", w.now)(pod)
	w.step(time.Second)
	w.g.Expect(w.entryOf("win-a").Phase).To(Equal(ntv1.NodeRebooting))
	w.setNodeReady("win-a", false)
	w.step(30 * time.Second)
	w.node("win-a").Status.NodeInfo.BootID = "2"
	w.setNodeReady("win-a", true)
	w.step(time.Second)
	e := w.entryOf("win-a")
	w.g.Expect(e.Reason).To(Equal(ntv1.NodeReasonRebooted))
	w.g.Expect(e.BootIDAfter).To(Equal("2"))
}

// TestRestartPodReportedFailedAfterTheBoot: the kubelet did not report the restart pod before
// the host went down; after the boot it posts the new boot ID with the node still NotReady,
// then the pod Failed (the container was killed by the shutdown), then goes Ready.
func TestRestartPodReportedFailedAfterTheBoot(t *testing.T) {
	w := newMaintWorld(t, rebootTask(ntv1.RebootAlways, 1), "win-a")
	pod := w.untilRestartPod("win-a")
	down := w.now
	w.setNodeReady("win-a", false)
	w.step(90 * time.Second)
	w.node("win-a").Status.NodeInfo.BootID = "2"
	w.step(2 * time.Second)
	w.g.Expect(w.entryOf("win-a").Phase).To(Equal(ntv1.NodeRebooting))
	w.podFailedNow(pod, shutdownKilled, down)
	for range 3 {
		w.step(time.Second)
		w.g.Expect(w.entryOf("win-a").Phase).To(Equal(ntv1.NodeRebooting), "a restarted host is not a failed restart")
	}
	w.setNodeReady("win-a", true)
	w.step(time.Second)
	e := w.entryOf("win-a")
	w.g.Expect(e.Phase).To(Equal(ntv1.NodeSucceeded))
	w.g.Expect(e.Reason).To(Equal(ntv1.NodeReasonRebooted))
	w.g.Expect(e.BootIDBefore).To(Equal("1"))
	w.g.Expect(e.BootIDAfter).To(Equal("2"))
	w.step(time.Second)
	w.g.Expect(w.node("win-a").Spec.Unschedulable).To(BeFalse(), "uncordoned")
	w.g.Expect(w.claimed()).To(BeEmpty())
	w.g.Expect(w.restarts["win-a"]).To(Equal(1))
}

// TestRestartPodReportedFailedBeforeTheNewBootID: the kubelet reports the pod Failed first
// and the new boot ID a little later (the other order of its two status loops).
func TestRestartPodReportedFailedBeforeTheNewBootID(t *testing.T) {
	w := newMaintWorld(t, rebootTask(ntv1.RebootAlways, 1), "win-a")
	pod := w.untilRestartPod("win-a")
	down := w.now
	w.step(60 * time.Second) // a quick restart: the node never went NotReady
	w.podFailedNow(pod, shutdownKilled, down)
	w.step(10 * time.Second)
	w.g.Expect(w.entryOf("win-a").Phase).To(Equal(ntv1.NodeRebooting), "within the grace for the node's report")
	w.node("win-a").Status.NodeInfo.BootID = "2"
	w.step(time.Second)
	w.g.Expect(w.entryOf("win-a").Reason).To(Equal(ntv1.NodeReasonRebooted))
}

// TestRestartPodFailedAndTheHostDidNotRestart: shutdown.exe failed; the boot ID stays. The
// restart fails once the grace for a late node report is over.
func TestRestartPodFailedAndTheHostDidNotRestart(t *testing.T) {
	w := newMaintWorld(t, rebootTask(ntv1.RebootAlways, 1), "win-a")
	pod := w.untilRestartPod("win-a")
	w.step(2 * time.Second)
	w.podFailedNow(pod, 1190, w.now) // ERROR_SHUTDOWN_IS_SCHEDULED
	w.step(time.Second)
	w.g.Expect(w.entryOf("win-a").Phase).To(Equal(ntv1.NodeRebooting))
	p := w.reconcile()
	w.g.Expect(p.RequeueAfter).To(BeNumerically("<=", rebootFailureGrace), "woken when the grace ends")
	w.step(rebootFailureGrace)
	e := w.entryOf("win-a")
	w.g.Expect(e.Phase).To(Equal(ntv1.NodeFailed))
	w.g.Expect(e.Reason).To(Equal(ntv1.NodeReasonRebootFailed))
	w.g.Expect(*e.ExitCode).To(Equal(int32(1190)))
	w.g.Expect(w.restarts["win-a"]).To(Equal(1))
}

// TestRestartWithoutBootID: a kubelet that reports no boot ID; the restart shows as the
// node's Ready condition changing after the restart pod was made.
func TestRestartWithoutBootID(t *testing.T) {
	w := newMaintWorld(t, rebootTask(ntv1.RebootAlways, 1), "win-a")
	w.node("win-a").Status.NodeInfo.BootID = ""
	pod := w.untilRestartPod("win-a")
	down := w.now
	w.now = w.now.Add(time.Second)
	w.setNodeReady("win-a", false)
	w.step(60 * time.Second)
	w.podFailedNow(pod, shutdownKilled, down)
	w.step(rebootFailureGrace + time.Second)
	w.g.Expect(w.entryOf("win-a").Phase).To(Equal(ntv1.NodeRebooting), "down since the restart pod: restarted")
	w.setNodeReady("win-a", true)
	w.step(time.Second)
	w.g.Expect(w.entryOf("win-a").Reason).To(Equal(ntv1.NodeReasonRebooted))
}
