package rollout

// Admission is what the API server said of the current run's pods.
type Admission struct {
	// Confirmed: a dry run of the run's pod (and, for a task that restarts nodes, of its
	// restart pod) was admitted, in the namespace as its labels are now.
	Confirmed bool
	// Refused is why the API server refuses them: the task is Stalled, and touches no node.
	Refused *Problem
	// Waiting is why the API server cannot admit them yet though nothing is wrong with
	// them (a full ResourceQuota): the task waits, and touches no node meanwhile.
	Waiting *Problem
}

// Decided reports whether the verdict needs no dry run.
func (a Admission) Decided() bool { return a.Confirmed || a.Refused != nil || a.Waiting != nil }
