package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// This file is the key page (a key's usage of the last 30 days, drawn as
// SVG on the server) and the account's quota.

// QuotaStatus is an account's quota: how much of it is used and when it
// resets, as GET <base>/api/usage reports it.
type QuotaStatus struct {
	// Limit is the requests the quota allows per period.
	Limit int64 `json:"limit"`
	// Used is the requests counted so far in the period.
	Used int64 `json:"used"`
	// ResetsAt is when the next period starts.
	ResetsAt time.Time `json:"resets_at"`
}

// usageDays is how many days the key page's chart shows.
const usageDays = 30

// usageStore returns the store's usage reader, if it keeps usage.
func (h *Handler) usageStore() (keystore.UsageStore, bool) {
	if h.cfg.Usage != nil {
		return h.cfg.Usage, true
	}
	us, ok := h.cfg.Keys.Store.(keystore.UsageStore)
	return us, ok
}

// dayUsage is one day of a key's usage.
type dayUsage struct {
	Day                         time.Time
	Label                       string // "4 Dec"
	Allowed, Forbidden, Limited int64
}

// dailyUsage reads the last usageDays UTC days of usage of one key (or the
// account's, for key ""), oldest first, one entry per day.
func (h *Handler) dailyUsage(ctx context.Context, account, keyID string) ([]dayUsage, error) {
	us, ok := h.usageStore()
	if !ok {
		return nil, errors.ErrUnsupported
	}
	today := h.cfg.Now().UTC().Truncate(24 * time.Hour)
	from := today.AddDate(0, 0, -(usageDays - 1))
	rows, err := us.Usage(ctx, keystore.UsageQuery{AccountID: account, KeyID: keyID, From: from, To: today.AddDate(0, 0, 1)})
	if err != nil {
		return nil, err
	}
	days := make([]dayUsage, usageDays)
	for i := range days {
		d := from.AddDate(0, 0, i)
		days[i] = dayUsage{Day: d, Label: d.Format("2 Jan")}
	}
	for _, r := range rows {
		i := int(r.Hour.UTC().Sub(from) / (24 * time.Hour))
		if i < 0 || i >= usageDays {
			continue
		}
		days[i].Allowed += r.Allowed
		days[i].Forbidden += r.Forbidden
		days[i].Limited += r.Limited
	}
	return days, nil
}

// chart is the usage chart as the template draws it: stacked bars in a
// fixed coordinate space (the SVG scales to the page's width).
type chart struct {
	Width, Height int
	Bars          []bar
	Ticks         []tick
	Days          []dayUsage
	Total         dayUsage // sums
	Max           int64
	Summary       string
}

type bar struct {
	X, W                    int
	Label                   string // for the title: "4 Dec: 120 allowed, ..."
	Allowed, Forbidden, Lim rect
}

type rect struct{ Y, H int }

type tick struct {
	X      int
	Label  string
	Anchor string // text-anchor: middle, or end for the last day
}

const (
	chartW, chartH = 600, 160
	chartPad       = 20 // room for the day labels below the bars
)

func newChart(days []dayUsage) chart {
	c := chart{Width: chartW, Height: chartH + chartPad, Days: days}
	for _, d := range days {
		c.Total.Allowed += d.Allowed
		c.Total.Forbidden += d.Forbidden
		c.Total.Limited += d.Limited
		if t := d.Allowed + d.Forbidden + d.Limited; t > c.Max {
			c.Max = t
		}
	}
	slot := chartW / max(len(days), 1)
	scale := func(n int64) int {
		if c.Max == 0 || n == 0 {
			return 0
		}
		return max(int(n*chartH/c.Max), 1)
	}
	for i, d := range days {
		b := bar{X: i*slot + 2, W: slot - 4,
			Label: fmt.Sprintf("%s: %d allowed, %d forbidden, %d limited", d.Label, d.Allowed, d.Forbidden, d.Limited)}
		y := chartH
		for _, part := range []struct {
			n   int64
			dst *rect
		}{{d.Allowed, &b.Allowed}, {d.Forbidden, &b.Forbidden}, {d.Limited, &b.Lim}} {
			hgt := scale(part.n)
			y -= hgt
			*part.dst = rect{Y: y, H: hgt}
		}
		c.Bars = append(c.Bars, b)
		// A label a week apart, counted back from today, which ends
		// flush with the chart's right edge.
		if (len(days)-1-i)%7 == 0 {
			t := tick{X: b.X + b.W/2, Label: d.Label, Anchor: "middle"}
			if i == len(days)-1 {
				t.X, t.Anchor = b.X+b.W, "end"
			}
			c.Ticks = append(c.Ticks, t)
		}
	}
	c.Summary = fmt.Sprintf("Last %d days: %d requests allowed, %d refused for scope (403), %d limited (429).",
		len(days), c.Total.Allowed, c.Total.Forbidden, c.Total.Limited)
	if len(days) > 0 {
		c.Summary += fmt.Sprintf(" Busiest day: %d requests.", c.Max)
	}
	return c
}

// keyPage is a key's page: its facts, actions and usage.
type keyPage struct {
	Key        keyView
	Chart      *chart
	NoUsage    string // why there is no chart
	UsageAPI   string
	BackToKeys string
}

func (h *Handler) keyPage(w http.ResponseWriter, r *http.Request, rq *request, k keystore.Key) {
	p := keyPage{Key: h.view(k), BackToKeys: h.home, UsageAPI: h.base + "/api/keys/" + k.ID + "/usage"}
	days, err := h.dailyUsage(r.Context(), rq.account, k.ID)
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		p.NoUsage = "This gateway's key store does not record usage."
	case err != nil:
		h.onError("read usage", err)
		p.NoUsage = "Usage cannot be read right now. Please try again in a moment."
	default:
		c := newChart(days)
		p.Chart = &c
	}
	h.render(w, r, rq, http.StatusOK, "key", p)
}

// quotaView is the account's quota as the key list shows it.
type quotaView struct {
	QuotaStatus
	Percent int
	Resets  when
	Left    int64
}

// quota returns the account's quota for the page, or nil when none applies
// or it cannot be read.
func (h *Handler) quota(r *http.Request, rq *request) *quotaView {
	if h.cfg.Quota == nil {
		return nil
	}
	q, ok, err := h.cfg.Quota(r.Context(), rq.account, rq.plan)
	if err != nil {
		h.onError("read quota", err)
		return nil
	}
	if !ok || q.Limit <= 0 {
		return nil
	}
	v := &quotaView{QuotaStatus: q, Resets: newWhen(&q.ResetsAt, h.cfg.Now()), Left: max(q.Limit-q.Used, 0)}
	v.Percent = int(min(q.Used*100/q.Limit, 100))
	return v
}
