package schedule

import (
	"strconv"
	"strings"
	"time"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// manualInfix separates a manual run's schedule name from its time: runs the controller
// creates are <schedule>-<minutes since 1970> (digits only after the schedule's name), so a
// name with a letter there can never be one of them.
const manualInfix = "-manual-"

// maxRunNameLength is the longest run name: the run's name is the nodetask.io/task label
// value of its pods, which must be a valid label value.
const maxRunNameLength = 63

// ManualRunName is the name of a run started by hand (`kubectl nodetask run-now`) at now:
// <schedule>-manual-<seconds since 1970>. The schedule's name is shortened when the whole
// would be longer than a label value; the run is still found by its nodetask.io/schedule
// label and owner reference, not by its name.
func ManualRunName(scheduleName string, now time.Time) string {
	suffix := manualInfix + strconv.FormatInt(now.Unix(), 10)
	prefix := scheduleName
	if len(prefix)+len(suffix) > maxRunNameLength {
		prefix = strings.TrimRight(prefix[:maxRunNameLength-len(suffix)], "-.")
	}
	return prefix + suffix
}

// IsScheduled reports whether a run is one the controller created for a scheduled time,
// as opposed to one started by hand: only a scheduled run has the name RunName gives for
// its scheduled time. A manual run counts as a run in every other way (it is active, it
// blocks a due run under Forbid, it is replaced under Replace, it is kept within the
// history limits), but its time is not a scheduled time: it does not move
// lastScheduleTime, and a scheduled time it was started after is still due.
func IsScheduled(scheduleName string, e ntv1.ScheduleRun) bool {
	return e.Name == RunName(scheduleName, e.ScheduledTime.Time)
}
