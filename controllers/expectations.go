package controllers

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// expectationTTL bounds how long a created pod that the cache has not shown yet is assumed
// to exist. Informers deliver within seconds; after this the pod counts as gone.
const expectationTTL = 2 * time.Minute

// expectations remembers the pods this process created until the cache shows them. Without
// it, a reconcile that runs before the cache catches up would see free rollout slots that
// are taken and start more than rollout.maxConcurrent nodes. A restarted controller starts
// with a freshly listed cache, so losing this memory on restart is safe.
type expectations struct {
	mu   sync.Mutex
	pods map[types.NamespacedName]*taskExpectations
}

type taskExpectations struct {
	uid  types.UID
	pods map[string]expectedPod
}

type expectedPod struct {
	pod      *corev1.Pod
	deadline time.Time
}

func newExpectations() *expectations {
	return &expectations{pods: map[types.NamespacedName]*taskExpectations{}}
}

// created records pods the API server accepted for the task.
func (e *expectations) created(task types.NamespacedName, uid types.UID, pods []*corev1.Pod, now time.Time) {
	if len(pods) == 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	te := e.pods[task]
	if te == nil || te.uid != uid {
		te = &taskExpectations{uid: uid, pods: map[string]expectedPod{}}
		e.pods[task] = te
	}
	for _, p := range pods {
		te.pods[p.Name] = expectedPod{pod: p, deadline: now.Add(expectationTTL)}
	}
}

// merge returns the cached pods plus the created pods the cache does not show yet, and
// forgets those it now shows or that expired. pending says whether any are still awaited.
func (e *expectations) merge(task types.NamespacedName, uid types.UID, cached []*corev1.Pod, now time.Time) (pods []*corev1.Pod, pending bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	te := e.pods[task]
	if te == nil {
		return cached, false
	}
	if te.uid != uid {
		delete(e.pods, task)
		return cached, false
	}
	for _, p := range cached {
		delete(te.pods, p.Name)
	}
	pods = cached
	for name, x := range te.pods {
		if now.After(x.deadline) {
			delete(te.pods, name)
			continue
		}
		pods = append(pods, x.pod)
	}
	if len(te.pods) == 0 {
		delete(e.pods, task)
	}
	return pods, len(te.pods) > 0
}

// forget drops everything remembered for a task, once it is gone.
func (e *expectations) forget(task types.NamespacedName) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.pods, task)
}
