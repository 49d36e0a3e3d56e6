package plugin

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

func newLogsCommand(o *options) *cobra.Command {
	var (
		node    string
		attempt int
		follow  bool
	)
	cmd := &cobra.Command{
		Use:   "logs TASK --node NODE",
		Short: "Print a node's pod log (the last attempt, or --attempt N); the output kept in status once the pod is gone",
		Example: `  kubectl nodetask logs install-agent --node akswin000002
  kubectl nodetask logs install-agent --node akswin000002 --attempt 1
  kubectl nodetask logs install-agent --node akswin000002 -f`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if node == "" {
				return fmt.Errorf("--node is required: whose log? (`kubectl nodetask status %s` lists the nodes)", args[0])
			}
			task, err := o.getTask(cmd, args[0])
			if err != nil {
				return err
			}
			return o.logs(cmd, task, node, int32(attempt), follow)
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "The node whose log to print.")
	cmd.Flags().IntVar(&attempt, "attempt", 0, "The attempt of the node's current run (default: the last).")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "Stream the log until the pod ends.")
	return cmd
}

// logs prints the log of the node's pod through the pods/log API; when the pod is gone (its
// TTL after finishing deleted it), the output the controller kept in status, saying so.
func (o *options) logs(cmd *cobra.Command, task *ntv1.NodeTask, node string, attempt int32, follow bool) error {
	c, cs, err := o.clients()
	if err != nil {
		return err
	}
	var pods corev1.PodList
	if err := c.List(cmd.Context(), &pods, client.InNamespace(task.Namespace), client.MatchingLabels(rollout.TaskPodLabels(task.Name))); err != nil {
		return fmt.Errorf("listing the task's pods: %w", err)
	}
	entry := task.Status.Node(node)
	run := task.Status.Run
	if entry != nil {
		run = task.Status.RunOf(entry)
	}
	// The machine by its UID: pods left from an earlier node of the same name are not its.
	var machine types.UID
	var n corev1.Node
	if err := c.Get(cmd.Context(), client.ObjectKey{Name: node}, &n); err == nil {
		machine = n.UID
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading node %s: %w", node, err)
	}
	pod := pickPod(task, pods.Items, node, machine, run, attempt)
	if pod == nil {
		return o.keptOutput(task, entry, node, attempt)
	}
	// A finished pod's log is complete: following it would only wait on a kubelet that
	// has nothing more to send.
	finished := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	req := cs.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: pod.Spec.Containers[0].Name, Follow: follow && !finished})
	stream, err := req.Stream(cmd.Context())
	if err != nil {
		if entry != nil && entry.Output != "" {
			fmt.Fprintf(o.streams.ErrOut, "The log of pod %s cannot be read (%v).\n", pod.Name, err)
			return o.keptOutput(task, entry, node, attempt)
		}
		return fmt.Errorf("reading the log of pod %s: %w", pod.Name, err)
	}
	defer stream.Close()
	_, err = io.Copy(o.streams.Out, stream)
	return err
}

// keptOutput prints the output tail kept in the node's status entry.
func (o *options) keptOutput(task *ntv1.NodeTask, entry *ntv1.NodeStatus, node string, attempt int32) error {
	if entry == nil {
		return fmt.Errorf("NodeTask %s/%s has no pod and no entry for node %q", task.Namespace, task.Name, node)
	}
	if attempt != 0 && attempt != entry.Attempts {
		return fmt.Errorf("the pod of attempt %d on node %s is gone, and status keeps the output of the last attempt (%d) only",
			attempt, node, entry.Attempts)
	}
	fmt.Fprintf(o.streams.ErrOut, "The pod of node %s is gone; this is the output tail kept in the NodeTask's status (attempt %s, %s):\n",
		node, dash(attempts(entry)), entry.Phase)
	if entry.Output == "" {
		_, err := fmt.Fprintln(o.streams.ErrOut, "(no output kept)")
		return err
	}
	_, err := fmt.Fprintln(o.streams.Out, strings.TrimRight(entry.Output, "\n"))
	return err
}

// pickPod returns the task's pod on the node for the run and attempt (0: the last attempt),
// leaving out restart pods, pods of an earlier task of the same name (by the controller's
// UID) and, when machine is known, pods of an earlier machine of the node's name (by the
// node UID label).
func pickPod(task *ntv1.NodeTask, pods []corev1.Pod, node string, machine types.UID, run int64, attempt int32) *corev1.Pod {
	var mine []*corev1.Pod
	for i := range pods {
		p := &pods[i]
		if p.Spec.NodeName != node || !metav1.IsControlledBy(p, task) || p.Labels[ntv1.LabelRole] != "" ||
			p.Labels[ntv1.LabelRun] != strconv.FormatInt(run, 10) {
			continue
		}
		if uid, ok := p.Labels[ntv1.LabelNodeUID]; ok && machine != "" && uid != string(machine) {
			continue
		}
		if attempt != 0 && p.Labels[ntv1.LabelAttempt] != strconv.Itoa(int(attempt)) {
			continue
		}
		mine = append(mine, p)
	}
	if len(mine) == 0 {
		return nil
	}
	return slices.MaxFunc(mine, func(a, b *corev1.Pod) int {
		ai, _ := strconv.Atoi(a.Labels[ntv1.LabelAttempt])
		bi, _ := strconv.Atoi(b.Labels[ntv1.LabelAttempt])
		return cmp.Or(cmp.Compare(ai, bi), a.CreationTimestamp.Compare(b.CreationTimestamp.Time))
	})
}
