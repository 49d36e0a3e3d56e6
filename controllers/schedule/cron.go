// Package schedule decides what a NodeTaskSchedule does: when its runs are due, which run
// to start, whether a run that is still going blocks it, which old runs to delete, and what
// its status says. It talks to no API server and reads no clock: the controller passes in
// what it observed and the time, and acts on the plan it gets back.
package schedule

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // the manager runs in a minimal image without the zoneinfo database

	"github.com/robfig/cron/v3"
)

// parser reads the five standard cron fields and the @-names (@yearly, @annually, @monthly,
// @weekly, @daily, @midnight, @hourly). @every is refused by Parse: it counts from whenever
// it is asked, so it has no scheduled times a restarted controller could find again.
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Cron is a parsed schedule in its time zone.
//
// Times are computed on the wall clock of the time zone, and each wall-clock time the
// schedule names runs once:
//   - A wall-clock time that does not exist (02:30 on the night the clocks jump from 02:00
//     to 03:00) runs at the jump, the first instant after the gap (03:00). Several such
//     times ("*/15" between 02:00 and 03:00) run once, at the jump.
//   - A wall-clock time that happens twice (02:30 on the night the clocks go back from 03:00
//     to 02:00) runs once, the first time it happens.
type Cron struct {
	spec *cron.SpecSchedule
	loc  *time.Location
}

// ParseError says which field is wrong and why.
type ParseError struct {
	// Field is "schedule" or "timeZone".
	Field string
	// Message is for the user: what was given and what is accepted.
	Message string
}

func (e *ParseError) Error() string { return e.Message }

// Parse reads a cron schedule and an IANA time zone name ("" is UTC).
func Parse(schedule, timeZone string) (*Cron, error) {
	loc := time.UTC
	if timeZone != "" {
		var err error
		// time.LoadLocation also accepts "Local", the manager's own zone: not a zone name.
		if timeZone == "Local" {
			return nil, &ParseError{Field: "timeZone", Message: fmt.Sprintf("spec.timeZone %q is not an IANA time zone name such as Europe/Berlin or America/New_York", timeZone)}
		}
		if loc, err = time.LoadLocation(timeZone); err != nil {
			return nil, &ParseError{Field: "timeZone", Message: fmt.Sprintf(
				"spec.timeZone %q is not a time zone the manager knows (%v); use an IANA name such as Europe/Berlin, America/New_York or UTC", timeZone, err)}
		}
	}
	s := strings.TrimSpace(schedule)
	if strings.HasPrefix(s, "TZ=") || strings.HasPrefix(s, "CRON_TZ=") {
		return nil, &ParseError{Field: "schedule", Message: fmt.Sprintf("spec.schedule %q sets a time zone: use spec.timeZone instead", schedule)}
	}
	if strings.HasPrefix(s, "@every") {
		return nil, &ParseError{Field: "schedule", Message: fmt.Sprintf(
			"spec.schedule %q: @every is not supported (its times depend on when the controller asks); use cron fields such as \"*/30 * * * *\"", schedule)}
	}
	parsed, err := parser.Parse(s)
	if err != nil {
		return nil, &ParseError{Field: "schedule", Message: fmt.Sprintf(
			"spec.schedule %q is not a cron schedule (%v); use five fields (minute hour day-of-month month day-of-week, such as \"30 3 * * 6\") or @yearly, @monthly, @weekly, @daily, @hourly", schedule, err)}
	}
	spec, ok := parsed.(*cron.SpecSchedule)
	if !ok {
		return nil, &ParseError{Field: "schedule", Message: fmt.Sprintf("spec.schedule %q is not a cron schedule", schedule)}
	}
	spec.Location = time.UTC // wall-clock times, computed as if in UTC (which has no DST)
	return &Cron{spec: spec, loc: loc}, nil
}

// Location is the schedule's time zone.
func (c *Cron) Location() *time.Location { return c.loc }

// wall returns the wall-clock reading of t in the schedule's zone, as a UTC time.
func (c *Cron) wall(t time.Time) time.Time {
	l := t.In(c.loc)
	return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
}

// instant returns the first instant whose wall clock in the schedule's zone reads w (a UTC
// time holding a wall-clock reading), or, for a reading skipped by a jump forward, the
// instant of the jump.
func (c *Cron) instant(w time.Time) time.Time {
	// The candidates are w less each offset in force around it; a valid one reads w.
	var best time.Time
	for _, probe := range []time.Time{w.Add(-26 * time.Hour), w, w.Add(26 * time.Hour)} {
		_, off := probe.In(c.loc).Zone()
		t := w.Add(-time.Duration(off) * time.Second)
		if c.wall(t).Equal(w) && (best.IsZero() || t.Before(best)) {
			best = t
		}
	}
	if !best.IsZero() {
		return best
	}
	// A gap: w less the offset before the jump lies after the jump; its zone starts at the jump.
	_, off := w.Add(-26 * time.Hour).In(c.loc).Zone()
	start, _ := w.Add(-time.Duration(off) * time.Second).In(c.loc).ZoneBounds()
	return start.UTC()
}

// Next returns the first scheduled time after t (in UTC), or the zero time if there is
// none within five years (a schedule such as "0 0 30 2 *").
func (c *Cron) Next(t time.Time) time.Time {
	w := c.wall(t)
	for i := 0; i < 1000; i++ { // a jump back repeats at most an hour or two of times
		w = c.spec.Next(w)
		if w.IsZero() {
			return time.Time{}
		}
		if at := c.instant(w); at.After(t) {
			return at.UTC()
		}
	}
	return time.Time{}
}

// MostRecent returns the latest scheduled time in (earliest, now], or the zero time if
// there is none. It does not step through the times in between, however many: it widens a
// window back from now until the window holds a scheduled time, then halves it down to the
// latest one, so that a schedule that fires every minute and was missed for a year costs
// about 60 calls of Next, not half a million.
func (c *Cron) MostRecent(earliest, now time.Time) time.Time {
	if !now.After(earliest) {
		return time.Time{}
	}
	// due(s): some scheduled time lies in (s, now]. It holds for every s before the latest
	// scheduled time f, and for none from f on.
	due := func(s time.Time) bool {
		n := c.Next(s)
		return !n.IsZero() && !n.After(now)
	}
	if !due(earliest) {
		return time.Time{}
	}
	lo := earliest
	for d := time.Minute; d < now.Sub(earliest); d *= 2 {
		if s := now.Add(-d); due(s) {
			lo = s
			break
		}
	}
	hi := now // due(lo) and !due(hi)
	for hi.Sub(lo) > time.Second {
		mid := lo.Add(hi.Sub(lo) / 2).Truncate(time.Second)
		if !mid.After(lo) {
			break
		}
		if due(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return c.Next(lo)
}

// CountBetween counts the scheduled times in (from, to), stopping at limit.
func (c *Cron) CountBetween(from, to time.Time, limit int) int {
	n := 0
	for t := c.Next(from); !t.IsZero() && t.Before(to) && n < limit; t = c.Next(t) {
		n++
	}
	return n
}

// RunName is the name of the NodeTask a schedule creates for a scheduled time: the
// schedule's name and the time in minutes since 1970, as CronJob names its Jobs. The same
// schedule and time always give the same name, so that a restarted controller, a lagging
// cache or a second replica finds the run already there instead of making another.
func RunName(scheduleName string, scheduled time.Time) string {
	return scheduleName + "-" + strconv.FormatInt(scheduled.Unix()/60, 10)
}
