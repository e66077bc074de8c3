package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/spkgate/spkgate/keycache"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/limits"
)

// PlanLimits is what one plan allows each of its accounts (the app's
// "limits" map, keyed by plan name). A plan without an entry is unlimited.
type PlanLimits struct {
	// Rate limits the requests of all the account's keys together, as a
	// token bucket of Requests tokens refilled over Window.
	Rate *RateLimitConfig `json:"rate,omitempty"`
	// Quota limits the account's forwarded requests per UTC calendar day
	// or month.
	Quota *QuotaConfig `json:"quota,omitempty"`
}

// RateLimitConfig is a rate of Requests per Window.
type RateLimitConfig struct {
	// Requests per window; at least 1.
	Requests int64 `json:"requests"`
	// Window, between 1ms and 24h.
	Window caddy.Duration `json:"window"`
}

// QuotaConfig is a quota of Requests per Period.
type QuotaConfig struct {
	// Requests per period; at least 1.
	Requests int64 `json:"requests"`
	// Period is "day" or "month" (UTC calendar periods).
	Period string `json:"period"`
}

// Bounds and defaults of the limit sync and usage flush intervals.
const (
	DefaultLimitSyncInterval = time.Second
	MaxLimitSyncInterval     = 10 * time.Second
	// DefaultUsageFlushInterval is DESIGN's bound itself: a flush rewrites
	// a row per key used since the last one, and with 100,000 keys in use
	// each flush rewrote nearly the whole hour's table on SQLite (18% of
	// the gateway's CPU at 5s in the million-key benchmark). At 10s, with
	// statement journals in memory, the flushes cost a third less CPU a
	// second, for usage counts 10s behind instead of 5s (quotas are
	// counted separately, every second).
	DefaultUsageFlushInterval = 10 * time.Second
	MaxUsageFlushInterval     = 10 * time.Second
)

// limitPlans converts and checks the app's limits.
func (a *App) limitPlans() (limits.Plans, error) {
	plans := make(limits.Plans, len(a.Limits))
	for name, pl := range a.Limits {
		if pl == nil {
			return nil, fmt.Errorf("limits %s: empty", name)
		}
		var p limits.Plan
		if pl.Rate != nil {
			p.Rate = &limits.Rate{Requests: pl.Rate.Requests, Window: time.Duration(pl.Rate.Window)}
		}
		if pl.Quota != nil {
			p.Quota = &limits.Quota{Requests: pl.Quota.Requests, Period: limits.Period(pl.Quota.Period)}
		}
		plans[strings.ToLower(name)] = p
	}
	if err := plans.Validate(); err != nil {
		return nil, err
	}
	return plans, nil
}

// validateLimits checks the limits and their intervals.
func (a *App) validateLimits() error {
	if _, err := a.limitPlans(); err != nil {
		return err
	}
	if err := checkDuration("limit_sync_interval", a.LimitSyncInterval, MaxLimitSyncInterval); err != nil {
		return err
	}
	return checkDuration("usage_flush_interval", a.UsageFlushInterval, MaxUsageFlushInterval)
}

// limiters holds each store's limiter across config reloads, like stores:
// a reload keeps every bucket, quota count and unflushed usage count, and
// applies the new limits to them.
var limiters = caddy.NewUsagePool()

// limiterRun is a limiter and the goroutine that syncs and flushes it.
type limiterRun struct {
	lim    *limits.Limiter
	st     keystore.UsageStore
	sync   atomic.Int64 // nanoseconds
	flush  atomic.Int64
	logger atomic.Pointer[zap.Logger]
	cancel context.CancelFunc
	done   chan struct{}
}

// testLimitsClock, when set (by tests), is the clock of limiters created
// from then on, and the time of every request they see.
var testLimitsClock func() time.Time

// testKeysClock, when set (by tests), is the clock of the key caches and
// keys services created from then on: what decides a key's expiry.
var testKeysClock func() time.Time

// provisionLimits opens (or reuses) the store's limiter and gives it this
// configuration's limits.
func (a *App) provisionLimits() error {
	plans, err := a.limitPlans()
	if err != nil {
		return err
	}
	us, ok := a.shared.store.(keystore.UsageStore)
	if !ok {
		return fmt.Errorf("the key store %T keeps no usage", a.shared.store)
	}
	syncEvery := time.Duration(a.LimitSyncInterval)
	if syncEvery == 0 {
		syncEvery = DefaultLimitSyncInterval
	}
	flushEvery := time.Duration(a.UsageFlushInterval)
	if flushEvery == 0 {
		flushEvery = DefaultUsageFlushInterval
	}
	val, loaded, err := limiters.LoadOrNew(a.poolKey, func() (caddy.Destructor, error) {
		lim := limits.New(plans, limits.Options{Now: testLimitsClock})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Quotas go on from the stored counts from the first request.
		if err := lim.Preload(ctx, us); err != nil {
			return nil, fmt.Errorf("reading quota counters: %w", err)
		}
		rctx, rcancel := context.WithCancel(context.Background())
		run := &limiterRun{lim: lim, st: us, cancel: rcancel, done: make(chan struct{})}
		run.sync.Store(int64(syncEvery))
		run.flush.Store(int64(flushEvery))
		run.logger.Store(a.logger)
		go run.loop(rctx)
		return run, nil
	})
	if err != nil {
		return err
	}
	a.limits = val.(*limiterRun)
	if loaded {
		a.limits.lim.SetPlans(plans)
		a.limits.sync.Store(int64(syncEvery))
		a.limits.flush.Store(int64(flushEvery))
		a.limits.logger.Store(a.logger)
	}
	return nil
}

// cleanupLimits releases this configuration's hold on the limiter.
func (a *App) cleanupLimits() {
	if a.limits != nil {
		limiters.Delete(a.poolKey)
	}
}

// Limiter returns the limiter of the app's store.
func (a *App) Limiter() *limits.Limiter { return a.limits.lim }

// loop syncs rates and quotas at the sync interval, flushes usage at the
// flush interval and prunes old rows hourly, until cancelled.
func (l *limiterRun) loop(ctx context.Context) {
	defer close(l.done)
	var lastFlush, lastPrune time.Time
	failing := map[string]bool{}
	report := func(op string, err error) {
		log := l.logger.Load()
		if err != nil && !failing[op] {
			log.Warn("limits background work failed; counts are kept for the next try", zap.String("op", op), zap.Error(err))
		} else if err == nil && failing[op] {
			log.Info("limits background work recovered", zap.String("op", op))
		}
		failing[op] = err != nil
	}
	for {
		every := time.Duration(l.sync.Load())
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		report("sync", l.step(ctx, func(ctx context.Context) error { return l.lim.Sync(ctx, l.st, 3*every) }))
		now := time.Now()
		if now.Sub(lastFlush) >= time.Duration(l.flush.Load()) {
			lastFlush = now
			report("flush", l.step(ctx, func(ctx context.Context) error { return l.lim.Flush(ctx, l.st, 2*time.Hour) }))
		}
		if now.Sub(lastPrune) >= time.Hour {
			lastPrune = now
			report("prune", l.step(ctx, l.prune))
		}
	}
}

func (l *limiterRun) step(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return f(ctx)
}

// prune deletes usage older than the retention and idle limit counters.
func (l *limiterRun) prune(ctx context.Context) error {
	now := l.lim.Now()
	_, err := l.st.PruneUsage(ctx, now.Add(-keystore.UsageRetention))
	return errors.Join(err, l.st.PruneLimitCounters(ctx, now.AddDate(0, -2, 0)))
}

// Destruct stops the loop and hands the last counts to the store.
func (l *limiterRun) Destruct() error {
	l.cancel()
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return errors.Join(l.lim.Sync(ctx, l.st, time.Hour), l.lim.Flush(ctx, l.st, 0))
}

// startLimits begins the request's passage through the limits. The
// request's time is the one Caddy took when it arrived.
func (h *Auth) startLimits(r *http.Request, e *keycache.Entry) limits.Request {
	lim := h.app.limits.lim
	var now time.Time
	if testLimitsClock != nil {
		now = lim.Now()
	} else if t, ok := caddyhttp.GetVar(r.Context(), "start_time").(time.Time); ok {
		now = t
	} else {
		now = time.Now()
	}
	var kr limits.Rate
	if n, w := e.RateLimit(); n > 0 {
		kr = limits.Rate{Requests: int64(n), Window: w}
	}
	return lim.Begin(now, e.KeyID, e.AccountID, e.Plan, kr)
}

// takeRate takes the request's tokens; if a rate refuses it, it answers
// 429 rate_limited and reports true.
func (h *Auth) takeRate(w http.ResponseWriter, r *http.Request, lr limits.Request) (bool, error) {
	denial, wait := lr.TakeRate()
	if denial == limits.NotDenied {
		return false, nil
	}
	lr.Record(limits.Limited)
	secs := limits.RetryAfterSeconds(wait)
	which := "the account's"
	if denial == limits.KeyRate {
		which = "this key's"
	}
	body := `{"error":"rate_limited","message":"` + which + ` rate limit is exceeded; retry after the time in Retry-After","retry_after":` +
		strconv.FormatInt(secs, 10) + "}"
	return true, h.refuseLimited(w, r, lr, secs, "rate limited", body)
}

// takeQuota counts the request against its account's quota; if the quota
// is used up, it answers 429 quota_exceeded and reports true.
func (h *Auth) takeQuota(w http.ResponseWriter, r *http.Request, lr limits.Request) (bool, error) {
	ok, resets := lr.TakeQuota()
	if ok {
		return false, nil
	}
	lr.Record(limits.Limited)
	secs := limits.RetryAfterSeconds(resets.Sub(lr.Time()))
	body := `{"error":"quota_exceeded","message":"the account's request quota for this period is used up","resets_at":"` +
		resets.Format(time.RFC3339) + `"}`
	return true, h.refuseLimited(w, r, lr, secs, "quota exceeded", body)
}

// refuseLimited writes a 429 for a limit. It is not a failed
// authentication: the key was valid.
func (h *Auth) refuseLimited(w http.ResponseWriter, r *http.Request, lr limits.Request, secs int64, reason, body string) error {
	setLimitHeaders(w, lr)
	resp := response{status: http.StatusTooManyRequests, reason: reason, body: []byte(body),
		length: []string{strconv.Itoa(len(body))}, extra: [][2]string{{"Retry-After", strconv.FormatInt(secs, 10)}}}
	return h.refuse(w, r, &resp) // counted as "limited" in spk_auth_results_total
}

// finishLimits counts the request's outcome and sets its RateLimit
// headers.
func finishLimits(w http.ResponseWriter, lr limits.Request, o limits.Outcome) {
	lr.Record(o)
	setLimitHeaders(w, lr)
}

// setLimitHeaders sets RateLimit-Policy and RateLimit when a limit applies.
func setLimitHeaders(w http.ResponseWriter, lr limits.Request) {
	if !lr.Limited() {
		return
	}
	var buf [160]byte
	hd := w.Header()
	hd[limits.HeaderPolicy] = []string{lr.Policy()}
	hd[limits.HeaderRateLimit] = []string{string(lr.AppendRateLimit(buf[:0]))}
}
