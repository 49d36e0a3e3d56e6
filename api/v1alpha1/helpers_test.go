package v1alpha1

import "testing"

// TestRunOf: the stored form leaves out the run of an entry that equals status.run.
func TestRunOf(t *testing.T) {
	st := &NodeTaskStatus{Run: 4}
	for _, tc := range []struct {
		stored, want int64
	}{{0, 4}, {4, 4}, {3, 3}} {
		if got := st.RunOf(&NodeStatus{Run: tc.stored}); got != tc.want {
			t.Errorf("RunOf(entry with run %d) = %d, want %d", tc.stored, got, tc.want)
		}
	}
}
