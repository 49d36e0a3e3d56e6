// Command kubectl-nodetask is the `kubectl nodetask` plugin: put it on PATH and run
// `kubectl nodetask --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/nodetask/nodetask-operator/internal/plugin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := plugin.NewCommand(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}).ExecuteContext(ctx)
	interrupted := ctx.Err() != nil
	stop()
	if interrupted && err != nil {
		// Ctrl-C (of logs -f, or wait) ends whatever was under way: quietly, with the
		// shell's code for SIGINT.
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
	}
	os.Exit(plugin.ExitCode(err))
}
