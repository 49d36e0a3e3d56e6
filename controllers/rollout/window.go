package rollout

import (
	"fmt"
	"slices"
	"time"
	_ "time/tzdata" // the manager runs in a minimal image without the zoneinfo database

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// windowState says whether a maintenance window is open at now and, if it is not, when it
// next opens. A window that crosses midnight belongs to the day it opens on. Daylight saving
// time follows the window's time zone: a start that falls into a skipped hour moves by it.
func windowState(w *ntv1.MaintenanceWindow, now time.Time) (open bool, next time.Time, err error) {
	loc := time.UTC
	if w.TimeZone != "" {
		if loc, err = time.LoadLocation(w.TimeZone); err != nil {
			return false, time.Time{}, fmt.Errorf("spec.window.timeZone %q is not an IANA time zone name (such as Europe/Berlin)", w.TimeZone)
		}
	}
	sh, sm, err := clock(w.Start)
	if err != nil {
		return false, time.Time{}, err
	}
	eh, em, err := clock(w.End)
	if err != nil {
		return false, time.Time{}, err
	}
	t := now.In(loc)
	// Yesterday's window may still be open; the next opening is at most a week away.
	for d := -1; d <= 7; d++ {
		day := time.Date(t.Year(), t.Month(), t.Day()+d, 0, 0, 0, 0, loc)
		if len(w.Days) > 0 && !slices.Contains(w.Days, weekday(day.Weekday())) {
			continue
		}
		start := time.Date(day.Year(), day.Month(), day.Day(), sh, sm, 0, 0, loc)
		endDay := day.Day()
		if eh*60+em <= sh*60+sm {
			endDay++
		}
		end := time.Date(day.Year(), day.Month(), endDay, eh, em, 0, 0, loc)
		if !t.Before(start) && t.Before(end) {
			return true, time.Time{}, nil
		}
		if start.After(t) {
			return false, start, nil
		}
	}
	return false, time.Time{}, fmt.Errorf("spec.window never opens")
}

// clock parses HH:MM.
func clock(s string) (hour, minute int, err error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, 0, fmt.Errorf("window time %q is not HH:MM", s)
	}
	return t.Hour(), t.Minute(), nil
}

func weekday(d time.Weekday) ntv1.Weekday {
	return [...]ntv1.Weekday{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}[d]
}
