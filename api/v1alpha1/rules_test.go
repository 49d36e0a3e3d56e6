package v1alpha1_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestEveryRuleIsTested makes sure each CEL rule in the generated CRD has a case in
// invalidCases that expects its message, so that removing or breaking any rule fails the
// API suite.
func TestEveryRuleIsTested(t *testing.T) {
	messages := celMessages(t, "nodetask.io_nodetasks.yaml")
	if len(messages) < 9 {
		t.Fatalf("found only %d CEL rules in the CRD; the markers in nodetask_types.go were lost?", len(messages))
	}
	for _, msg := range messages {
		tested := false
		for _, c := range invalidCases {
			if strings.Contains(msg, c.message) {
				tested = true
				break
			}
		}
		if !tested {
			t.Errorf("no case in invalidCases expects the message of the rule %q", msg)
		}
	}
}

// celMessages returns the messages of every CEL rule (x-kubernetes-validations) anywhere in
// the generated CRD config/crd/bases/FILE.
func celMessages(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "crd", "bases", file))
	if err != nil {
		t.Fatal(err)
	}
	var crd map[string]any
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatal(err)
	}
	var messages []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				if k == "x-kubernetes-validations" {
					for _, rule := range child.([]any) {
						messages = append(messages, rule.(map[string]any)["message"].(string))
					}
					continue
				}
				walk(child)
			}
		case []any:
			for _, child := range v {
				walk(child)
			}
		}
	}
	walk(crd)
	return messages
}
