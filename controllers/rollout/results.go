package rollout

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// maxOutputBytes caps one node's output in status; the kubelet keeps at most 4096 bytes of
// a termination message anyway.
const maxOutputBytes = 4096

// waitingProblems are container waiting reasons worth showing while a pod has not started:
// each means the pod will not start on its own, and only the timeout will end it.
var waitingProblems = map[string]bool{
	"ErrImagePull":               true,
	"ImagePullBackOff":           true,
	"InvalidImageName":           true,
	"CreateContainerConfigError": true,
	"CreateContainerError":       true,
	"RunContainerError":          true,
}

// podResult reads one attempt's entry from its pod. nodeGone says the pod's node was deleted.
func podResult(pod *corev1.Pod, nodeGone bool, now time.Time) ntv1.NodeStatus {
	e := ntv1.NodeStatus{
		Name:      pod.Spec.NodeName,
		Run:       ntv1.PodRun(pod),
		Attempts:  ntv1.PodAttempt(pod),
		StartTime: pod.CreationTimestamp.DeepCopy(),
	}
	term := terminated(pod)
	switch {
	case pod.Status.Phase == corev1.PodSucceeded:
		// Succeeded means exit code 0: leaving it out saves 65 KB at 5000 nodes.
		e.Phase = ntv1.NodeSucceeded
	case pod.Status.Phase == corev1.PodFailed:
		e.Phase, e.Reason = ntv1.NodeFailed, ntv1.NodeReasonError
		switch {
		case pod.Status.Reason == "DeadlineExceeded":
			// A Windows job killed at its deadline exits with a code that says nothing
			// about the script, so the code is left out.
			e.Reason = ntv1.NodeReasonTimeout
		case term != nil:
			// A copy: the pod may be the cache's own object.
			e.ExitCode = ptrInt32(term.ExitCode)
			if term.Reason != "" && term.Reason != "Error" && term.Reason != "Completed" {
				e.Reason = term.Reason
			}
		case pod.Status.Reason != "":
			e.Reason = pod.Status.Reason
		}
	case pod.DeletionTimestamp != nil:
		e = lostAttempt(e, nodeGone, pod.DeletionTimestamp.Time)
	case nodeGone:
		e = lostAttempt(e, true, now)
	default:
		e.Phase = ntv1.NodeRunning
		if w := waiting(pod); w != nil && waitingProblems[w.Reason] {
			e.Reason = w.Reason
			e.Output = tailOutput(w.Message, maxOutputBytes)
		}
		return e
	}
	if e.FinishTime == nil {
		e.FinishTime = &metav1.Time{Time: podFinishTime(pod)}
	}
	switch {
	case term != nil && term.Message != "":
		msg, completed := splitCompletionMarker(term.Message)
		msg, _ = splitSteps(msg)
		e.Output = tailOutput(msg, maxOutputBytes)
		if e.Phase == ntv1.NodeSucceeded && !completed && isScriptPod(pod) {
			// Exit code 0 without the wrapper's marker: the script was stopped on the way
			// (`powershell -File` exits 0 on CTRL_SHUTDOWN). Never count that as a success.
			e.Phase, e.Reason = ntv1.NodeFailed, ntv1.NodeReasonInterrupted
		}
	case e.Phase == ntv1.NodeSucceeded && isScriptPod(pod):
		e.Phase, e.Reason = ntv1.NodeFailed, ntv1.NodeReasonInterrupted
	case pod.Status.Message != "":
		e.Output = tailOutput(pod.Status.Message, maxOutputBytes)
	}
	return e
}

// CompletionMarker starts the last line the wrapper (wrapper/run.ps1) writes to the
// termination message once the script has ended, followed by its exit code.
const CompletionMarker = "nodetask: exit code "

// splitCompletionMarker removes the wrapper's completion marker from the end of a
// termination message, and says whether it was there.
func splitCompletionMarker(msg string) (string, bool) {
	i := strings.LastIndexByte(msg, '\n') + 1
	last := msg[i:]
	if !strings.HasPrefix(last, CompletionMarker) {
		return msg, false
	}
	if _, err := strconv.Atoi(strings.TrimSpace(last[len(CompletionMarker):])); err != nil {
		return msg, false
	}
	return strings.TrimSuffix(msg[:i], "\n"), true
}

// stepMarker is the line the wrapper writes before the completion marker for each step of a
// task with spec.check: "nodetask: check exit code 1", "nodetask: fix exit code 0",
// "nodetask: recheck exit code 0".
const stepMarker = "nodetask: %s exit code %d"

// checkSteps are the exit codes of the steps a check pod ran, as the wrapper reported them;
// nil for a step that did not run.
type checkSteps struct {
	check, fix, recheck *int32
}

// splitSteps removes the wrapper's step lines from the end of a termination message (the
// completion marker already removed), and returns the exit codes they report.
func splitSteps(msg string) (string, checkSteps) {
	var s checkSteps
	for {
		i := strings.LastIndexByte(msg, '\n') + 1
		var name string
		var code int32
		if _, err := fmt.Sscanf(msg[i:], stepMarker, &name, &code); err != nil || fmt.Sprintf(stepMarker, name, code) != msg[i:] {
			return msg, s
		}
		switch {
		case name == "check" && s.check == nil:
			s.check = &code
		case name == "fix" && s.fix == nil:
			s.fix = &code
		case name == "recheck" && s.recheck == nil:
			s.recheck = &code
		default:
			return msg, s
		}
		msg = strings.TrimSuffix(msg[:i], "\n")
	}
}

// podSteps returns the steps a finished check pod reported; ok is false for a pod whose
// wrapper did not complete (no marker) or that ran no check.
func podSteps(pod *corev1.Pod) (checkSteps, bool) {
	term := terminated(pod)
	if term == nil {
		return checkSteps{}, false
	}
	msg, completed := splitCompletionMarker(term.Message)
	if !completed {
		return checkSteps{}, false
	}
	_, s := splitSteps(msg)
	return s, s.check != nil
}

// isScriptPod reports whether the pod runs a script through the wrapper, which marks
// completion; a container-mode program does not.
func isScriptPod(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == envInterpreter {
				return true
			}
		}
	}
	return false
}

// podFinishTime is when the pod's container ended, as the kubelet reports it. A pod that
// ended without a container state (timed out before it started, refused by the kubelet,
// evicted) counts from its last condition change, else from its creation: never from the
// clock, so that the time, and a TTL counted from it, stays put from one reconcile to the next.
func podFinishTime(pod *corev1.Pod) time.Time {
	if t := terminated(pod); t != nil && !t.FinishedAt.IsZero() {
		return t.FinishedAt.Time
	}
	at := pod.CreationTimestamp.Time
	if pod.Status.StartTime != nil && pod.Status.StartTime.After(at) {
		at = pod.Status.StartTime.Time
	}
	for _, c := range pod.Status.Conditions {
		if c.LastTransitionTime.After(at) {
			at = c.LastTransitionTime.Time
		}
	}
	return at
}

func terminated(pod *corev1.Pod) *corev1.ContainerStateTerminated {
	for i := range pod.Status.ContainerStatuses {
		if t := pod.Status.ContainerStatuses[i].State.Terminated; t != nil {
			return t
		}
	}
	return nil
}

func waiting(pod *corev1.Pod) *corev1.ContainerStateWaiting {
	for i := range pod.Status.ContainerStatuses {
		if w := pod.Status.ContainerStatuses[i].State.Waiting; w != nil {
			return w
		}
	}
	return nil
}

// tailOutput keeps the last n bytes of s, cut at a rune boundary, as valid UTF-8.
func tailOutput(s string, n int) string {
	return tailBytes(strings.ToValidUTF8(s, "\uFFFD"), n)
}

func ptrInt32(v int32) *int32 { return &v }

func PodFinished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// podUnstarted reports whether the pod's process has not started: it is still pending
// (waiting for the kubelet, an image or a volume).
func podUnstarted(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodPending || pod.Status.Phase == ""
}

// tailBytes returns the last n bytes of a valid UTF-8 string, cut at a rune boundary.
func tailBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	for len(s) > 0 && !utf8.RuneStart(s[0]) {
		s = s[1:]
	}
	return s
}

// lostAttempt records an attempt whose pod disappeared before it finished.
func lostAttempt(e ntv1.NodeStatus, nodeGone bool, at time.Time) ntv1.NodeStatus {
	e.Phase, e.Reason, e.ExitCode = ntv1.NodeFailed, ntv1.NodeReasonPodDeleted, nil
	if nodeGone {
		e.Reason = ntv1.NodeReasonNodeLost
	}
	e.FinishTime = &metav1.Time{Time: at}
	return e
}
