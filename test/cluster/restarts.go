package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The simulated hosts' reaction to a restart. KWOK plays pods and nodes from their fields,
// but no KWOK stage can change a Node because of a Pod; a restart is that. So this plays it:
// when a pod on a simulated Windows node finishes a command that restarts the host
// (`shutdown /r`, as a Windows host would see it, whoever made the pod), the node goes
// NotReady, and after a delay comes back Ready with a new boot ID. The node annotations
// below choose the delay; KWOK's node stage (test/kwok/windows-kubelet.yaml) reports the
// node Ready again, with the boot ID, once AnnotationDown is gone.
const (
	// AnnotationRestartSeconds on a node is how long its restarts take: seconds, or
	// "never" for a node that does not come back. Default 3.
	AnnotationRestartSeconds = "sim.nodetask.io/restart-seconds"
	// AnnotationDown is on a node while it restarts: KWOK does not report it Ready.
	AnnotationDown = "sim.nodetask.io/down"
	// AnnotationBootID is the boot ID KWOK reports for the node.
	AnnotationBootID = "sim.nodetask.io/boot-id"
	// AnnotationRestartReport on a node chooses when its kubelet reports the restart pod:
	// unset, the pod is reported Succeeded before the host goes down; ReportAfterBoot, the
	// host goes down with the pod unreported, and after the boot the kubelet posts the new
	// boot ID with the node still NotReady, then the pod Failed (ExitCodeShutdownKilled, a
	// container killed by the shutdown), then the node Ready 3 s later.
	AnnotationRestartReport = "sim.nodetask.io/restart-report"
	// ReportAfterBoot is the value of AnnotationRestartReport for the second order.
	ReportAfterBoot = "after-boot"
	// ExitCodeShutdownKilled is the exit code a Windows container killed by the host's
	// shutdown reports (0x40010004).
	ExitCodeShutdownKilled = 1073807364
	// annotationHang keeps KWOK from ending a pod (test/kwok/windows-kubelet.yaml).
	annotationHang = "sim.nodetask.io/hang"
	// defaultRestartSeconds is how long a restart takes by default.
	defaultRestartSeconds = 3
)

// hosts plays the restarts of the simulated nodes.
type hosts struct {
	c        *Cluster
	mu       sync.Mutex
	seen     map[types.UID]bool
	restarts map[string]int
	// down counts the nodes restarting now; maxDown is the most at once.
	down, maxDown int
}

// startHosts watches pods and plays the restarts they ask for until ctx ends.
func (c *Cluster) startHosts(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	h := &hosts{c: c, seen: map[types.UID]bool{}, restarts: map[string]int{}}
	c.hosts = h
	factory := informers.NewSharedInformerFactory(cs, 0)
	inf := factory.Core().V1().Pods().Informer()
	on := func(obj any) {
		if pod, ok := obj.(*corev1.Pod); ok {
			h.observe(ctx, pod)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    on,
		UpdateFunc: func(_, obj any) { on(obj) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return fmt.Errorf("the pod informer of the host simulation did not sync")
	}
	return nil
}

// RestartsCommand reports whether a container's command line restarts a Windows host:
// shutdown with /r (or -r), in any case.
func RestartsCommand(ctr *corev1.Container) bool {
	words := append(append([]string(nil), ctr.Command...), ctr.Args...)
	if len(words) == 0 {
		return false
	}
	prog := strings.ToLower(words[0])
	if !strings.HasSuffix(prog, "shutdown") && !strings.HasSuffix(prog, "shutdown.exe") {
		return false
	}
	for _, w := range words[1:] {
		if strings.EqualFold(w, "/r") || strings.EqualFold(w, "-r") {
			return true
		}
	}
	return false
}

func (h *hosts) observe(ctx context.Context, pod *corev1.Pod) {
	if pod.Spec.NodeName == "" || pod.DeletionTimestamp != nil {
		return
	}
	restarts := false
	for i := range pod.Spec.Containers {
		restarts = restarts || RestartsCommand(&pod.Spec.Containers[i])
	}
	if !restarts {
		return
	}
	afterBoot := false
	if pod.Status.Phase != corev1.PodSucceeded {
		// A pod not yet ended restarts its host now only where the kubelet reports it after
		// the boot; elsewhere the host goes down once the pod is reported Succeeded.
		node := &corev1.Node{}
		if pod.Status.Phase == corev1.PodFailed || h.c.Client.Get(ctx, client.ObjectKey{Name: pod.Spec.NodeName}, node) != nil ||
			node.Annotations[AnnotationRestartReport] != ReportAfterBoot {
			return
		}
		afterBoot = true
	}
	h.mu.Lock()
	if h.seen[pod.UID] {
		h.mu.Unlock()
		return
	}
	h.seen[pod.UID] = true
	h.restarts[pod.Spec.NodeName]++
	h.down++
	h.maxDown = max(h.maxDown, h.down)
	h.mu.Unlock()
	go func() {
		var err error
		if afterBoot {
			err = h.restartReportedAfterBoot(ctx, pod)
		} else {
			err = h.restart(ctx, pod.Spec.NodeName)
		}
		if err != nil && ctx.Err() == nil {
			h.c.logf("restart of node %s: %v", pod.Spec.NodeName, err)
		}
	}()
}

// restartReportedAfterBoot plays the second order: the host goes down before its kubelet
// reported the restart pod; after the boot the kubelet posts the new boot ID with the node
// still NotReady, then reports the pod Failed, then the node Ready.
func (h *hosts) restartReportedAfterBoot(ctx context.Context, pod *corev1.Pod) error {
	cl := h.c.Client
	// The kubelet will not report the pod's end before the host goes down: KWOK must not either.
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{annotationHang: "true"}}})
	if err != nil {
		return err
	}
	if err := cl.Patch(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name}},
		client.RawPatch(types.MergePatchType, patch)); err != nil {
		return err
	}
	shutdown := metav1.Now()
	boot, err := h.goDown(ctx, pod.Spec.NodeName)
	if err != nil || boot == "" {
		return err
	}
	name := pod.Spec.NodeName
	h.c.logf("node %s booted (boot ID %s), still NotReady; its restart pod is reported after", name, boot)
	node := &corev1.Node{}
	if err := cl.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
		return err
	}
	base := node.DeepCopy()
	node.Status.NodeInfo.BootID = boot
	if err := cl.Status().Patch(ctx, node, client.MergeFrom(base)); err != nil {
		return err
	}
	if !sleep(ctx, time.Second) {
		return nil
	}
	if err := failPod(ctx, cl, pod, ExitCodeShutdownKilled, shutdown); err != nil {
		return err
	}
	if !sleep(ctx, 3*time.Second) {
		return nil
	}
	h.comeBack(name)
	return patchAnnotations(ctx, cl, name, map[string]any{AnnotationDown: nil, AnnotationBootID: boot})
}

// failPod plays the kubelet reporting, after the boot, a pod whose container the shutdown
// killed: Failed, with the exit code, ended when the host went down.
func failPod(ctx context.Context, cl client.Client, pod *corev1.Pod, code int32, ended metav1.Time) error {
	cur := &corev1.Pod{}
	if err := cl.Get(ctx, client.ObjectKeyFromObject(pod), cur); err != nil {
		return err
	}
	base := cur.DeepCopy()
	now := metav1.Now()
	cur.Status.Phase = corev1.PodFailed
	cur.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "PodFailed", LastTransitionTime: now}}
	cur.Status.ContainerStatuses = nil
	for _, ctr := range cur.Spec.Containers {
		cur.Status.ContainerStatuses = append(cur.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: ctr.Name, Image: ctr.Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: code, Reason: "Error", StartedAt: ended, FinishedAt: ended,
			}},
		})
	}
	return cl.Status().Patch(ctx, cur, client.MergeFrom(base))
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// restart takes the node down, waits, and brings it back with the next boot ID.
func (h *hosts) restart(ctx context.Context, name string) error {
	boot, err := h.goDown(ctx, name)
	if err != nil || boot == "" {
		return err
	}
	h.comeBack(name)
	// KWOK's node stage reports it Ready again, with this boot ID, once it is not down.
	return patchAnnotations(ctx, h.c.Client, name, map[string]any{AnnotationDown: nil, AnnotationBootID: boot})
}

// goDown takes the node down and waits for its restart to end. It returns the boot ID the
// host comes back with, or "" when it does not come back (or the context ended).
func (h *hosts) goDown(ctx context.Context, name string) (string, error) {
	cl := h.c.Client
	node := &corev1.Node{}
	if err := cl.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
		return "", err
	}
	h.c.logf("node %s restarts (boot ID %s)", name, node.Status.NodeInfo.BootID)
	if err := patchAnnotations(ctx, cl, name, map[string]any{AnnotationDown: "true"}); err != nil {
		return "", err
	}
	if err := setReady(ctx, cl, name, corev1.ConditionFalse, "NodeRestarting", "the host is restarting (simulated)"); err != nil {
		return "", err
	}
	wait := time.Duration(defaultRestartSeconds) * time.Second
	switch v := node.Annotations[AnnotationRestartSeconds]; v {
	case "":
	case "never":
		h.c.logf("node %s does not come back", name)
		return "", nil
	default:
		s, err := strconv.Atoi(v)
		if err != nil {
			return "", fmt.Errorf("annotation %s: %w", AnnotationRestartSeconds, err)
		}
		wait = time.Duration(s) * time.Second
	}
	if !sleep(ctx, wait) {
		return "", nil
	}
	boot, _ := strconv.Atoi(node.Status.NodeInfo.BootID)
	return strconv.Itoa(boot + 1), nil
}

// comeBack counts the node as back.
func (h *hosts) comeBack(name string) {
	h.mu.Lock()
	h.down--
	h.mu.Unlock()
	h.c.logf("node %s is back", name)
}

func patchAnnotations(ctx context.Context, cl client.Client, name string, ann map[string]any) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err != nil {
		return err
	}
	return cl.Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, client.RawPatch(types.MergePatchType, patch))
}

// setReady sets the node's Ready condition, as the node lifecycle controller does for a
// kubelet that stopped posting.
func setReady(ctx context.Context, cl client.Client, name string, status corev1.ConditionStatus, reason, msg string) error {
	node := &corev1.Node{}
	if err := cl.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
		return err
	}
	base := node.DeepCopy()
	now := metav1.Now()
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == corev1.NodeReady {
			node.Status.Conditions[i] = corev1.NodeCondition{Type: corev1.NodeReady, Status: status, Reason: reason,
				Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
		}
	}
	return cl.Status().Patch(ctx, node, client.MergeFrom(base))
}

// Restarts returns how many times each node restarted, and the most nodes down at once.
func (c *Cluster) Restarts() (map[string]int, int) {
	h := c.hosts
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]int, len(h.restarts))
	for k, v := range h.restarts {
		out[k] = v
	}
	return out, h.maxDown
}
