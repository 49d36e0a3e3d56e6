package rollout

import (
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/internal/testutil"
)

// Builders for the planner's table tests: literal observed states, no API server.

var t0 = testutil.T0

// admitted is the API server's word that it admits the task's pods: the planner tests start
// from it, and the admission gate's own tests from other verdicts.
var admitted = Admission{Confirmed: true}

// operatorFields is the managedFields entry the API server keeps for the operator's cordon.
func operatorFields() []metav1.ManagedFieldsEntry {
	return []metav1.ManagedFieldsEntry{{Manager: FieldManager, Operation: metav1.ManagedFieldsOperationUpdate,
		FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:spec":{"f:unschedulable":{}}}`)}}}
}

func newTask(mutate ...func(*ntv1.NodeTask)) *ntv1.NodeTask { return testutil.NewTask(mutate...) }

type nodeOpt func(*corev1.Node)

func winNode(name string, opts ...nodeOpt) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{OSLabel: WindowsOS}},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue},
		}},
	}
	for _, o := range opts {
		o(n)
	}
	return n
}

func linux(n *corev1.Node) { n.Labels[OSLabel] = "linux" }

func notReady(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse }

func label(k, v string) nodeOpt { return func(n *corev1.Node) { n.Labels[k] = v } }

func taint(key, value string, effect corev1.TaintEffect) nodeOpt {
	return func(n *corev1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: key, Value: value, Effect: effect})
	}
}

type podOpt func(*corev1.Pod)

// taskPod is the pod the controller would have made for node, run and attempt, with the
// task's spec as it is now.
func taskPod(task *ntv1.NodeTask, node string, run int64, attempt int32, opts ...podOpt) *corev1.Pod {
	b := PodBuilder{}
	p := b.Pod(task, run, Revision(&task.Spec), PodRequest{Node: node, Attempt: attempt})
	p.UID = types.UID("uid-" + p.Name)
	p.CreationTimestamp = metav1.NewTime(t0.Add(-time.Minute))
	p.Status.Phase = corev1.PodRunning
	for _, o := range opts {
		o(p)
	}
	return p
}

// exited plays the end of an attempt as the wrapper reports it: the output, then the
// completion marker with the exit code.
func exited(code int32, msg string, at time.Time) podOpt {
	return exitedRaw(code, msg+"\n"+CompletionMarker+strconv.Itoa(int(code)), at)
}

// exitedRaw is an end with exactly this termination message.
func exitedRaw(code int32, msg string, at time.Time) podOpt {
	return func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodSucceeded
		if code != 0 {
			p.Status.Phase = corev1.PodFailed
		}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: ContainerName,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: code, Message: msg, Reason: map[bool]string{true: "Completed", false: "Error"}[code == 0],
				FinishedAt: metav1.NewTime(at),
			}},
		}}
	}
}

func deadlineExceeded(p *corev1.Pod) { testutil.DeadlineExceeded(p) }

func waitingFor(reason string) podOpt {
	return func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodPending
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name:  ContainerName,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "pull access denied"}},
		}}
	}
}

func observe(task *ntv1.NodeTask, nodes []*corev1.Node, pods ...*corev1.Pod) *Observed {
	obs := &Observed{Task: task, Revision: Revision(&task.Spec), Nodes: map[string]*corev1.Node{}, Pods: pods, Now: t0, Admission: admitted}
	for _, n := range nodes {
		obs.Nodes[n.Name] = n
	}
	return obs
}

// settle plays one reconcile in which every pod the plan asked for was created: it stores
// the computed status in the task, as the controller's write would.
func settle(obs *Observed) *Plan {
	p := ComputePlan(obs)
	settleWith(obs, p)
	return p
}

// deletedPods lists the pods a plan deletes.
func deletedPods(p *Plan) []*corev1.Pod {
	var out []*corev1.Pod
	for _, d := range p.Delete {
		out = append(out, d.Pod)
	}
	return out
}

func nodes(names ...string) []*corev1.Node {
	out := make([]*corev1.Node, len(names))
	for i, n := range names {
		out[i] = winNode(n)
	}
	return out
}

func nodeNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "win-" + strconv.Itoa(100+i)
	}
	return out
}

func entry(st *ntv1.NodeTaskStatus, name string) *ntv1.NodeStatus { return st.Node(name) }

func requestNodes(reqs []PodRequest) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = r.Node + "#" + strconv.Itoa(int(r.Attempt))
	}
	return out
}

// onMachine makes the pod one for the machine with this Node UID.
func onMachine(uid types.UID) podOpt {
	return func(p *corev1.Pod) { p.Labels[ntv1.LabelNodeUID] = string(uid) }
}

// created sets the pod's creation time.
func createdAt(at time.Time) podOpt {
	return func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(at) }
}

// readYAML reads a file of the repository (a path from its root) into a T.
