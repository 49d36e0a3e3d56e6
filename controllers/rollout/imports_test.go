package rollout

import (
	"testing"

	"github.com/nodetask/nodetask-operator/internal/testutil"
)

// TestDecisionsTalkToNoAPIServer keeps the decision package pure: it imports no context, no
// client, and nothing that brings one in, so that every decision is a function of what was
// observed and is tested from literals. Talking to the API server is the reconciler's.
func TestDecisionsTalkToNoAPIServer(t *testing.T) { testutil.AssertTalksToNoAPIServer(t) }
