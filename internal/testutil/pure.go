package testutil

import (
	"os/exec"
	"strings"
	"testing"
)

// AssertTalksToNoAPIServer fails t if the package in the current directory imports context,
// or depends on a client of the API server (controller-runtime's client, client-go): the
// decision packages (controllers/rollout, controllers/schedule) stay functions of what was
// observed, tested from literals. controller-runtime's scheme builder comes in with the API
// types; a client does not.
func AssertTalksToNoAPIServer(t *testing.T) {
	t.Helper()
	out, err := exec.Command("go", "list", "-f", "{{join .Imports \"\\n\"}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, imp := range strings.Fields(string(out)) {
		if imp == "context" {
			t.Errorf("the package imports context")
		}
	}
	out, err = exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "sigs.k8s.io/controller-runtime/pkg/client") || strings.HasPrefix(dep, "k8s.io/client-go") {
			t.Errorf("the package depends on %s, which talks to the API server", dep)
		}
	}
}
