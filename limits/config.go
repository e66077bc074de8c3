// Package limits enforces spkgate's traffic limits and meters usage: a rate
// per account (all its keys together) and, optionally, a lower rate per key,
// a quota per account per UTC calendar day or month, and counts per key per
// hour of requests allowed, refused for scope (forbidden) and refused for a
// limit (limited).
//
// Decisions are local and take no lock and no store query: a rate is a
// token bucket kept as one atomic "theoretical arrival time" (GCRA), a quota
// a pair of atomic counters. What several instances must agree on travels
// through the store at a sync interval, off the request path: each instance
// adds what it admitted to a shared counter per limit and learns from the
// total what the others admitted, which it then takes from its own bucket
// (see Limiter.Sync for the overshoot this allows).
//
// The package imports neither Caddy nor a database driver.
package limits

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Rate is at most Requests requests per Window, as a token bucket that
// holds Requests tokens and refills one every Window/Requests.
type Rate struct {
	// Requests is how many requests one window admits (at least 1).
	Requests int64 `json:"requests"`
	// Window is the window's length (at least 1ms).
	Window time.Duration `json:"window"`
}

// Limits on what a rate may be: a window from a millisecond to a day, and a
// token interval of at least a microsecond.
const (
	MinWindow = time.Millisecond
	MaxWindow = 24 * time.Hour
)

// Validate reports what is wrong with r, if anything.
func (r Rate) Validate() error {
	switch {
	case r.Requests < 1:
		return fmt.Errorf("rate: requests must be at least 1, not %d", r.Requests)
	case r.Window < MinWindow || r.Window > MaxWindow:
		return fmt.Errorf("rate: window must be between %s and %s, not %s", MinWindow, MaxWindow, r.Window)
	case r.Window/time.Duration(r.Requests) < time.Microsecond:
		return fmt.Errorf("rate: %d requests per %s is more than one per microsecond", r.Requests, r.Window)
	}
	return nil
}

// interval is the time one token takes to come back.
func (r Rate) interval() int64 { return int64(r.Window) / r.Requests }

// PerSecond is the rate's sustained requests per second.
func (r Rate) PerSecond() float64 { return float64(r.Requests) / r.Window.Seconds() }

// Exceeds reports whether r admits more requests per second than o.
func (r Rate) Exceeds(o Rate) bool {
	// r.Requests/r.Window > o.Requests/o.Window, in integers.
	return float64(r.Requests)*float64(o.Window) > float64(o.Requests)*float64(r.Window)
}

// String formats r as "10/1s".
func (r Rate) String() string {
	return strconv.FormatInt(r.Requests, 10) + "/" + formatWindow(r.Window)
}

func formatWindow(d time.Duration) string {
	// time.Duration prints 1m0s and 1h0m0s; 1m and 1h read better and
	// parse the same.
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// ParseRate reads "10/1s" (requests/window; a Go duration, or a bare unit:
// "10/s", "100/m", "1000/h").
func ParseRate(s string) (Rate, error) {
	n, w, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, fmt.Errorf("rate %q: want requests/window, e.g. 10/1s", s)
	}
	req, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		return Rate{}, fmt.Errorf("rate %q: requests must be a whole number", s)
	}
	switch w {
	case "s", "m", "h":
		w = "1" + w
	}
	win, err := time.ParseDuration(w)
	if err != nil {
		return Rate{}, fmt.Errorf("rate %q: window must be a duration such as 1s or 1m", s)
	}
	r := Rate{Requests: req, Window: win}
	return r, r.Validate()
}

// Period is a quota's UTC calendar period.
type Period string

// The quota periods.
const (
	Day   Period = "day"
	Month Period = "month"
)

// Start returns the start of the period holding t (UTC).
func (p Period) Start(t time.Time) time.Time {
	t = t.UTC()
	if p == Month {
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// Next returns the start of the period after the one that starts at start.
func (p Period) Next(start time.Time) time.Time {
	if p == Month {
		return start.AddDate(0, 1, 0)
	}
	return start.AddDate(0, 0, 1)
}

// Quota is at most Requests forwarded requests per calendar Period.
type Quota struct {
	// Requests is how many requests the period admits (at least 1).
	Requests int64 `json:"requests"`
	// Period is "day" or "month" (UTC).
	Period Period `json:"period"`
}

// Validate reports what is wrong with q, if anything.
func (q Quota) Validate() error {
	if q.Requests < 1 {
		return fmt.Errorf("quota: requests must be at least 1, not %d", q.Requests)
	}
	if q.Period != Day && q.Period != Month {
		return fmt.Errorf("quota: unknown period %q (known: day, month)", q.Period)
	}
	return nil
}

// Plan is what one plan allows each of its accounts. A nil part is unlimited.
type Plan struct {
	Rate  *Rate  `json:"rate,omitempty"`
	Quota *Quota `json:"quota,omitempty"`
}

// Validate reports what is wrong with p, if anything.
func (p Plan) Validate() error {
	var errs []error
	if p.Rate != nil {
		errs = append(errs, p.Rate.Validate())
	}
	if p.Quota != nil {
		errs = append(errs, p.Quota.Validate())
	}
	return errors.Join(errs...)
}

// Plans maps a plan name (lower case) to its limits. A plan that is not
// in the map is unlimited.
type Plans map[string]Plan

// Validate reports what is wrong with any plan.
func (ps Plans) Validate() error {
	for name, p := range ps {
		if strings.TrimSpace(name) == "" {
			return errors.New("limits: a plan name must not be empty")
		}
		if err := p.Validate(); err != nil {
			return fmt.Errorf("limits %s: %w", name, err)
		}
	}
	return nil
}
