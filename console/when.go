package console

import (
	"fmt"
	"math"
	"time"
)

// when is a time as a page shows it: relative ("3 days ago", "in 29 days")
// with the exact time for the title attribute and the datetime attribute.
type when struct {
	Set      bool
	Relative string
	Exact    string // e.g. "2 Mar 2026, 14:05 UTC"
	ISO      string // RFC 3339, for <time datetime>
	Past     bool
}

func newWhen(t *time.Time, now time.Time) when {
	if t == nil {
		return when{}
	}
	u := t.UTC()
	return when{
		Set:      true,
		Relative: relative(u, now),
		Exact:    u.Format("2 Jan 2006, 15:04 MST"),
		ISO:      u.Format(time.RFC3339),
		Past:     !u.After(now),
	}
}

// relative says how far t is from now, the way a person would.
func relative(t, now time.Time) string {
	d := now.Sub(t)
	future := d < 0
	if future {
		d = -d
	}
	var s string
	switch {
	case d < 45*time.Second:
		if future {
			return "in a few seconds"
		}
		return "just now"
	case d < 90*time.Second:
		s = "a minute"
	case d < 45*time.Minute:
		s = plural(round(d.Minutes()), "minute")
	case d < 90*time.Minute:
		s = "an hour"
	case d < 22*time.Hour:
		s = plural(round(d.Hours()), "hour")
	case d < 36*time.Hour:
		if future {
			return "tomorrow"
		}
		return "yesterday"
	case d < 45*24*time.Hour:
		// Days up to six weeks: "in 30 days" is what a key's expiry
		// was set to, and more useful than "in a month".
		s = plural(round(d.Hours()/24), "day")
	case d < 320*24*time.Hour:
		s = plural(round(d.Hours()/24/30.44), "month")
	case d < 548*24*time.Hour:
		s = "a year"
	default:
		s = plural(round(d.Hours()/24/365.25), "year")
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

func round(f float64) int { return int(math.Round(f)) }

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}
