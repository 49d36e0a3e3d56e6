package rollout

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDecisionsTalkToNoAPIServer keeps the decision package pure: it imports no context, no
// client, and nothing that brings one in, so that every decision is a function of what was
// observed and is tested from literals. Talking to the API server is the reconciler's.
func TestDecisionsTalkToNoAPIServer(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{join .Imports \"\\n\"}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, imp := range strings.Fields(string(out)) {
		if imp == "context" {
			t.Errorf("the decision package imports context")
		}
	}
	out, err = exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		// controller-runtime's scheme builder comes in with the API types; a client does not.
		if strings.HasPrefix(dep, "sigs.k8s.io/controller-runtime/pkg/client") || strings.HasPrefix(dep, "k8s.io/client-go") {
			t.Errorf("the decision package depends on %s, which talks to the API server", dep)
		}
	}
}
