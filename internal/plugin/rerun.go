package plugin

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

func newRerunCommand(o *options) *cobra.Command {
	var yes, force bool
	cmd := &cobra.Command{
		Use:   "rerun TASK",
		Short: "Run a task again on every target node: sets a new spec.rerunToken (server-side apply, field manager " + FieldManager + ")",
		Long: "rerun sets spec.rerunToken to a new value with a server-side apply under its own field manager (" + FieldManager +
			"), so that managedFields show who changed the spec and why. A new rerunToken is a new revision: the controller " +
			"runs the task again on every node it targets. If your manifests (Argo CD, Flux) set rerunToken, change it there " +
			"instead: a GitOps tool reverts what the cluster holds to what git says.",
		Example: `  kubectl nodetask rerun install-agent
  kubectl nodetask rerun install-agent --yes`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			task, err := o.getTask(cmd, args[0])
			if err != nil {
				return err
			}
			c, _, err := o.clients()
			if err != nil {
				return err
			}
			token := "rerun-" + o.now().UTC().Format("20060102T150405Z")
			next := task.DeepCopy()
			next.Spec.RerunToken = token
			decisions, err := o.explainTargets(cmd, next)
			if err != nil {
				return err
			}
			n := targetCount(decisions)
			fmt.Fprintf(o.streams.Out, "NodeTask %s/%s will run again (run %d) on %d nodes.\n", task.Namespace, task.Name, task.Status.Run+1, n)
			if !yes && !confirm(o, "Run it again?") {
				return fmt.Errorf("not confirmed; nothing changed (pass --yes to skip the question)")
			}
			if err := applyRerunToken(cmd, c, task, token, force); err != nil {
				return err
			}
			fmt.Fprintf(o.streams.Out, "spec.rerunToken set to %s. Follow it with: kubectl nodetask wait %s -n %s\n", token, task.Name, task.Namespace)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "Do not ask for confirmation.")
	cmd.Flags().BoolVar(&force, "force-conflicts", false, "Take spec.rerunToken over from another field manager (your GitOps tool will set it back).")
	return cmd
}

// confirm asks a yes/no question on the command's streams; anything but y or yes is no.
func confirm(o *options, question string) bool {
	fmt.Fprintf(o.streams.Out, "%s [y/N] ", question)
	line, _ := bufio.NewReader(o.streams.In).ReadString('\n')
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "y" || answer == "yes"
}

// applyRerunToken sets spec.rerunToken with a server-side apply of that field alone.
func applyRerunToken(cmd *cobra.Command, c client.Client, task *ntv1.NodeTask, token string, force bool) error {
	return applySpecField(cmd, c, task, FieldManager, force, map[string]any{"rerunToken": token}, "spec.rerunToken",
		"change rerunToken there")
}

// applySpecField applies one field of the task's spec (spec holds it, path names it) under
// the field manager, with a server-side apply that names only that field and the task's UID:
// it changes nothing else, and fails rather than create a task if this one was deleted
// meanwhile. A conflict says the field belongs to another manager, most likely the user's
// manifests, and what to do there (fix).
func applySpecField(cmd *cobra.Command, c client.Client, task *ntv1.NodeTask, manager string, force bool,
	spec map[string]any, path, fix string) error {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": ntv1.GroupVersion.String(),
		"kind":       "NodeTask",
		"metadata":   map[string]any{"name": task.Name, "namespace": task.Namespace, "uid": string(task.UID)},
		"spec":       spec,
	}}
	opts := []client.ApplyOption{client.FieldOwner(manager)}
	if force {
		opts = append(opts, client.ForceOwnership)
	}
	err := c.Apply(cmd.Context(), client.ApplyConfigurationFromUnstructured(u), opts...)
	if apierrors.IsConflict(err) {
		return fmt.Errorf("another field manager owns %s of NodeTask %s/%s, most likely your manifests: "+
			"%s, or pass --force-conflicts to take it over. The API server said: %w", path, task.Namespace, task.Name, fix, err)
	}
	if err != nil {
		return fmt.Errorf("setting %s: %w", path, err)
	}
	return nil
}
