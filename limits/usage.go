package limits

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// Granularity is the length of the periods a usage report sums into.
type Granularity string

// The granularities of a usage report.
const (
	Hourly Granularity = "hour"
	Daily  Granularity = "day"
)

// Longest ranges of a usage report: 31 days of hours, 400 days of days.
const (
	MaxHourlyRange = 31 * 24 * time.Hour
	MaxDailyRange  = keystore.UsageRetention
)

// UsageParams is a usage report's range and granularity as a request gives
// them (RFC 3339 times; empty for the defaults).
type UsageParams struct {
	From, To, Granularity string
}

// ParamError is a usage parameter that cannot be used.
type ParamError struct {
	Field, Message string
}

func (e *ParamError) Error() string { return e.Field + ": " + e.Message }

// UsageRange is a checked report range: From and To on whole hours (days
// for a daily report), From before To.
type UsageRange struct {
	From, To    time.Time
	Granularity Granularity
}

// ParseUsageParams checks p. The defaults: granularity hour; to now; from
// 24 hours (hourly) or 30 days (daily) before to. Times are rounded down
// to the period, to is exclusive, and the period holding a to that is not
// on a boundary is included.
func ParseUsageParams(p UsageParams, now time.Time) (UsageRange, error) {
	g := Granularity(p.Granularity)
	switch g {
	case "":
		g = Hourly
	case Hourly, Daily:
	default:
		return UsageRange{}, &ParamError{"granularity", fmt.Sprintf("must be hour or day, not %q", p.Granularity)}
	}
	step, maxRange := time.Hour, MaxHourlyRange
	if g == Daily {
		step, maxRange = 24*time.Hour, MaxDailyRange
	}
	parse := func(field, v string, def time.Time) (time.Time, error) {
		if v == "" {
			return def, nil
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return time.Time{}, &ParamError{field, fmt.Sprintf("must be an RFC 3339 time such as 2026-12-01T00:00:00Z, not %q", v)}
		}
		return t.UTC(), nil
	}
	to, err := parse("to", p.To, now.UTC())
	if err != nil {
		return UsageRange{}, err
	}
	defFrom := to.Add(-24 * time.Hour)
	if g == Daily {
		defFrom = to.AddDate(0, 0, -30)
	}
	from, err := parse("from", p.From, defFrom)
	if err != nil {
		return UsageRange{}, err
	}
	from = from.Truncate(step)
	if t := to.Truncate(step); !t.Equal(to) {
		to = t.Add(step)
	}
	switch {
	case !from.Before(to):
		return UsageRange{}, &ParamError{"from", "must be before to"}
	case to.Sub(from) > maxRange:
		return UsageRange{}, &ParamError{"from", fmt.Sprintf("the range is longer than the %s a %s report may cover", maxRange, g)}
	}
	return UsageRange{From: from, To: to, Granularity: g}, nil
}

// Usage reads the usage q selects over r from the store, summed per key
// per period of r's granularity, oldest period first, then by key id.
func Usage(ctx context.Context, st keystore.UsageStore, q keystore.UsageQuery, r UsageRange) ([]keystore.UsageCount, error) {
	q.From, q.To = r.From, r.To
	rows, err := st.Usage(ctx, q)
	if err != nil {
		return nil, err
	}
	if r.Granularity == Daily {
		rows = sumDays(rows)
	}
	if rows == nil {
		rows = []keystore.UsageCount{}
	}
	return rows, nil
}

// sumDays sums hourly rows (ordered by hour, then key) into days (ordered
// by day, then key).
func sumDays(rows []keystore.UsageCount) []keystore.UsageCount {
	type dk struct {
		day time.Time
		key string
	}
	idx := map[dk]int{}
	var out []keystore.UsageCount
	for _, r := range rows {
		k := dk{r.Hour.Truncate(24 * time.Hour), r.KeyID}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, keystore.UsageCount{KeyID: r.KeyID, AccountID: r.AccountID, Hour: k.day})
		}
		out[i].Allowed += r.Allowed
		out[i].Forbidden += r.Forbidden
		out[i].Limited += r.Limited
	}
	// Hours of one day arrive together but keys interleave; sort each day.
	sortByPeriodKey(out)
	return out
}

func sortByPeriodKey(rows []keystore.UsageCount) {
	slices.SortStableFunc(rows, func(a, b keystore.UsageCount) int {
		return cmp.Or(a.Hour.Compare(b.Hour), cmp.Compare(a.KeyID, b.KeyID))
	})
}

// QuotaStatus is an account's quota and its use in the current period.
type QuotaStatus struct {
	Limit    int64     `json:"limit"`
	Used     int64     `json:"used"`
	ResetsAt time.Time `json:"resets_at"`
}

// QuotaStatus returns the quota of the account's plan and its use in the
// current period: from the limiter when it has seen the account (its count
// includes what it has not yet written), from the store otherwise. ok is
// false when the plan has no quota.
func (l *Limiter) QuotaStatus(ctx context.Context, st keystore.UsageStore, accountID, plan string) (QuotaStatus, bool, error) {
	p, _ := l.Plan(plan)
	if p.Quota == nil {
		return QuotaStatus{}, false, nil
	}
	if q, used, resets, ok := l.QuotaUsed(accountID); ok && q == *p.Quota {
		return QuotaStatus{Limit: q.Requests, Used: used, ResetsAt: resets}, true, nil
	}
	start := p.Quota.Period.Start(l.now())
	n, err := st.AddQuota(ctx, []keystore.QuotaCount{{AccountID: accountID, Period: string(p.Quota.Period), Start: start}})
	if err != nil {
		return QuotaStatus{}, false, err
	}
	return QuotaStatus{Limit: p.Quota.Requests, Used: n[0], ResetsAt: p.Quota.Period.Next(start)}, true, nil
}
