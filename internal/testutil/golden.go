// Package testutil holds helpers that more than one test package uses.
package testutil

import (
	"bytes"
	"flag"
	"os"
	"testing"
)

// Update rewrites golden files with what the code makes now: `go test ./PKG -update`.
var Update = flag.Bool("update", false, "rewrite the golden files in testdata/ from what the code makes now")

// Golden compares got with the file at path, and with -update writes got there first. Review
// the diff of a rewritten file before committing it.
func Golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *Update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from what the code makes; if the change is intended, run the test with -update and review the diff.\n--- got\n%s\n--- want\n%s",
			path, got, want)
	}
}
