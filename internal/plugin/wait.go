package plugin

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/apimachinery/pkg/api/meta"
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
			return &ExitError{Code: ExitTimedOut, Err: fmt.Errorf("timed out after %s waiting for NodeTask %s/%s: %s, %s",
				timeout, ns, name, progress(&task.Status), summary(task))}
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
	w    io.Writer
	bar  *progressbar.ProgressBar
	last string
}

func newProgress(w io.Writer) *progressView {
	p := &progressView{w: w}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions(1, progressbar.OptionSetWriter(w), progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30), progressbar.OptionSetPredictTime(false), progressbar.OptionSetRenderBlankState(true),
			progressbar.OptionThrottle(100*time.Millisecond))
	}
	return p
}

func (p *progressView) update(t *ntv1.NodeTask, now time.Time) {
	st := &t.Status
	done := int(st.Succeeded + st.Failed)
	what := fmt.Sprintf("%d failed, %d running, %d pending; %s", st.Failed, st.Running, st.Pending, summary(t))
	if p.bar != nil {
		p.bar.ChangeMax(max(int(st.Targets), 1))
		p.bar.Describe(what)
		_ = p.bar.Set(done)
		return
	}
	line := fmt.Sprintf("%s finished, %s", progress(st), what)
	if line != p.last {
		p.last = line
		fmt.Fprintf(p.w, "%s  %s\n", now.UTC().Format("15:04:05"), line)
	}
}

func (p *progressView) stop() {
	if p.bar != nil {
		_ = p.bar.Exit()
		fmt.Fprintln(p.w)
	}
}
