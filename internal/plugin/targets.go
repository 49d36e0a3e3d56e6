package plugin

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
	"github.com/nodetask/nodetask-operator/controllers/schedule"
)

func newTargetsCommand(o *options) *cobra.Command {
	var (
		file   string
		output string
	)
	cmd := &cobra.Command{
		Use:   "targets (TASK | nodetaskschedule/SCHEDULE | -f FILE)",
		Short: "List the Windows nodes a task (or a schedule's next run) runs on now, and why the other nodes are left out; nothing is created",
		Long: "targets is a dry run of a task's node selection, computed by the controller's own selection code against the live " +
			"nodes: the targets (with the ones that wait, for instance not Ready), and every other node with why it is left out " +
			"(not Windows, not selected, a taint the task does not tolerate). For a NodeTaskSchedule (nodetaskschedule/NAME or " +
			"nts/NAME, or a NodeTaskSchedule manifest with -f) it judges the schedule's template as a run created now would be " +
			"judged: a run chooses its targets when it starts, so the next scheduled run sees the nodes of its time.",
		Example: `  kubectl nodetask targets install-agent
  kubectl nodetask targets -f install-agent.yaml
  kubectl nodetask targets nodetaskschedule/weekly-patch
  kubectl nodetask targets -f weekly-patch-schedule.yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var (
				task  *ntv1.NodeTask
				sched *ntv1.NodeTaskSchedule
				err   error
			)
			switch {
			case len(args) == 1 && file != "":
				return fmt.Errorf("name a TASK or a nodetaskschedule/SCHEDULE, or give -f FILE, not both")
			case len(args) == 1:
				if name, ok := scheduleArg(args[0]); ok {
					if sched, err = o.getSchedule(cmd, name); err != nil {
						return err
					}
				} else if task, err = o.getTask(cmd, args[0]); err != nil {
					return err
				}
			case file != "":
				if task, sched, err = readTargetsFile(file, o.streams.In); err != nil {
					return err
				}
			default:
				return fmt.Errorf("name a TASK or a nodetaskschedule/SCHEDULE, or give -f FILE")
			}
			if sched != nil {
				task = templateRun(sched, o.now())
			}
			decisions, err := o.explainTargets(cmd, task)
			if err != nil {
				return err
			}
			if output != "" {
				return printObject(o.streams.Out, output, decisions)
			}
			if sched != nil {
				fmt.Fprintf(o.streams.Out, "NodeTaskSchedule %s: the targets of its template, as a run started now would choose them (spec.* below is spec.template.spec.*).\n",
					qualifiedName(sched.Namespace, sched.Name))
			}
			return printTargets(o.streams.Out, decisions)
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "A NodeTask or NodeTaskSchedule manifest (- for standard input) instead of an object in the cluster.")
	cmd.Flags().StringVarP(&output, "output", "o", "", "Print the decisions as json or yaml.")
	return cmd
}

// templateRun is the NodeTask a schedule's run would be if it were created at now: its
// template as the controller copies it (schedule.NewRun), with no status, which
// rollout.ExplainTargets judges as at the start of a first run, as a new run starts.
func templateRun(s *ntv1.NodeTaskSchedule, now time.Time) *ntv1.NodeTask {
	return schedule.NewRun(s, schedule.RunName(s.Name, now), now)
}

// qualifiedName is namespace/name, or the name alone for a manifest without a namespace.
func qualifiedName(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
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

// readTargetsFile decodes one NodeTask or one NodeTaskSchedule from a YAML or JSON file.
func readTargetsFile(path string, stdin io.Reader) (*ntv1.NodeTask, *ntv1.NodeTaskSchedule, error) {
	obj, err := decodeFile(path, stdin)
	if err != nil {
		return nil, nil, err
	}
	switch o := obj.(type) {
	case *ntv1.NodeTask:
		return o, nil, nil
	case *ntv1.NodeTaskSchedule:
		return nil, o, nil
	}
	return nil, nil, fmt.Errorf("%s holds a %T, not a NodeTask or a NodeTaskSchedule (apiVersion %s)", path, obj, ntv1.GroupVersion)
}

// decodeFile decodes one object of a kind the plugin's scheme knows from a file (- for
// standard input).
func decodeFile(path string, stdin io.Reader) (runtime.Object, error) {
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
	obj, _, err := serializer.NewCodecFactory(newScheme()).UniversalDeserializer().Decode(data, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("%s holds no NodeTask or NodeTaskSchedule (one object of either kind, apiVersion %s): %w", path, ntv1.GroupVersion, err)
	}
	return obj, nil
}

// targetCount is how many of the decisions are targets.
func targetCount(decisions []rollout.TargetDecision) int {
	n := 0
	for _, d := range decisions {
		if d.Target {
			n++
		}
	}
	return n
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
