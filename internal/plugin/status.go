package plugin

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

// statusFlags are the flags of `status`.
type statusFlags struct {
	failed bool
	node   string
	output string
}

func newStatusCommand(o *options) *cobra.Command {
	var f statusFlags
	cmd := &cobra.Command{
		Use:   "status [TASK | nodetaskschedule/SCHEDULE]",
		Short: "Show a task's per-node results, failed first (a schedule's: its newest run's); without TASK (or with -A), one line per task",
		Example: `  kubectl nodetask status install-agent
  kubectl nodetask status install-agent --failed
  kubectl nodetask status install-agent --node akswin000002
  kubectl nodetask status nodetaskschedule/weekly-patch
  kubectl nodetask status -A`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.output != "" && f.output != "json" && f.output != "yaml" {
				return fmt.Errorf("--output must be json or yaml, not %q", f.output)
			}
			if len(args) == 0 {
				return o.listTasks(cmd, f.output)
			}
			if o.allNamespaces {
				return fmt.Errorf("-A lists the tasks of every namespace; name no TASK with it")
			}
			if name, ok := scheduleArg(args[0]); ok {
				return o.scheduleStatus(cmd, name, f)
			}
			task, err := o.getTask(cmd, args[0])
			if err != nil {
				return err
			}
			return printStatus(o.streams.Out, task, f, o.now())
		},
	}
	cmd.Flags().BoolVar(&f.failed, "failed", false, "Show only the nodes that failed.")
	cmd.Flags().StringVar(&f.node, "node", "", "Show one node's whole result: its times and all the output kept in status.")
	cmd.Flags().StringVarP(&f.output, "output", "o", "", "Print the status (or the node's entry) as json or yaml.")
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "List the tasks of every namespace.")
	return cmd
}

// listTasks prints one line per task of the namespace, or of every namespace with -A.
func (o *options) listTasks(cmd *cobra.Command, output string) error {
	c, _, err := o.clients()
	if err != nil {
		return err
	}
	var opts []client.ListOption
	if !o.allNamespaces {
		ns, err := o.namespace()
		if err != nil {
			return err
		}
		opts = append(opts, client.InNamespace(ns))
	}
	var tasks ntv1.NodeTaskList
	if err := c.List(cmd.Context(), &tasks, opts...); err != nil {
		return fmt.Errorf("listing NodeTasks: %w", err)
	}
	if output != "" {
		return printObject(o.streams.Out, output, tasks.Items)
	}
	if len(tasks.Items) == 0 {
		_, err := fmt.Fprintln(o.streams.ErrOut, "No NodeTasks found.")
		return err
	}
	return printTaskList(o.streams.Out, tasks.Items, o.allNamespaces, o.now())
}

// printTaskList prints one line per task: its run, how many targets finished, the counts,
// what its conditions say and its age.
func printTaskList(w io.Writer, tasks []ntv1.NodeTask, allNamespaces bool, now time.Time) error {
	slices.SortFunc(tasks, func(a, b ntv1.NodeTask) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if allNamespaces {
		fmt.Fprint(tw, "NAMESPACE\t")
	}
	fmt.Fprintln(tw, "NAME\tRUN\tPROGRESS\tSUCCEEDED\tFAILED\tRUNNING\tSTATUS\tAGE")
	for i := range tasks {
		t := &tasks[i]
		if allNamespaces {
			fmt.Fprintf(tw, "%s\t", t.Namespace)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%s\t%s\n", t.Name, t.Status.Run, progress(&t.Status),
			t.Status.Succeeded, t.Status.Failed, t.Status.Running, summary(t), age(t.CreationTimestamp, now))
	}
	return tw.Flush()
}

// progress is "finished/targets (percent)".
func progress(st *ntv1.NodeTaskStatus) string {
	done := st.Succeeded + st.Failed
	if st.Targets == 0 {
		return "0/0"
	}
	return fmt.Sprintf("%d/%d (%d%%)", done, st.Targets, done*100/st.Targets)
}

// summary says in a word or two where a task stands: Ready, Stalled or Reconciling with the
// condition's reason, or Pending when the controller has not yet written this generation.
func summary(t *ntv1.NodeTask) string {
	if t.Status.ObservedGeneration != t.Generation {
		return "Pending"
	}
	for _, typ := range []string{ntv1.ConditionStalled, ntv1.ConditionReconciling} {
		if c := meta.FindStatusCondition(t.Status.Conditions, typ); c != nil && c.Status == metav1.ConditionTrue {
			return typ + ": " + c.Reason
		}
	}
	if meta.IsStatusConditionTrue(t.Status.Conditions, ntv1.ConditionReady) {
		return "Ready"
	}
	return "Unknown"
}

// printStatus prints one task: the header, then the per-node table (or one node's entry).
func printStatus(w io.Writer, task *ntv1.NodeTask, f statusFlags, now time.Time) error {
	entries := sortedEntries(task.Status.Nodes)
	if f.failed {
		entries = slices.DeleteFunc(entries, func(e ntv1.NodeStatus) bool { return e.Phase != ntv1.NodeFailed })
	}
	if f.node != "" {
		i := slices.IndexFunc(entries, func(e ntv1.NodeStatus) bool { return e.Name == f.node })
		if i < 0 {
			return fmt.Errorf("NodeTask %s/%s has no entry for node %q (try `kubectl nodetask targets %s`)",
				task.Namespace, task.Name, f.node, task.Name)
		}
		if f.output != "" {
			return printObject(w, f.output, entries[i])
		}
		return printNode(w, task, &entries[i], now)
	}
	if f.output != "" {
		st := task.Status
		st.Nodes = entries
		return printObject(w, f.output, st)
	}
	printHeader(w, task, now)
	if len(entries) == 0 {
		if f.failed {
			_, err := fmt.Fprintln(w, "\nNo node failed.")
			return err
		}
		_, err := fmt.Fprintln(w, "\nNo node results yet.")
		return err
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	// A task with spec.check has a COMPLIANCE column; others keep the table they had.
	check := task.Spec.Check != nil
	if check {
		fmt.Fprintln(tw, "NODE\tPHASE\tCOMPLIANCE\tEXIT\tREASON\tATTEMPTS\tDURATION\tOUTPUT")
	} else {
		fmt.Fprintln(tw, "NODE\tPHASE\tEXIT\tREASON\tATTEMPTS\tDURATION\tOUTPUT")
	}
	for i := range entries {
		e := &entries[i]
		phase := string(e.Phase)
		if check {
			phase += "\t" + dash(string(e.Compliance))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Name, phase, exitCode(e), dash(e.Reason),
			dash(attempts(e)), entryDuration(e, now), lastLine(e.Output, 60))
	}
	return tw.Flush()
}

// printHeader prints what a task is and where it stands.
func printHeader(w io.Writer, task *ntv1.NodeTask, now time.Time) {
	st := &task.Status
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "NodeTask:\t%s/%s\n", task.Namespace, task.Name)
	fmt.Fprintf(tw, "Run:\t%d (revision %s)\n", st.Run, dash(st.Revision))
	fmt.Fprintf(tw, "Targets:\t%d: %d succeeded, %d failed, %d running, %d pending\n",
		st.Targets, st.Succeeded, st.Failed, st.Running, st.Pending)
	if st.ResultSlices > 0 {
		// The counts above are the task's, written every few seconds; the entries below are
		// the slices', written less often while the run goes on (all of them before Ready).
		fmt.Fprintf(tw, "Results:	in %d NodeResultSlices (kubectl get noderesultslices -n %s -l %s=%s); while the run goes on they may lag the counts by a minute or more\n",
			st.ResultSlices, task.Namespace, ntv1.LabelTask, rollout.TaskLabelValue(task.Name))
	}
	if c := st.Compliance; c != nil {
		fmt.Fprintf(tw, "Compliance:\t%d compliant, %d non-compliant, %d unknown (mode %s)\n", c.Compliant, c.NonCompliant, c.Unknown,
			cmp.Or(task.Spec.Mode, ntv1.ModeApply))
	}
	if r := st.Rollout; r != nil && (len(r.FirstBatch) > 0 || r.Batch != "") {
		fmt.Fprintf(tw, "Batch:\tfirst batch %s (%s)\n", dash(rollout.NameList(r.FirstBatch)), batchState(task))
	}
	if st.StartTime != nil {
		if st.CompletionTime != nil {
			fmt.Fprintf(tw, "Took:\t%s (started %s ago)\n", humanDuration(st.CompletionTime.Sub(st.StartTime.Time)), age(*st.StartTime, now))
		} else {
			fmt.Fprintf(tw, "Running for:\t%s\n", humanDuration(now.Sub(st.StartTime.Time)))
		}
	}
	fmt.Fprintf(tw, "Age:\t%s\n", age(task.CreationTimestamp, now))
	if st.ObservedGeneration != task.Generation {
		fmt.Fprintf(tw, "Observed:\tgeneration %d of %d: the controller has not acted on the latest spec yet\n", st.ObservedGeneration, task.Generation)
	}
	for _, typ := range []string{ntv1.ConditionReady, ntv1.ConditionReconciling, ntv1.ConditionStalled} {
		c := meta.FindStatusCondition(st.Conditions, typ)
		if c == nil {
			continue
		}
		line := fmt.Sprintf("%s:\t%s %s", typ, c.Status, c.Reason)
		if c.Message != "" {
			line += ": " + c.Message
		}
		fmt.Fprintln(tw, line)
	}
	_ = tw.Flush()
	printHealthChecks(w, task, now)
}

// printHealthChecks prints the last evaluation of each rollout.healthChecks check, a line
// each under the header: whether it held and for how long, why not, and when a failing
// check stalls the run (its failAfterSeconds).
func printHealthChecks(w io.Writer, task *ntv1.NodeTask, now time.Time) {
	r := task.Status.Rollout
	if r == nil || len(r.HealthChecks) == 0 {
		return
	}
	failAfter := map[string]int32{}
	for _, c := range task.Spec.Rollout.HealthChecks {
		if c.FailAfterSeconds != nil {
			failAfter[c.Name] = *c.FailAfterSeconds
		}
	}
	fmt.Fprintln(w, "Health checks:")
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	for _, c := range r.HealthChecks {
		state := "holds"
		if !c.Healthy {
			state = "does not hold"
		}
		if c.Since != nil {
			state += " (for " + age(*c.Since, now) + ")"
		}
		if !c.Healthy {
			if c.Message != "" {
				state += ": " + c.Message
			}
			if f, ok := failAfter[c.Name]; ok && c.Since != nil {
				left := c.Since.Add(time.Duration(f) * time.Second).Sub(now)
				if left > 0 {
					state += fmt.Sprintf("; the run stalls in %s (failAfterSeconds %d)", humanDuration(left), f)
				} else {
					state += fmt.Sprintf("; past its failAfterSeconds (%d): the run is stalled until it holds", f)
				}
			}
		}
		fmt.Fprintf(tw, "  %s:\t%s\n", c.Name, state)
	}
	_ = tw.Flush()
}

// batchState is status.rollout.batch, and whether the run's rest is approved or waits for it.
func batchState(task *ntv1.NodeTask) string {
	r := task.Status.Rollout
	state := dash(r.Batch)
	switch {
	case r.Approved:
		state += ", approved"
	case awaitingApproval(task):
		state += ", awaiting approval"
	}
	return state
}

// awaitingApproval reports whether the task's current generation waits for approval after
// its first batch.
func awaitingApproval(t *ntv1.NodeTask) bool {
	c := meta.FindStatusCondition(t.Status.Conditions, ntv1.ConditionReconciling)
	return t.Status.ObservedGeneration == t.Generation && c != nil && c.Status == metav1.ConditionTrue &&
		c.Reason == ntv1.ReasonAwaitingApproval
}

// printNode prints one node's whole entry, with all the output kept in status.
func printNode(w io.Writer, task *ntv1.NodeTask, e *ntv1.NodeStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "Node:\t%s\n", e.Name)
	fmt.Fprintf(tw, "Task:\t%s/%s\n", task.Namespace, task.Name)
	fmt.Fprintf(tw, "Phase:\t%s\n", e.Phase)
	fmt.Fprintf(tw, "Run:\t%d\n", task.Status.RunOf(e))
	fmt.Fprintf(tw, "Attempts:\t%s\n", dash(attempts(e)))
	fmt.Fprintf(tw, "Exit code:\t%s\n", exitCode(e))
	fmt.Fprintf(tw, "Reason:\t%s\n", dash(e.Reason))
	if e.Compliance != "" {
		fmt.Fprintf(tw, "Compliance:\t%s\n", e.Compliance)
	}
	if e.StartTime != nil {
		fmt.Fprintf(tw, "Started:\t%s (%s ago)\n", e.StartTime.UTC().Format(time.RFC3339), age(*e.StartTime, now))
	}
	if e.FinishTime != nil {
		fmt.Fprintf(tw, "Finished:\t%s (%s ago)\n", e.FinishTime.UTC().Format(time.RFC3339), age(*e.FinishTime, now))
	}
	fmt.Fprintf(tw, "Duration:\t%s\n", entryDuration(e, now))
	if e.BootIDBefore != "" || e.BootIDAfter != "" {
		fmt.Fprintf(tw, "Boot ID:\t%s -> %s\n", dash(e.BootIDBefore), dash(e.BootIDAfter))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if e.Output == "" {
		_, err := fmt.Fprintln(w, "Output:    (none kept)")
		return err
	}
	_, err := fmt.Fprintf(w, "Output (the tail kept in status):\n%s\n", indent(strings.TrimRight(e.Output, "\n"), "  "))
	return err
}

// phaseOrder puts the nodes a person looks at first on top: failed, then running (or
// restarting), pending, succeeded.
var phaseOrder = map[ntv1.NodePhase]int{
	ntv1.NodeFailed: 0, ntv1.NodeRunning: 1, ntv1.NodeRebooting: 1, ntv1.NodePending: 2, ntv1.NodeSucceeded: 3,
}

func sortedEntries(nodes []ntv1.NodeStatus) []ntv1.NodeStatus {
	out := slices.Clone(nodes)
	slices.SortStableFunc(out, func(a, b ntv1.NodeStatus) int {
		return cmp.Or(cmp.Compare(phaseOrder[a.Phase], phaseOrder[b.Phase]), strings.Compare(a.Name, b.Name))
	})
	return out
}

// exitCode is the entry's exit code; the controller stores none for a plain success, which
// means the script exited 0.
func exitCode(e *ntv1.NodeStatus) string {
	if e.ExitCode == nil {
		if e.Phase == ntv1.NodeSucceeded {
			return "0"
		}
		return "-"
	}
	return strconv.Itoa(int(*e.ExitCode))
}

func attempts(e *ntv1.NodeStatus) string {
	if e.Attempts == 0 {
		return ""
	}
	return strconv.Itoa(int(e.Attempts))
}

// entryDuration is how long the node's run took, or has taken so far.
func entryDuration(e *ntv1.NodeStatus, now time.Time) string {
	switch {
	case e.StartTime == nil:
		return "-"
	case e.FinishTime != nil:
		return humanDuration(e.FinishTime.Sub(e.StartTime.Time))
	default:
		return humanDuration(now.Sub(e.StartTime.Time))
	}
}

// lastLine is the output's last non-empty line, cut to max runes.
func lastLine(output string, max int) string {
	lines := strings.Split(strings.TrimRight(output, "\r\n \t"), "\n")
	line := strings.TrimSpace(lines[len(lines)-1])
	if r := []rune(line); len(r) > max {
		line = string(r[:max-3]) + "..."
	}
	return line
}

func age(t metav1.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

// humanDuration is kubectl's short form, with seconds below a minute.
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return duration.HumanDuration(d)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

// printObject prints v as json or yaml.
func printObject(w io.Writer, format string, v any) error {
	var data []byte
	var err error
	if format == "yaml" {
		data, err = yaml.Marshal(v)
	} else {
		data, err = json.MarshalIndent(v, "", "  ")
		data = append(data, '\n')
	}
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}
