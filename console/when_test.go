package console

import (
	"testing"
	"time"
)

func TestRelative(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		0:                     "just now",
		-10 * time.Second:     "just now",
		-time.Minute:          "a minute ago",
		-5 * time.Minute:      "5 minutes ago",
		-time.Hour:            "an hour ago",
		-3 * time.Hour:        "3 hours ago",
		-30 * time.Hour:       "yesterday",
		-3 * 24 * time.Hour:   "3 days ago",
		-40 * 24 * time.Hour:  "40 days ago",
		-50 * 24 * time.Hour:  "2 months ago",
		-100 * 24 * time.Hour: "3 months ago",
		-400 * 24 * time.Hour: "a year ago",
		-800 * 24 * time.Hour: "2 years ago",
		10 * time.Second:      "in a few seconds",
		30 * time.Hour:        "tomorrow",
		30 * 24 * time.Hour:   "in 30 days",
		29*24*time.Hour + 23*time.Hour + 59*time.Minute: "in 30 days",
		20 * 24 * time.Hour:                             "in 20 days",
		90 * 24 * time.Hour:                             "in 3 months",
	} {
		if got := relative(now.Add(d), now); got != want {
			t.Errorf("relative(%v) = %q, want %q", d, got, want)
		}
	}
	w := newWhen(&now, now.Add(time.Hour))
	if !w.Set || !w.Past || w.Exact != "10 Mar 2026, 12:00 UTC" || w.ISO != "2026-03-10T12:00:00Z" || w.Relative != "an hour ago" {
		t.Errorf("newWhen: %+v", w)
	}
	if newWhen(nil, now).Set {
		t.Error("a nil time is set")
	}
}
