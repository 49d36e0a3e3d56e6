package schedule

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/nodetask/nodetask-operator/internal/testutil"
)

// TestScheduleTalksToNoAPIServer keeps the schedule package pure, as controllers/rollout is:
// no context, no client, and no clock (time.Now): every decision is a function of what was
// observed and of the time the controller passes in, and is tested from literals.
func TestScheduleTalksToNoAPIServer(t *testing.T) {
	testutil.AssertTalksToNoAPIServer(t)
	src, err := exec.Command("grep", "-l", "time.Now()", "cron.go", "plan.go").Output()
	if err == nil && len(strings.TrimSpace(string(src))) > 0 {
		t.Errorf("the schedule package reads the clock itself: %s", src)
	}
}
