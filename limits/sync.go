package limits

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// Store is what the limiter keeps in the key store.
type Store = keystore.UsageStore

// syncState is what Sync and Flush keep between calls.
type syncState struct {
	mu sync.Mutex // one Sync or Flush at a time

	// rates: per shared rate counter, the total seen at the last
	// successful sync, what this instance had added by then, and when.
	rates map[string]*rateSeen
	// pending holds usage counts taken from the keys but not yet written.
	pending map[usageKey]*keystore.UsageCount

	preMu   sync.Mutex
	preload map[preKey]int64

	keys  []*keyState
	accts []*account
}

type rateSeen struct {
	total  int64
	synced int64
	at     time.Time
}

type usageKey struct {
	key  string
	hour int64
}

type preKey struct {
	account string
	period  Period
	start   int64
}

func (s *syncState) init() {
	s.rates = make(map[string]*rateSeen)
	s.pending = make(map[usageKey]*keystore.UsageCount)
	s.preload = make(map[preKey]int64)
}

func (s *syncState) preloaded(account string, p Period, start time.Time) int64 {
	s.preMu.Lock()
	defer s.preMu.Unlock()
	k := preKey{account, p, start.UnixNano()}
	n := s.preload[k]
	delete(s.preload, k)
	return n
}

// Preload reads the current day's and month's quota counters of every
// account from the store, so that after a restart a quota goes on from
// the count the store holds without any request waiting for it. Call it
// before serving.
func (l *Limiter) Preload(ctx context.Context, st Store) error {
	now := l.now()
	for _, p := range []Period{Day, Month} {
		start := p.Start(now)
		counts, err := st.QuotaCounts(ctx, string(p), start)
		if err != nil {
			return err
		}
		l.sync.preMu.Lock()
		for acct, n := range counts {
			l.sync.preload[preKey{acct, p, start.UnixNano()}] = n
		}
		l.sync.preMu.Unlock()
	}
	return nil
}

// snapshot collects the live states into reused slices.
func (l *Limiter) snapshot() ([]*keyState, []*account) {
	keys, accts := l.sync.keys[:0], l.sync.accts[:0]
	for i := range l.keyShards {
		sh := &l.keyShards[i]
		sh.mu.RLock()
		for _, k := range sh.m {
			keys = append(keys, k)
		}
		sh.mu.RUnlock()
		ah := &l.acctShards[i]
		ah.mu.RLock()
		for _, a := range ah.m {
			accts = append(accts, a)
		}
		ah.mu.RUnlock()
	}
	l.sync.keys, l.sync.accts = keys, accts
	return keys, accts
}

// Sync shares this instance's rate and quota counts with the other
// instances through the store, off the request path.
//
// Rates: every limited bucket adds what this instance admitted since the
// last sync to its shared counter and reads the total in the same
// statement; the rest of the total's growth is what the other instances
// admitted, and is taken from the local bucket (which may go into debt).
// In the long run the instances together admit the configured rate. Over
// any interval they can admit more only by what each one admitted before
// hearing of the others: with N instances, a bucket of B requests, a rate
// of r per second and a sync interval S (plus the store's round trip),
// at most (N-1)*(B + r*S) above what one instance would admit. A total
// learned after more than staleAfter without a successful sync is taken
// as a new baseline instead, so that an outage does not turn into a debt
// for requests long past.
//
// Quotas: each account's count since the last sync is added to the
// period's counter, which comes back with every instance's additions.
// Between two syncs an instance decides from the last total it read plus
// what it counted itself.
func (l *Limiter) Sync(ctx context.Context, st Store, staleAfter time.Duration) error {
	l.sync.mu.Lock()
	defer l.sync.mu.Unlock()
	keys, accts := l.snapshot()
	return errors.Join(l.syncRates(ctx, st, keys, accts, staleAfter), l.syncQuotas(ctx, st, accts))
}

type rateItem struct {
	b    *bucket
	r    *Rate
	cur  int64
	seen *rateSeen
}

func (l *Limiter) syncRates(ctx context.Context, st Store, keys []*keyState, accts []*account, staleAfter time.Duration) error {
	var items []rateItem
	add := func(b *bucket) {
		r := b.rate.Load()
		if r == nil {
			return
		}
		items = append(items, rateItem{b: b, r: r, cur: b.consumed.Load(), seen: l.sync.rates[b.name]})
	}
	for _, k := range keys {
		add(&k.rate)
	}
	for _, a := range accts {
		add(&a.rate)
	}
	var errs []error
	for len(items) > 0 {
		batch := items[:min(len(items), keystore.MaxUsageBatch)]
		items = items[len(batch):]
		counts := make([]keystore.RateCount, len(batch))
		for i, it := range batch {
			counts[i] = keystore.RateCount{Name: it.b.name, Add: it.cur}
			if it.seen != nil {
				counts[i].Add -= it.seen.synced
			}
		}
		totals, err := st.SyncRates(ctx, counts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		now := l.now()
		for i, it := range batch {
			total := totals[i]
			if s := it.seen; s != nil && now.Sub(s.at) <= staleAfter && total >= s.total {
				if others := total - s.total - counts[i].Add; others > 0 {
					it.b.debit(it.r, others, now.UnixNano())
				}
			}
			l.sync.rates[it.b.name] = &rateSeen{total: total, synced: it.cur, at: now}
		}
	}
	return errors.Join(errs...)
}

type quotaItem struct {
	a       *account
	current bool
	start   int64
	n       int64
}

func (l *Limiter) syncQuotas(ctx context.Context, st Store, accts []*account) error {
	var items []quotaItem
	var counts []keystore.QuotaCount
	for _, a := range accts {
		q := &a.quota
		q.mu.Lock()
		rolled := q.rolled
		q.rolled = nil
		start := q.start.Load()
		var n int64
		c := a.cfg.Load()
		current := start != 0 && c != nil && c.quota != nil
		if current {
			n = q.local.Swap(0)
			q.base.Add(n)
		}
		q.mu.Unlock()
		for _, pc := range rolled {
			items = append(items, quotaItem{a: a, n: pc.n})
			counts = append(counts, keystore.QuotaCount{AccountID: a.id, Period: string(pc.period), Start: pc.start, Add: pc.n})
		}
		if current {
			items = append(items, quotaItem{a: a, current: true, start: start, n: n})
			counts = append(counts, keystore.QuotaCount{AccountID: a.id, Period: string(c.quota.Period), Start: time.Unix(0, start).UTC(), Add: n})
		}
	}
	var errs []error
	for len(items) > 0 {
		m := min(len(items), keystore.MaxUsageBatch)
		batch, cb := items[:m], counts[:m]
		items, counts = items[m:], counts[m:]
		totals, err := st.AddQuota(ctx, cb)
		for i, it := range batch {
			q := &it.a.quota
			q.mu.Lock()
			switch {
			case err != nil && it.current && q.start.Load() == it.start:
				q.base.Add(-it.n)
				q.local.Add(it.n)
			case err != nil:
				q.rolled = append(q.rolled, periodCount{period: Period(cb[i].Period), start: cb[i].Start, n: it.n})
			case it.current && q.start.Load() == it.start:
				q.base.Store(totals[i])
			}
			q.mu.Unlock()
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// maxPending bounds the usage rows kept while the store cannot take them.
const maxPending = 100_000

// ErrUsageDropped is returned by Flush when usage counts had to be dropped
// because the store refused them for too long.
var ErrUsageDropped = errors.New("usage counts dropped: the store has not taken them for too long")

// Flush writes the usage counts gathered since the last Flush to the
// store, hour by hour, and forgets the state of keys and accounts idle for
// longer than idle (their counts written). Counts the store refuses are
// kept for the next Flush, up to maxPending rows.
func (l *Limiter) Flush(ctx context.Context, st Store, idle time.Duration) error {
	l.sync.mu.Lock()
	defer l.sync.mu.Unlock()
	keys, accts := l.snapshot()
	for _, k := range keys {
		for i := range k.usage {
			s := &k.usage[i]
			a, f, lim := s.n[Allowed].Swap(0), s.n[Forbidden].Swap(0), s.n[Limited].Swap(0)
			if a|f|lim == 0 {
				continue
			}
			uk := usageKey{k.id, s.hour.Load()}
			p := l.sync.pending[uk]
			if p == nil {
				p = &keystore.UsageCount{KeyID: k.id, AccountID: k.acct.id, Hour: time.Unix(uk.hour, 0).UTC()}
				l.sync.pending[uk] = p
			}
			p.Allowed += a
			p.Forbidden += f
			p.Limited += lim
		}
	}
	var err error
	if len(l.sync.pending) > 0 {
		rows := make([]keystore.UsageCount, 0, len(l.sync.pending))
		for _, p := range l.sync.pending {
			rows = append(rows, *p)
		}
		for len(rows) > 0 && err == nil {
			batch := rows[:min(len(rows), keystore.MaxUsageBatch)]
			rows = rows[len(batch):]
			if err = st.AddUsage(ctx, batch); err == nil {
				for _, r := range batch {
					delete(l.sync.pending, usageKey{r.KeyID, r.Hour.Unix()})
				}
			}
		}
		if err != nil && len(l.sync.pending) > maxPending {
			clear(l.sync.pending)
			err = errors.Join(err, ErrUsageDropped)
		}
	}
	if idle > 0 {
		l.prune(keys, accts, idle)
	}
	return err
}

// prune forgets keys and accounts idle for longer than idle whose counts
// have been handed on. A request that still holds one as it is forgotten
// counts into the forgotten state: after that long idle, a race this
// unlikely loses at most that request's usage count.
func (l *Limiter) prune(keys []*keyState, accts []*account, idle time.Duration) {
	cutoff := l.now().Add(-idle).Unix()
	for _, k := range keys {
		if k.lastUsed.Load() >= cutoff {
			continue
		}
		sh := &l.keyShards[hashString(l, k.id)]
		sh.mu.Lock()
		delete(sh.m, k.id)
		sh.mu.Unlock()
		delete(l.sync.rates, k.rate.name)
	}
	for _, a := range accts {
		if a.lastUsed.Load() >= cutoff {
			continue
		}
		a.quota.mu.Lock()
		busy := len(a.quota.rolled) > 0 || a.quota.local.Load() != 0
		a.quota.mu.Unlock()
		if busy {
			continue
		}
		sh := &l.acctShards[hashString(l, a.id)]
		sh.mu.Lock()
		delete(sh.m, a.id)
		sh.mu.Unlock()
		delete(l.sync.rates, a.rate.name)
	}
}
