package plugin

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

func newTargetsCommand(o *options) *cobra.Command {
	var (
		file   string
		output string
	)
	cmd := &cobra.Command{
		Use:   "targets (TASK | -f FILE)",
		Short: "List the Windows nodes a task runs on now, and why the other nodes are left out; nothing is created",
		Long: "targets is a dry run of a task's node selection, computed by the controller's own selection code against the live " +
			"nodes: the targets (with the ones that wait, for instance not Ready), and every other node with why it is left out " +
			"(not Windows, not selected, a taint the task does not tolerate).",
		Example: `  kubectl nodetask targets install-agent
  kubectl nodetask targets -f install-agent.yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var task *ntv1.NodeTask
			switch {
			case len(args) == 1 && file != "":
				return fmt.Errorf("name a TASK or give -f FILE, not both")
			case len(args) == 1:
				var err error
				if task, err = o.getTask(cmd, args[0]); err != nil {
					return err
				}
			case file != "":
				var err error
				if task, err = readTaskFile(file, o.streams.In); err != nil {
					return err
				}
			default:
				return fmt.Errorf("name a TASK or give -f FILE")
			}
			decisions, err := o.explainTargets(cmd, task)
			if err != nil {
				return err
			}
			if output != "" {
				return printObject(o.streams.Out, output, decisions)
			}
			return printTargets(o.streams.Out, decisions)
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "A NodeTask manifest (- for standard input) instead of a task in the cluster.")
	cmd.Flags().StringVarP(&output, "output", "o", "", "Print the decisions as json or yaml.")
	return cmd
}

// explainTargets judges the task against the live nodes with the controller's own selection.
func (o *options) explainTargets(cmd *cobra.Command, task *ntv1.NodeTask) ([]rollout.TargetDecision, error) {
	c, _, err := o.clients()
	if err != nil {
		return nil, err
	}
	var nodes corev1.NodeList
	if err := c.List(cmd.Context(), &nodes); err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	return rollout.ExplainTargets(task, nodes.Items)
}

// readTaskFile decodes one NodeTask from a YAML or JSON file.
func readTaskFile(path string, stdin io.Reader) (*ntv1.NodeTask, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	scheme := newScheme()
	task := &ntv1.NodeTask{}
	if _, _, err := serializer.NewCodecFactory(scheme).UniversalDeserializer().Decode(data, nil, task); err != nil {
		return nil, fmt.Errorf("%s holds no NodeTask (one object of kind NodeTask, apiVersion %s): %w", path, ntv1.GroupVersion, err)
	}
	return task, nil
}

// printTargets prints the targets first, then the nodes left out, each with why.
func printTargets(w io.Writer, decisions []rollout.TargetDecision) error {
	targets, waiting := 0, 0
	for _, d := range decisions {
		if d.Target {
			targets++
			if d.Waits != "" {
				waiting++
			}
		}
	}
	fmt.Fprintf(w, "%d of %d nodes are targets", targets, len(decisions))
	if waiting > 0 {
		fmt.Fprintf(w, " (%d of them wait to start)", waiting)
	}
	fmt.Fprintln(w, ".")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tTARGET\tWHY")
	for _, target := range []bool{true, false} {
		for _, d := range decisions {
			if d.Target != target {
				continue
			}
			why := d.Excluded
			switch {
			case d.Target && d.Waits != "":
				why = "waits: " + d.Waits
			case d.Target:
				why = "-"
			}
			yes := "no"
			if d.Target {
				yes = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", d.Node, yes, why)
		}
	}
	return tw.Flush()
}
