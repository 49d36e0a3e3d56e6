package v1alpha1_test

import (
	"os"
	"path/filepath"
	"slices"
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
	crd := readCRD(t, file)
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

// TestEveryFieldIsDocumented: kubectl explain shows a description for each NodeTask field,
// ours from their godoc and the embedded Kubernetes types' from theirs.
func TestEveryFieldIsDocumented(t *testing.T) {
	checkDescriptions(t, "nodetask.io_nodetasks.yaml")
}

// TestEveryResultSliceFieldIsDocumented: the same for each NodeResultSlice field (its nodes'
// entries are the NodeTask's status.nodes, checked again here).
func TestEveryResultSliceFieldIsDocumented(t *testing.T) {
	checkDescriptions(t, "nodetask.io_noderesultslices.yaml")
}

// checkDescriptions fails the test for each field of the generated CRD
// config/crd/bases/FILE without a description, except .metadata, .status.conditions (the
// metav1.Condition schema) and the paths in skip, and what is under them.
func checkDescriptions(t *testing.T, file string, skip ...string) {
	t.Helper()
	crd := readCRD(t, file)
	schema := crd["spec"].(map[string]any)["versions"].([]any)[0].(map[string]any)["schema"].(map[string]any)["openAPIV3Schema"].(map[string]any)
	skip = append(skip, ".status.conditions", ".metadata")
	fields := 0
	var walk func(path string, node map[string]any)
	walk = func(path string, node map[string]any) {
		if slices.Contains(skip, path) {
			return
		}
		if path != "" {
			fields++
			if node["description"] == nil {
				t.Errorf("%s has no description", path)
			}
		}
		props, _ := node["properties"].(map[string]any)
		if items, ok := node["items"].(map[string]any); ok {
			props, _ = items["properties"].(map[string]any)
		}
		for name, child := range props {
			walk(path+"."+name, child.(map[string]any))
		}
	}
	walk("", schema)
	if fields < 10 {
		t.Fatalf("found only %d fields in %s", fields, file)
	}
}

// readCRD reads the generated CRD config/crd/bases/FILE.
func readCRD(t *testing.T, file string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "crd", "bases", file))
	if err != nil {
		t.Fatal(err)
	}
	var crd map[string]any
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatal(err)
	}
	return crd
}
