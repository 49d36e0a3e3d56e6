// Package plugin is `kubectl nodetask`: a kubectl plugin that reads NodeTasks the way a
// person does (a per-node table failed first, one node's whole output, its pod's log), lists
// the nodes a task would run on before it runs, starts a task again and waits for it with a
// progress bar. It shares the API types and the target selection with the controller.
package plugin

import (
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// FieldManager is the field manager of the plugin's writes (rerun, run-now), so that whoever
// reads a task's managedFields, Argo CD among them, sees who changed spec.rerunToken.
// approve has its own (ApproveFieldManager).
const FieldManager = "kubectl-nodetask"

// ExitError ends the command with a given exit code (wait: 1 stalled, 2 timed out).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode returns the exit code an error from the command asks for: 0 for none, the
// ExitError's code, else 1.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var e *ExitError
	if errors.As(err, &e) {
		return e.Code
	}
	return 1
}

// options are what every subcommand shares: the kubeconfig flags, the output streams, a
// clock (fixed in tests) and the clients, made on first use.
type options struct {
	config        *genericclioptions.ConfigFlags
	streams       genericiooptions.IOStreams
	allNamespaces bool
	now           func() time.Time

	client    client.WithWatch
	clientset kubernetes.Interface
}

// NewCommand returns the `kubectl nodetask` command.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &options{config: genericclioptions.NewConfigFlags(true), streams: streams, now: time.Now}
	cmd := &cobra.Command{
		Use:   "kubectl-nodetask",
		Short: "Read, check, re-run, approve and wait for NodeTasks; list and start the runs of NodeTaskSchedules",
		Long: "kubectl nodetask reads NodeTasks (nodetask.io/v1alpha1): per-node results failed first, a node's pod log " +
			"or the output kept in status, the Windows nodes a task would run on, a re-run, the approval of a run paused " +
			"after its first batch, and a wait with progress. " +
			"For a NodeTaskSchedule it lists the runs (history), starts one outside the schedule (run-now) and shows the " +
			"newest run (status nodetaskschedule/NAME).",
		SilenceUsage:  true,
		SilenceErrors: true,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl nodetask"},
	}
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	cmd.SetIn(streams.In)
	o.config.AddFlags(cmd.PersistentFlags())
	cmd.AddCommand(newStatusCommand(o), newLogsCommand(o), newTargetsCommand(o), newRerunCommand(o), newApproveCommand(o), newWaitCommand(o),
		newHistoryCommand(o), newRunNowCommand(o))
	return cmd
}

// clients makes the clients from the kubeconfig flags.
func (o *options) clients() (client.WithWatch, kubernetes.Interface, error) {
	if o.client != nil {
		return o.client, o.clientset, nil
	}
	cfg, err := o.config.ToRESTConfig()
	if err != nil {
		return nil, nil, err
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: newScheme()})
	if err != nil {
		return nil, nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	o.client, o.clientset = c, cs
	return c, cs, nil
}

// newScheme knows the built-in kinds and NodeTask.
func newScheme() *runtime.Scheme {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(ntv1.AddToScheme(scheme))
	return scheme
}

// namespace is the namespace of the kubeconfig's context, or of -n.
func (o *options) namespace() (string, error) {
	ns, _, err := o.config.ToRawKubeConfigLoader().Namespace()
	return ns, err
}

// getTask reads one task from the namespace in effect, with its per-node results in
// status.nodes also when they are kept in NodeResultSlices (status.resultSlices).
func (o *options) getTask(cmd *cobra.Command, name string) (*ntv1.NodeTask, error) {
	task := &ntv1.NodeTask{}
	if err := o.get(cmd, "NodeTask", name, task); err != nil {
		return nil, err
	}
	if task.Status.ResultSlices == 0 {
		return task, nil
	}
	c, _, err := o.clients()
	if err != nil {
		return nil, err
	}
	var list ntv1.NodeResultSliceList
	if err := c.List(cmd.Context(), &list, client.InNamespace(task.Namespace)); err != nil {
		return nil, fmt.Errorf("reading the NodeResultSlices of NodeTask %s/%s: %w", task.Namespace, name, err)
	}
	var from []*ntv1.NodeResultSlice
	for i := range list.Items {
		s := &list.Items[i]
		// Every slice of the task, as the operator reads them: after a change of their
		// number not yet complete, a node's entry may still be in a slice past the count.
		if s.Task == task.Name && metav1.IsControlledBy(s, task) {
			from = append(from, s)
		}
	}
	task.Status.Nodes = ntv1.MergeResultSlices(&task.Status, from)
	return task, nil
}

// get reads one object of the given kind and name from the namespace in effect into obj.
func (o *options) get(cmd *cobra.Command, kind, name string, obj client.Object) error {
	c, _, err := o.clients()
	if err != nil {
		return err
	}
	ns, err := o.namespace()
	if err != nil {
		return err
	}
	if err := c.Get(cmd.Context(), client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
		return fmt.Errorf("reading %s %s/%s: %w", kind, ns, name, err)
	}
	return nil
}
