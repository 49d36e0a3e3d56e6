package plugin

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/schedule"
)

// getSchedule reads one NodeTaskSchedule from the namespace in effect.
func (o *options) getSchedule(cmd *cobra.Command, name string) (*ntv1.NodeTaskSchedule, error) {
	s := &ntv1.NodeTaskSchedule{}
	if err := o.get(cmd, "NodeTaskSchedule", name, s); err != nil {
		return nil, err
	}
	return s, nil
}

// scheduleArg returns the schedule's name when arg names one (nodetaskschedule/NAME, or
// the short forms kubectl accepts for the kind), and false for a task.
func scheduleArg(arg string) (string, bool) {
	kind, name, ok := strings.Cut(arg, "/")
	if !ok {
		return "", false
	}
	switch strings.ToLower(kind) {
	case "nodetaskschedule", "nodetaskschedules", "nts", "nodetaskschedule.nodetask.io", "nodetaskschedules.nodetask.io":
		return name, true
	}
	return "", false
}

// scheduleName is the schedule named by a command that takes only schedules: NAME, or
// nodetaskschedule/NAME as scheduleArg reads it.
func scheduleName(arg string) string {
	if name, ok := scheduleArg(arg); ok {
		return name
	}
	return arg
}

func newHistoryCommand(o *options) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "history SCHEDULE",
		Short: "Show a NodeTaskSchedule's runs, newest first, with their counts and outcome, and its next run",
		Long: "history prints what the schedule's status.history keeps: the active runs and the newest succeeded and " +
			"failed runs within the history limits, newest first, and the next scheduled time as the controller last wrote it. " +
			"A run started with run-now is listed as manual.",
		Example: `  kubectl nodetask history weekly-patch
  kubectl nodetask history weekly-patch -o yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "" && output != "json" && output != "yaml" {
				return fmt.Errorf("--output must be json or yaml, not %q", output)
			}
			name := scheduleName(args[0])
			s, err := o.getSchedule(cmd, name)
			if err != nil {
				return err
			}
			if output != "" {
				return printObject(o.streams.Out, output, s.Status)
			}
			return printHistory(o.streams.Out, s, o.now())
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "Print the schedule's status as json or yaml.")
	return cmd
}

// printHistory prints the schedule's header and its runs, newest first.
func printHistory(w io.Writer, s *ntv1.NodeTaskSchedule, now time.Time) error {
	st := &s.Status
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "NodeTaskSchedule:\t%s/%s\n", s.Namespace, s.Name)
	tz := "UTC"
	if s.Spec.TimeZone != nil && *s.Spec.TimeZone != "" {
		tz = *s.Spec.TimeZone
	}
	fmt.Fprintf(tw, "Schedule:\t%s (%s), concurrencyPolicy %s\n", s.Spec.Schedule, tz, dash(string(s.Spec.ConcurrencyPolicy)))
	next := "-"
	switch {
	case s.Spec.Suspend:
		next = "none: suspended"
	case st.NextScheduleTime != nil:
		next = fmt.Sprintf("%s (%s)", timestamp(st.NextScheduleTime), relative(st.NextScheduleTime.Time, now))
	}
	fmt.Fprintf(tw, "Next run:\t%s\n", next)
	if st.LastScheduleTime != nil {
		fmt.Fprintf(tw, "Last scheduled:\t%s (%s)\n", timestamp(st.LastScheduleTime), relative(st.LastScheduleTime.Time, now))
	}
	if st.ObservedGeneration != s.Generation {
		fmt.Fprintf(tw, "Observed:\tgeneration %d of %d: the controller has not acted on the latest spec yet\n", st.ObservedGeneration, s.Generation)
	}
	for _, typ := range []string{ntv1.ConditionReady, ntv1.ConditionStalled} {
		if c := meta.FindStatusCondition(st.Conditions, typ); c != nil && (typ == ntv1.ConditionReady || c.Status == metav1.ConditionTrue) {
			line := fmt.Sprintf("%s:\t%s %s", typ, c.Status, c.Reason)
			if c.Message != "" {
				line += ": " + c.Message
			}
			fmt.Fprintln(tw, line)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.History) == 0 {
		_, err := fmt.Fprintln(w, "\nNo runs yet.")
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTRIGGER\tSCHEDULED\tSTARTED\tFINISHED\tTARGETS\tSUCCEEDED\tFAILED\tOUTCOME")
	// status.history is newest first already (the controller sorts it); printed as kept.
	for _, e := range st.History {
		trigger := "schedule"
		if !schedule.IsScheduled(s.Name, e) {
			trigger = "manual"
		}
		outcome := string(e.Outcome)
		if e.Reason != "" && e.Outcome != ntv1.RunSucceeded {
			outcome += " (" + e.Reason + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", e.Name, trigger, timestamp(&e.ScheduledTime),
			timestamp(e.StartTime), timestamp(e.CompletionTime), e.Targets, e.Succeeded, e.Failed, outcome)
	}
	return tw.Flush()
}

// timestamp is the time in UTC, RFC 3339, or "-".
func timestamp(t *metav1.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// relative is "in 5m" or "5m ago".
func relative(t, now time.Time) string {
	if t.After(now) {
		return "in " + humanDuration(t.Sub(now))
	}
	return humanDuration(now.Sub(t)) + " ago"
}

func newRunNowCommand(o *options) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "run-now SCHEDULE",
		Short: "Start one run of a NodeTaskSchedule now, outside its schedule, like kubectl create job --from=cronjob/NAME",
		Long: "run-now creates a NodeTask from the schedule's template, named <schedule>-manual-<seconds since 1970>, owned " +
			"by the schedule and labelled with it: the schedule lists it in its history, counts it against its history " +
			"limits and deletes it with itself. It is not a scheduled time: the next scheduled run still starts at its " +
			"time, but, as any active run, a manual run that is still going makes it wait (concurrencyPolicy Forbid) or is " +
			"deleted for it (Replace). run-now refuses while a run of the schedule is active: two runs at once would race " +
			"for the same nodes. It works on a suspended schedule too.",
		Example: `  kubectl nodetask run-now weekly-patch
  kubectl nodetask run-now weekly-patch --yes`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := scheduleName(args[0])
			s, err := o.getSchedule(cmd, name)
			if err != nil {
				return err
			}
			if len(s.Status.Active) > 0 {
				var active []string
				for _, a := range s.Status.Active {
					active = append(active, a.Name)
				}
				return fmt.Errorf("NodeTaskSchedule %s/%s has an active run (%s): a second run at once would race for the same nodes; "+
					"wait for it (kubectl nodetask wait %s -n %s) and try again", s.Namespace, s.Name, strings.Join(active, ", "), active[0], s.Namespace)
			}
			c, _, err := o.clients()
			if err != nil {
				return err
			}
			run := manualRun(s, o.now())
			decisions, err := o.explainTargets(cmd, run)
			if err != nil {
				return err
			}
			n := targetCount(decisions)
			fmt.Fprintf(o.streams.Out, "NodeTask %s/%s will be created from NodeTaskSchedule %s and run on %d nodes.\n", run.Namespace, run.Name, s.Name, n)
			if !yes && !confirm(o, "Run it now?") {
				return fmt.Errorf("not confirmed; nothing created (pass --yes to skip the question)")
			}
			if err := c.Create(cmd.Context(), run, client.FieldOwner(FieldManager)); err != nil {
				return fmt.Errorf("creating NodeTask %s/%s: %w", run.Namespace, run.Name, err)
			}
			fmt.Fprintf(o.streams.Out, "NodeTask %s/%s created. Follow it with: kubectl nodetask wait %s -n %s\n", run.Namespace, run.Name, run.Name, run.Namespace)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "Do not ask for confirmation.")
	return cmd
}

// manualRun is the NodeTask run-now creates: the schedule's template as the controller
// copies it (schedule.NewRun), with the time it was asked for as its scheduled time, and
// the schedule as its controller owner, so that the schedule sees it as one of its runs.
// blockOwnerDeletion is left unset: setting it needs the right to update the schedule's
// finalizers, which a person who may create NodeTasks need not have.
func manualRun(s *ntv1.NodeTaskSchedule, now time.Time) *ntv1.NodeTask {
	now = now.Truncate(time.Second)
	run := schedule.NewRun(s, schedule.ManualRunName(s.Name, now), now)
	run.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: ntv1.GroupVersion.String(), Kind: "NodeTaskSchedule", Name: s.Name, UID: s.UID, Controller: ptr.To(true),
	}}
	return run
}

// scheduleStatus prints the status of the schedule's newest run, the first entry of its
// history: the active run if one is going, else the last one that finished.
func (o *options) scheduleStatus(cmd *cobra.Command, name string, f statusFlags) error {
	s, err := o.getSchedule(cmd, name)
	if err != nil {
		return err
	}
	if len(s.Status.History) == 0 {
		return fmt.Errorf("NodeTaskSchedule %s/%s has no run yet (see kubectl nodetask history %s)", s.Namespace, s.Name, s.Name)
	}
	last := s.Status.History[0]
	task, err := o.getTask(cmd, last.Name)
	if err != nil {
		return fmt.Errorf("the newest run of NodeTaskSchedule %s/%s, %s (%s), cannot be read; kubectl nodetask history %s shows what the schedule kept of it: %w",
			s.Namespace, s.Name, last.Name, last.Outcome, s.Name, err)
	}
	if f.output == "" {
		fmt.Fprintf(o.streams.Out, "NodeTaskSchedule %s/%s, newest run (%s):\n", s.Namespace, s.Name, last.Outcome)
	}
	return printStatus(o.streams.Out, task, f, o.now())
}
