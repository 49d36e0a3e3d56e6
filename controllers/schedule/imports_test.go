package schedule

import (
	"os/exec"
	"strings"
	"testing"
)

// TestScheduleTalksToNoAPIServer keeps the schedule package pure, as controllers/rollout is:
// no context, no client, and no clock (time.Now): every decision is a function of what was
// observed and of the time the controller passes in, and is tested from literals.
func TestScheduleTalksToNoAPIServer(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{join .Imports \"\\n\"}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, imp := range strings.Fields(string(out)) {
		if imp == "context" {
			t.Errorf("the schedule package imports context")
		}
	}
	out, err = exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "sigs.k8s.io/controller-runtime/pkg/client") || strings.HasPrefix(dep, "k8s.io/client-go") {
			t.Errorf("the schedule package depends on %s, which talks to the API server", dep)
		}
	}
	src, err := exec.Command("grep", "-l", "time.Now()", "cron.go", "plan.go").Output()
	if err == nil && len(strings.TrimSpace(string(src))) > 0 {
		t.Errorf("the schedule package reads the clock itself: %s", src)
	}
}
