package plugin

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// Exit codes of `wait`.
const (
	ExitReady    = 0
	ExitStalled  = 1
	ExitTimedOut = 2
)

func newWaitCommand(o *options) *cobra.Command {
	var (
		timeout  time.Duration
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "wait TASK",
		Short: "Wait until a task is Ready (exit 0) or Stalled (exit 1, printing the failed nodes), with a progress bar; exit 2 on timeout",
		Example: `  kubectl nodetask wait install-agent --timeout 30m
  kubectl nodetask wait install-agent && echo done`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.wait(cmd, args[0], timeout, interval)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "How long to wait.")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "How often to read the task.")
	return cmd
}

// outcome says whether a task has settled: Ready or Stalled for its current generation.
func outcome(t *ntv1.NodeTask) (settled bool, code int) {
	if t.Status.ObservedGeneration != t.Generation {
		return false, 0
	}
	if meta.IsStatusConditionTrue(t.Status.Conditions, ntv1.ConditionStalled) {
		return true, ExitStalled
	}
	if meta.IsStatusConditionTrue(t.Status.Conditions, ntv1.ConditionReady) {
		return true, ExitReady
	}
	return false, 0
}

func (o *options) wait(cmd *cobra.Command, name string, timeout, interval time.Duration) error {
	c, _, err := o.clients()
	if err != nil {
		return err
	}
	ns, err := o.namespace()
	if err != nil {
		return err
	}
	shown := newProgress(o.streams.Out)
	deadline := o.now().Add(timeout)
	task := &ntv1.NodeTask{}
	for {
		if err := c.Get(cmd.Context(), client.ObjectKey{Namespace: ns, Name: name}, task); err != nil {
			shown.stop()
			return fmt.Errorf("reading NodeTask %s/%s: %w", ns, name, err)
		}
		shown.update(task, o.now())
		if settled, code := outcome(task); settled {
			shown.stop()
			if code == ExitReady {
				c := meta.FindStatusCondition(task.Status.Conditions, ntv1.ConditionReady)
				fmt.Fprintf(o.streams.Out, "NodeTask %s/%s is Ready: %s\n", ns, name, c.Message)
				return nil
			}
			c := meta.FindStatusCondition(task.Status.Conditions, ntv1.ConditionStalled)
			fmt.Fprintf(o.streams.Out, "NodeTask %s/%s is Stalled (%s): %s\n", ns, name, c.Reason, c.Message)
			if task.Status.Failed > 0 {
				fmt.Fprintln(o.streams.Out)
				if err := printStatus(o.streams.Out, task, statusFlags{failed: true}, o.now()); err != nil {
					return err
				}
			}
			return &ExitError{Code: ExitStalled, Err: fmt.Errorf("NodeTask %s/%s is Stalled", ns, name)}
		}
		if !o.now().Before(deadline) {
			shown.stop()
			err := fmt.Errorf("timed out after %s waiting for NodeTask %s/%s: %s, %s",
				timeout, ns, name, progress(&task.Status), summary(task))
			if awaitingApproval(task) {
				err = fmt.Errorf("%w: the run waits for approval after its first batch (kubectl nodetask approve %s -n %s)", err, name, ns)
			}
			if healthCheckFailing(task) {
				what, then := "a health check does not hold", "it holds" // the checks' status not written yet
				if names := failingChecks(task); len(names) == 1 {
					what = "health check " + names[0] + " does not hold"
				} else if len(names) > 1 {
					what, then = "health checks "+strings.Join(names, ", ")+" do not hold", "they hold"
				}
				err = fmt.Errorf("%w: no node starts while %s; the rollout goes on by itself once %s "+
					"(kubectl nodetask status %s -n %s shows each check)", err, what, then, name, ns)
			}
			return &ExitError{Code: ExitTimedOut, Err: err}
		}
		select {
		case <-cmd.Context().Done():
			shown.stop()
			return cmd.Context().Err()
		case <-time.After(interval):
		}
	}
}

// progressView shows a task's progress: a bar on a terminal, a line per change elsewhere
// (a CI log, a pipe), so that logs stay readable.
type progressView struct {
	w        io.Writer
	terminal bool
	bar      *progressbar.ProgressBar
	barMax   int32
	last     string
	// noted is the last notice printed (notice).
	noted string
}

// notice is what holds the task back until a person acts or the cluster changes, printed
// once, under the progress: the AwaitingApproval message, which says how to approve, or the
// HealthCheckFailing message without its counts (the progress line has them), which names
// the checks that do not hold, so that it is printed again only when they change.
func notice(t *ntv1.NodeTask) string {
	switch {
	case awaitingApproval(t):
		c := meta.FindStatusCondition(t.Status.Conditions, ntv1.ConditionReconciling)
		return c.Reason + ": " + c.Message
	case healthCheckFailing(t):
		c := meta.FindStatusCondition(t.Status.Conditions, ntv1.ConditionReconciling)
		msg := c.Message
		// The controller's message is "N of M nodes succeeded, ...; health check ...".
		if _, rest, ok := strings.Cut(msg, "; "); ok {
			msg = rest
		}
		return c.Reason + ": " + msg
	}
	return ""
}

// healthCheckFailing reports whether the task's current generation holds its nodes back
// because a health check does not hold (Reconciling, not yet Stalled).
func healthCheckFailing(t *ntv1.NodeTask) bool {
	c := meta.FindStatusCondition(t.Status.Conditions, ntv1.ConditionReconciling)
	return t.Status.ObservedGeneration == t.Generation && c != nil && c.Status == metav1.ConditionTrue &&
		c.Reason == ntv1.ReasonHealthCheckFailing
}

// failingChecks names the health checks whose last evaluation did not hold.
func failingChecks(t *ntv1.NodeTask) []string {
	var names []string
	if r := t.Status.Rollout; r != nil {
		for _, c := range r.HealthChecks {
			if !c.Healthy {
				names = append(names, c.Name)
			}
		}
	}
	return names
}

func newProgress(w io.Writer) *progressView {
	f, ok := w.(*os.File)
	return &progressView{w: w, terminal: ok && term.IsTerminal(int(f.Fd()))}
}

func (p *progressView) update(t *ntv1.NodeTask, now time.Time) {
	st := &t.Status
	done := int(st.Succeeded + st.Failed)
	what := fmt.Sprintf("%d failed, %d running, %d pending; %s", st.Failed, st.Running, st.Pending, summary(t))
	note := notice(t)
	newNote := note != "" && note != p.noted
	p.noted = note
	if !p.terminal {
		line := fmt.Sprintf("%s finished, %s", progress(st), what)
		if line != p.last {
			p.last = line
			fmt.Fprintf(p.w, "%s  %s\n", now.UTC().Format("15:04:05"), line)
		}
		if newNote {
			fmt.Fprintf(p.w, "%s  %s\n", now.UTC().Format("15:04:05"), note)
		}
		return
	}
	if newNote {
		// Above the bar, which draws itself again below on the next Set.
		if p.bar != nil {
			_ = p.bar.Clear()
		}
		fmt.Fprintf(p.w, "%s  %s\n", now.UTC().Format("15:04:05"), note)
	}
	if st.Targets == 0 {
		return // no bar before the controller has counted the targets
	}
	if p.bar == nil || p.barMax != st.Targets {
		// A new bar when the targets change: the library's ChangeMax keeps a stale percentage.
		if p.bar != nil {
			_ = p.bar.Clear()
		}
		p.bar = progressbar.NewOptions(int(st.Targets), progressbar.OptionSetWriter(p.w), progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30), progressbar.OptionSetPredictTime(false), progressbar.OptionUseANSICodes(true))
		p.barMax = st.Targets
	}
	// A fixed width, so that a shorter description leaves nothing of a longer one behind.
	p.bar.Describe(fmt.Sprintf("%-56s", what))
	_ = p.bar.Set(done)
}

func (p *progressView) stop() {
	if p.bar != nil {
		_ = p.bar.Exit()
		fmt.Fprintln(p.w)
	}
}
