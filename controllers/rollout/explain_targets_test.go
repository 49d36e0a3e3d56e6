package rollout

import (
	"maps"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

func TestExplainTargets(t *testing.T) {
	pool := func(task *ntv1.NodeTask) {
		task.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"pool": "win"}}
	}
	all := []*corev1.Node{
		winNode("win-a", label("pool", "win")),
		winNode("win-b", label("pool", "win"), notReady),
		winNode("win-c", label("pool", "win"), taint("dedicated", "gpu", corev1.TaintEffectNoSchedule)),
		winNode("win-d", label("pool", "win"), taint(corev1.TaintNodeDiskPressure, "", corev1.TaintEffectNoSchedule)),
		winNode("win-e", label("pool", "win"), taint("soft", "", corev1.TaintEffectPreferNoSchedule)),
		winNode("win-other"),
		winNode("lin-a", linux, label("pool", "win")),
	}
	tests := []struct {
		name string
		task *ntv1.NodeTask
		want map[string]string // node -> "" (target), "waits: R" or why it is left out
	}{
		{
			name: "selector, taint, Linux, not ready",
			task: newTask(pool),
			want: map[string]string{
				"win-a": "", "win-b": "waits: NodeNotReady", "win-c": "taint dedicated=gpu:NoSchedule not tolerated",
				"win-d": "waits: NodeUnavailable", "win-e": "", "win-other": "spec.nodeSelector does not match",
				"lin-a": "not a Windows node (kubernetes.io/os=linux)",
			},
		},
		{
			name: "tolerated taint and names",
			task: newTask(func(task *ntv1.NodeTask) {
				task.Spec.NodeNames = []string{"win-c", "win-other"}
				task.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists}}
			}),
			want: map[string]string{
				"win-a": "not in spec.nodeNames", "win-b": "not in spec.nodeNames", "win-c": "",
				"win-d": "not in spec.nodeNames", "win-e": "not in spec.nodeNames", "win-other": "",
				"lin-a": "not a Windows node (kubernetes.io/os=linux)",
			},
		},
		{
			name: "newNodes Ignore during a run keeps the run's nodes",
			task: newTask(pool, func(task *ntv1.NodeTask) {
				task.Spec.NewNodes = ntv1.NewNodesIgnore
				task.Status.Run, task.Status.Revision = 1, Revision(&task.Spec)
				task.Status.Nodes = []ntv1.NodeStatus{{Name: "win-a", Phase: ntv1.NodeSucceeded, Run: 1}}
			}),
			want: map[string]string{
				"win-a": "", "win-b": "joined after the run started (spec.newNodes: Ignore)",
				"win-c":     "taint dedicated=gpu:NoSchedule not tolerated",
				"win-d":     "joined after the run started (spec.newNodes: Ignore)",
				"win-e":     "joined after the run started (spec.newNodes: Ignore)",
				"win-other": "spec.nodeSelector does not match", "lin-a": "not a Windows node (kubernetes.io/os=linux)",
			},
		},
		{
			name: "newNodes Ignore with a new revision selects afresh",
			task: newTask(pool, func(task *ntv1.NodeTask) {
				task.Spec.NewNodes = ntv1.NewNodesIgnore
				task.Status.Run, task.Status.Revision = 1, "older"
				task.Status.Nodes = []ntv1.NodeStatus{{Name: "win-a", Phase: ntv1.NodeSucceeded, Run: 1}}
			}),
			want: map[string]string{
				"win-a": "", "win-b": "waits: NodeNotReady", "win-c": "taint dedicated=gpu:NoSchedule not tolerated",
				"win-d": "waits: NodeUnavailable", "win-e": "", "win-other": "spec.nodeSelector does not match",
				"lin-a": "not a Windows node (kubernetes.io/os=linux)",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list := make([]corev1.Node, len(all))
			for i, n := range all {
				list[i] = *n
			}
			got, err := ExplainTargets(tt.task, list)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.IsSortedFunc(got, func(a, b TargetDecision) int { return strings.Compare(a.Node, b.Node) }) {
				t.Errorf("decisions not sorted by node: %v", got)
			}
			gotMap := map[string]string{}
			for _, d := range got {
				switch {
				case d.Target && d.Waits != "":
					gotMap[d.Node] = "waits: " + d.Waits
				case d.Target:
					gotMap[d.Node] = ""
				default:
					gotMap[d.Node] = d.Excluded
				}
			}
			if !maps.Equal(gotMap, tt.want) {
				t.Errorf("got %v\nwant %v", gotMap, tt.want)
			}
			// The planner, given the same task and nodes, targets exactly these nodes.
			plan := ComputePlan(observe(tt.task, all))
			var planned, explained []string
			for n := range plan.Targets {
				planned = append(planned, n)
			}
			for _, d := range got {
				if d.Target {
					explained = append(explained, d.Node)
				}
			}
			slices.Sort(planned)
			if !slices.Equal(planned, explained) {
				t.Errorf("the planner targets %v, ExplainTargets %v", planned, explained)
			}
		})
	}
}

func TestExplainTargetsInvalidSelector(t *testing.T) {
	task := newTask(func(task *ntv1.NodeTask) {
		task.Spec.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Bogus"}}}
	})
	if _, err := ExplainTargets(task, nil); err == nil {
		t.Fatal("an invalid selector gave no error")
	}
}
