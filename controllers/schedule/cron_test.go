package schedule

import (
	"math/rand"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

func mustParse(t *testing.T, sched, tz string) *Cron {
	t.Helper()
	c, err := Parse(sched, tz)
	if err != nil {
		t.Fatalf("Parse(%q, %q): %v", sched, tz, err)
	}
	return c
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// TestNextAcrossDaylightSaving: Europe/Berlin jumps from 02:00 CET to 03:00 CEST on
// 2026-03-29 and back from 03:00 CEST to 02:00 CET on 2026-10-25.
func TestNextAcrossDaylightSaving(t *testing.T) {
	for _, tc := range []struct {
		name, sched, tz, from string
		want                  []string // UTC
	}{
		{"02:30 daily on the spring-forward night runs at the jump (03:00 CEST)", "30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z",
			[]string{"2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"}},
		{"02:30 daily on the fall-back night runs once, the first time", "30 2 * * *", "Europe/Berlin", "2026-10-23T12:00:00Z",
			[]string{"2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"}},
		{"every 30 minutes through the gap: the skipped times run once at the jump", "*/30 * * * *", "Europe/Berlin", "2026-03-29T00:10:00Z",
			[]string{"2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"}},
		{"every 30 minutes through the repeated hour: each wall-clock time once", "*/30 * * * *", "Europe/Berlin", "2026-10-24T23:40:00Z",
			[]string{"2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z", "2026-10-25T02:00:00Z"}},
		{"weekly on Saturday 03:00 in New York (EST and EDT)", "0 3 * * 6", "America/New_York", "2026-03-01T00:00:00Z",
			[]string{"2026-03-07T08:00:00Z", "2026-03-14T07:00:00Z"}},
		{"@weekly is Sunday midnight", "@weekly", "", "2026-11-30T10:00:00Z",
			[]string{"2026-12-06T00:00:00Z", "2026-12-13T00:00:00Z"}},
		{"@hourly in a half-hour zone", "@hourly", "Asia/Kolkata", "2026-11-30T10:10:00Z",
			[]string{"2026-11-30T10:30:00Z", "2026-11-30T11:30:00Z"}},
		{"unset time zone is UTC", "0 3 * * *", "", "2026-11-30T10:00:00Z",
			[]string{"2026-12-01T03:00:00Z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, tc.sched, tc.tz)
			at := utc(tc.from)
			for i, w := range tc.want {
				at = c.Next(at)
				if !at.Equal(utc(w)) {
					t.Fatalf("fire %d: got %s (%s), want %s", i, at.Format(time.RFC3339), at.In(c.Location()), w)
				}
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct{ sched, tz, field, words string }{
		{"30 3 * * 6", "Europe/Berlinn", "timeZone", `spec.timeZone "Europe/Berlinn" is not a time zone the manager knows`},
		{"30 3 * * 6", "Local", "timeZone", "is not an IANA time zone name"},
		{"@every 5m", "", "schedule", "@every is not supported"},
		{"CRON_TZ=UTC 0 3 * * *", "", "schedule", "use spec.timeZone"},
		{"61 3 * * *", "", "schedule", "is not a cron schedule"},
		{"0 3 * *", "", "schedule", "is not a cron schedule"},
		{"* * * * * *", "", "schedule", "is not a cron schedule"},
	} {
		_, err := Parse(tc.sched, tc.tz)
		pe, ok := err.(*ParseError)
		if !ok || pe.Field != tc.field || !strings.Contains(pe.Message, tc.words) {
			t.Errorf("Parse(%q, %q) = %v, want a %s error with %q", tc.sched, tc.tz, err, tc.field, tc.words)
		}
	}
}

// bruteMostRecent steps through every scheduled time: the reference MostRecent must match.
func bruteMostRecent(c *Cron, earliest, now time.Time) time.Time {
	var last time.Time
	for t := c.Next(earliest); !t.IsZero() && !t.After(now); t = c.Next(t) {
		last = t
	}
	return last
}

func TestMostRecentMatchesSteppingThrough(t *testing.T) {
	rng := rand.New(rand.NewSource(21))
	base := utc("2026-01-01T00:00:00Z")
	for _, tc := range []struct{ sched, tz string }{
		{"*/7 * * * *", ""}, {"30 2 * * *", "Europe/Berlin"}, {"*/30 * * * *", "Europe/Berlin"},
		{"0 3 * * 6", "America/New_York"}, {"15 10 1 * *", "Australia/Sydney"}, {"0,30 9-17 * * 1-5", "Asia/Kolkata"},
	} {
		c := mustParse(t, tc.sched, tc.tz)
		for i := 0; i < 200; i++ {
			earliest := base.Add(time.Duration(rng.Int63n(int64(360 * 24 * time.Hour))))
			now := earliest.Add(time.Duration(rng.Int63n(int64(40 * 24 * time.Hour))))
			if i%3 == 0 {
				now = earliest.Add(time.Duration(rng.Int63n(int64(3 * time.Hour))))
			}
			got, want := c.MostRecent(earliest, now), bruteMostRecent(c, earliest, now)
			if !got.Equal(want) {
				t.Fatalf("%s %s: MostRecent(%s, %s) = %s, want %s", tc.sched, tc.tz, earliest, now, got, want)
			}
		}
	}
}

// TestMostRecentAfterLongDowntime: CronJob's trap (more than 100 missed times stop the
// schedule) does not exist: a year of missed minutes gives the latest one, quickly.
func TestMostRecentAfterLongDowntime(t *testing.T) {
	c := mustParse(t, "* * * * *", "")
	start := time.Now()
	got := c.MostRecent(utc("2025-11-30T10:00:00Z"), utc("2026-11-30T10:00:30Z"))
	if !got.Equal(utc("2026-11-30T10:00:00Z")) {
		t.Fatalf("got %s", got)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("a year of missed minutes took %s", d)
	}
	if n := c.CountBetween(utc("2025-11-30T10:00:00Z"), got, missedCountLimit); n != missedCountLimit {
		t.Errorf("count stops at %d, got %d", missedCountLimit, n)
	}
	if !c.MostRecent(utc("2026-11-30T10:00:00Z"), utc("2026-11-30T10:00:00Z")).IsZero() {
		t.Error("nothing is due in an empty window")
	}
	if !c.MostRecent(utc("2026-11-30T10:00:00Z"), utc("2026-11-30T10:00:59Z")).IsZero() {
		t.Error("earliest itself is not due again")
	}
}

func TestRunName(t *testing.T) {
	at := utc("2026-11-28T02:00:00Z")
	if got := RunName("weekly-patch", at); got != "weekly-patch-29930520" {
		t.Errorf("RunName = %s", got)
	}
	if RunName("weekly-patch", at.Add(30*time.Second)) != RunName("weekly-patch", at) {
		t.Error("the name depends only on the scheduled minute")
	}
	// The longest schedule name the CRD admits gives a run name that is a valid label value
	// until the year 20000 (10 digits of minutes).
	long := strings.Repeat("a", ntv1.MaxScheduleNameLength)
	name := RunName(long, time.Date(9999, 12, 31, 23, 59, 0, 0, time.UTC))
	if errs := validation.IsValidLabelValue(name); len(errs) > 0 || len(name) > 63 {
		t.Errorf("%s: %v", name, errs)
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		t.Errorf("%s: %v", name, errs)
	}
}
