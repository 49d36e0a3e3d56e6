package plugin

import (
	"fmt"
	"slices"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

// ApproveFieldManager is the field manager of `approve`'s apply of spec.rollout.approvedRun.
// It is not FieldManager (rerun's): a server-side apply removes the fields its manager
// applied before and leaves out now, so under one manager an approval would delete the
// token rerun set (a new revision: every node would run again), and a rerun the approval.
const ApproveFieldManager = FieldManager + "-approve"

func newApproveCommand(o *options) *cobra.Command {
	var yes, force bool
	cmd := &cobra.Command{
		Use: "approve TASK",
		Short: "Let a run go on after its first batch (rollout.pauseAfterFirstBatch): sets spec.rollout.approvedRun to the run " +
			"(server-side apply, field manager " + ApproveFieldManager + ")",
		Long: "approve sets spec.rollout.approvedRun to the task's current run (status.run) with a server-side apply of that " +
			"field alone, under its own field manager (" + ApproveFieldManager + "), so that managedFields show who approved. " +
			"A task with rollout.pauseAfterFirstBatch runs its first batch, then waits (Reconciling, reason AwaitingApproval) " +
			"until approvedRun names the run; an approval never carries over to a later run. Approving before the first batch " +
			"finished is allowed (it asks first): the other targets then start as soon as the first batch succeeded. " +
			"A run that is already approved is left as it is (exit 0). If your manifests (Argo CD, Flux) set approvedRun, " +
			"change it there instead: a GitOps tool reverts what the cluster holds to what git says.",
		Example: `  kubectl nodetask approve install-agent
  kubectl nodetask approve install-agent --yes`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			task, err := o.getTask(cmd, args[0])
			if err != nil {
				return err
			}
			ns, name, run := task.Namespace, task.Name, task.Status.Run
			switch {
			case !task.Spec.Rollout.PauseAfterFirstBatch:
				return fmt.Errorf("NodeTask %s/%s does not pause after its first batch (spec.rollout.pauseAfterFirstBatch is not set): "+
					"there is nothing to approve; nothing changed", ns, name)
			case run == 0:
				return fmt.Errorf("NodeTask %s/%s has no run yet (status.run is 0): there is nothing to approve; nothing changed. "+
					"Approve once its run started (kubectl nodetask status %s -n %s shows it)", ns, name, name, ns)
			case task.Spec.Rollout.ApprovedRun == run:
				fmt.Fprintf(o.streams.Out, "NodeTask %s/%s: run %d is already approved (spec.rollout.approvedRun is %d); nothing changed.\n",
					ns, name, run, run)
				return nil
			}
			p := planApproval(task)
			for _, w := range p.warnings {
				fmt.Fprintf(o.streams.ErrOut, "Warning: %s\n", w)
			}
			fmt.Fprintf(o.streams.Out, "NodeTask %s/%s, run %d: %s\n", ns, name, run, p.what)
			if !yes && !confirm(o, fmt.Sprintf("Approve run %d?", run)) {
				return fmt.Errorf("not confirmed; nothing changed (pass --yes to skip the question)")
			}
			c, _, err := o.clients()
			if err != nil {
				return err
			}
			if err := applyApprovedRun(cmd, c, task, run, force); err != nil {
				return err
			}
			fmt.Fprintf(o.streams.Out, "spec.rollout.approvedRun set to %d: %s. Follow it with: kubectl nodetask wait %s -n %s\n",
				run, p.next, name, ns)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "Do not ask for confirmation.")
	cmd.Flags().BoolVar(&force, "force-conflicts", false,
		"Take spec.rollout.approvedRun over from another field manager (your GitOps tool will set it back).")
	return cmd
}

// approval is what `approve` says before and after it approves a run.
type approval struct {
	// warnings: why the run does not wait for approval now (none when it does).
	warnings []string
	// what the approval does, before the question; next, what happens after it.
	what, next string
}

// planApproval works out, from the task's status, what approving its current run does.
func planApproval(task *ntv1.NodeTask) approval {
	st := &task.Status
	first := "the first batch"
	var others int32
	if r := st.Rollout; r != nil && len(r.FirstBatch) > 0 {
		first += " (" + rollout.NameList(r.FirstBatch) + ")"
		others = max(st.Targets-int32(len(r.FirstBatch)), 0)
	}
	rest := "the other targets"
	if st.Rollout != nil {
		rest = fmt.Sprintf("the other %s", rollout.NodeCount(int(others)))
	}
	a := approval{
		what: fmt.Sprintf("%s succeeded and the run waits for approval; approving lets %s start.", first, rest),
		next: fmt.Sprintf("%s start, rollout.maxConcurrent at a time", rest),
	}
	if st.ObservedGeneration != task.Generation {
		a.warnings = append(a.warnings, fmt.Sprintf("the controller has not acted on generation %d of the spec yet (the status is of generation %d): "+
			"if that change starts a new run, this approval of run %d does not carry over to it", task.Generation, st.ObservedGeneration, st.Run))
	}
	stalled := meta.FindStatusCondition(st.Conditions, ntv1.ConditionStalled)
	reconciling := meta.FindStatusCondition(st.Conditions, ntv1.ConditionReconciling)
	switch {
	case isTrue(stalled) && stalled.Reason == ntv1.ReasonFirstBatchFailed:
		a.warnings = append(a.warnings, fmt.Sprintf("run %d is Stalled (%s): %s", st.Run, stalled.Reason, stalled.Message))
		a.what = fmt.Sprintf("%s failed; approving does not start %s.", first, rest)
		a.next = fmt.Sprintf("nothing starts: %s failed; rerun the task once its cause is fixed", first)
	case isTrue(stalled):
		a.warnings = append(a.warnings, fmt.Sprintf("run %d is Stalled (%s): %s", st.Run, stalled.Reason, stalled.Message))
		a.what = fmt.Sprintf("the run is Stalled; approving lets %s start only once it goes on.", rest)
		a.next = fmt.Sprintf("%s start only once the run is no longer Stalled", rest)
	case meta.IsStatusConditionTrue(st.Conditions, ntv1.ConditionReady):
		a.warnings = append(a.warnings, fmt.Sprintf("run %d has finished (Ready): there is nothing left in it to approve", st.Run))
		a.what = "the run has finished; approving changes nothing in it."
		a.next = "the run has finished; nothing starts"
	case isTrue(reconciling) && reconciling.Reason == ntv1.ReasonAwaitingApproval, firstBatchSucceeded(st):
		// The case approve is for (or the first batch succeeded and something else, a
		// closed window say, holds the run too).
	default:
		now := "the controller has not chosen its first batch yet"
		if st.Rollout != nil {
			now = "its first batch has not finished"
		}
		if isTrue(reconciling) {
			now += fmt.Sprintf(" (Reconciling: %s)", reconciling.Reason)
		}
		a.warnings = append(a.warnings, fmt.Sprintf("run %d does not wait for approval yet: %s. Approving ahead lets %s start "+
			"as soon as %s succeeded, with no pause", st.Run, now, rest, first))
		a.what = fmt.Sprintf("approving ahead lets %s start as soon as %s succeeded.", rest, first)
		a.next = fmt.Sprintf("%s start as soon as %s succeeded, rollout.maxConcurrent at a time", rest, first)
	}
	return a
}

// firstBatchSucceeded reports whether every node of the run's first batch succeeded in it.
func firstBatchSucceeded(st *ntv1.NodeTaskStatus) bool {
	if st.Rollout == nil || len(st.Rollout.FirstBatch) == 0 {
		return false
	}
	for _, name := range st.Rollout.FirstBatch {
		i := slices.IndexFunc(st.Nodes, func(e ntv1.NodeStatus) bool { return e.Name == name })
		if i < 0 || st.RunOf(&st.Nodes[i]) != st.Run || st.Nodes[i].Phase != ntv1.NodeSucceeded {
			return false
		}
	}
	return true
}

func isTrue(c *metav1.Condition) bool { return c != nil && c.Status == metav1.ConditionTrue }

// applyApprovedRun sets spec.rollout.approvedRun with a server-side apply of that field alone.
func applyApprovedRun(cmd *cobra.Command, c client.Client, task *ntv1.NodeTask, run int64, force bool) error {
	return applySpecField(cmd, c, task, ApproveFieldManager, force, map[string]any{"rollout": map[string]any{"approvedRun": run}},
		"spec.rollout.approvedRun", fmt.Sprintf("set approvedRun to %d there", run))
}
