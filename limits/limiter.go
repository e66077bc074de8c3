package limits

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// Outcome is what became of a request, for the usage counts.
type Outcome uint8

// The outcomes counted per key per hour.
const (
	// Allowed: forwarded.
	Allowed Outcome = iota
	// Forbidden: refused because the key's scopes do not cover it (403).
	Forbidden
	// Limited: refused for a rate limit or a quota (429).
	Limited
)

// Limiter holds the limit state and usage counts of every account and key
// it has seen. It is safe for concurrent use; one Limiter serves every
// configuration that shares a store, so its state outlives config reloads.
type Limiter struct {
	now   func() time.Time
	plans atomic.Pointer[planSet]
	seed  maphash.Seed

	keyShards  [shards]keyShard
	acctShards [shards]acctShard

	// sync holds what only the goroutine that calls Sync and Flush
	// touches (see sync.go).
	sync syncState
}

const shards = 64

type keyShard struct {
	mu sync.RWMutex
	m  map[string]*keyState
}

type acctShard struct {
	mu sync.RWMutex
	m  map[string]*account
}

type planSet struct {
	plans Plans
	gen   uint64
}

// Options configure a Limiter.
type Options struct {
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

// New returns a Limiter that enforces plans.
func New(plans Plans, opts Options) *Limiter {
	l := &Limiter{now: opts.Now, seed: maphash.MakeSeed()}
	if l.now == nil {
		l.now = time.Now
	}
	for i := range l.keyShards {
		l.keyShards[i].m = make(map[string]*keyState)
		l.acctShards[i].m = make(map[string]*account)
	}
	l.sync.init()
	l.SetPlans(plans)
	return l
}

// SetPlans replaces the plans' limits (a config reload). Accounts take
// the new limits at their next request; a bucket keeps its level.
func (l *Limiter) SetPlans(plans Plans) {
	old := l.plans.Load()
	gen := uint64(1)
	if old != nil {
		gen = old.gen + 1
	}
	cp := make(Plans, len(plans))
	for k, v := range plans {
		cp[k] = v
	}
	l.plans.Store(&planSet{plans: cp, gen: gen})
}

// SetClock replaces the clock (tests).
func (l *Limiter) SetClock(now func() time.Time) { l.now = now }

// Now is the limiter's clock.
func (l *Limiter) Now() time.Time { return l.now() }

// Plan returns the limits of plan and whether it has any.
func (l *Limiter) Plan(plan string) (Plan, bool) {
	p, ok := l.plans.Load().plans[plan]
	return p, ok
}

// bucket is a token bucket as GCRA: tat is the time at which the bucket
// would be full again, and a request fits while tat, after adding one
// token's interval, is at most one window ahead of now. tat may run
// further ahead (a debt) when other instances' admissions are taken from
// it.
type bucket struct {
	tat  atomic.Int64
	rate atomic.Pointer[Rate]
	// consumed counts the tokens this instance took, for Sync.
	consumed atomic.Int64
	// name identifies the bucket's shared counter ("a:<account>" or
	// "k:<key>").
	name string
}

// take takes one token at now, or says how long until one is free.
func (b *bucket) take(r *Rate, now int64) (bool, int64) {
	iv, win := r.interval(), int64(r.Window)
	for {
		tat := b.tat.Load()
		t := max(tat, now) + iv
		if t-now > win {
			return false, t - now - win
		}
		if b.tat.CompareAndSwap(tat, t) {
			b.consumed.Add(1)
			return true, 0
		}
	}
}

// setRate changes the bucket's rate, keeping how many tokens are used.
func (b *bucket) setRate(r *Rate, now int64) {
	old := b.rate.Swap(r)
	if old == nil || r == nil || *old == *r {
		return
	}
	for {
		tat := b.tat.Load()
		used := max(tat-now, 0) / old.interval()
		if b.tat.CompareAndSwap(tat, now+used*r.interval()) {
			return
		}
	}
}

// refund gives back a token taken by take.
func (b *bucket) refund(r *Rate) {
	b.tat.Add(-r.interval())
	b.consumed.Add(-1)
}

// debit takes n tokens that another instance admitted.
func (b *bucket) debit(r *Rate, n int64, now int64) {
	d := n * r.interval()
	for {
		tat := b.tat.Load()
		if b.tat.CompareAndSwap(tat, max(tat, now)+d) {
			return
		}
	}
}

// state returns the tokens left and the nanoseconds until the bucket is
// full again.
func (b *bucket) state(r *Rate, now int64) (remaining, full int64) {
	ahead := max(b.tat.Load()-now, 0)
	left := int64(r.Window) - ahead
	if left <= 0 {
		return 0, ahead
	}
	return left / r.interval(), ahead
}

// quotaState counts an account's forwarded requests in the current period.
type quotaState struct {
	mu    sync.Mutex // held to roll over to a new period
	start atomic.Int64
	end   atomic.Int64 // unix nanoseconds
	// base is the period's count as the store last reported it, plus what
	// this instance has handed to Sync since; local is what it counted
	// since then.
	base  atomic.Int64
	local atomic.Int64
	// rolled holds counts of ended periods not yet handed to the store.
	rolled []periodCount
}

type periodCount struct {
	period Period
	start  time.Time
	n      int64
}

type acctConfig struct {
	plan   string
	gen    uint64
	rate   *Rate
	quota  *Quota
	policy string // the account's part of RateLimit-Policy
}

type account struct {
	id       string
	cfg      atomic.Pointer[acctConfig]
	mu       sync.Mutex // held to change cfg
	rate     bucket
	quota    quotaState
	lastUsed atomic.Int64 // unix seconds
}

type keyConfig struct {
	rate   *Rate
	acct   *acctConfig
	policy string // the whole RateLimit-Policy value
}

type keyState struct {
	id       string
	acct     *account
	cfg      atomic.Pointer[keyConfig]
	mu       sync.Mutex // held to change cfg
	rate     bucket
	usage    [2]usageSlot
	lastUsed atomic.Int64 // unix seconds
}

// usageSlot counts one hour's outcomes; a key has two, for odd and even
// hours, so the hour that just ended can be flushed while the next one
// counts.
type usageSlot struct {
	hour atomic.Int64 // unix seconds of the hour's start
	n    [3]atomic.Int64
}

func hashString(l *Limiter, s string) uint64 { return maphash.String(l.seed, s) % shards }

func (l *Limiter) keyState(keyID, accountID string) *keyState {
	sh := &l.keyShards[hashString(l, keyID)]
	sh.mu.RLock()
	k := sh.m[keyID]
	sh.mu.RUnlock()
	if k != nil {
		return k
	}
	a := l.account(accountID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if k = sh.m[keyID]; k == nil {
		k = &keyState{id: keyID, acct: a}
		k.rate.name = "k:" + keyID
		sh.m[keyID] = k
	}
	return k
}

func (l *Limiter) account(accountID string) *account {
	sh := &l.acctShards[hashString(l, accountID)]
	sh.mu.RLock()
	a := sh.m[accountID]
	sh.mu.RUnlock()
	if a != nil {
		return a
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if a = sh.m[accountID]; a == nil {
		a = &account{id: accountID}
		a.rate.name = "a:" + accountID
		sh.m[accountID] = a
	}
	return a
}

// Request is one authenticated request's passage through the limits. It
// is a value: Begin allocates nothing once the key has been seen.
type Request struct {
	l   *Limiter
	k   *keyState
	kc  *keyConfig
	now int64
}

// Begin looks up the state of the key and its account and brings their
// limits up to date with the plan and the key's own rate (zero: none). At
// is the request's time: the caller passes the time it already has (Caddy
// takes one when a request starts), because reading the clock can cost
// more than all the rest of the limiter's work; Now gives the limiter's
// own clock.
func (l *Limiter) Begin(at time.Time, keyID, accountID, plan string, keyRate Rate) Request {
	now := at.UnixNano()
	k := l.keyState(keyID, accountID)
	a := k.acct
	ps := l.plans.Load()
	ac := a.cfg.Load()
	if ac == nil || ac.gen != ps.gen || ac.plan != plan {
		ac = a.configure(ps, plan, now)
	}
	kc := k.cfg.Load()
	if kc == nil || kc.acct != ac || !sameRate(kc.rate, keyRate) {
		kc = k.configure(ac, keyRate, now)
	}
	sec := now / int64(time.Second)
	if k.lastUsed.Load() != sec {
		k.lastUsed.Store(sec)
		a.lastUsed.Store(sec)
	}
	return Request{l: l, k: k, kc: kc, now: now}
}

// sameRate compares a key's configured rate with a rate given to Begin.
func sameRate(a *Rate, b Rate) bool {
	if a == nil {
		return b == Rate{}
	}
	return *a == b
}

func (a *account) configure(ps *planSet, plan string, now int64) *acctConfig {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c := a.cfg.Load(); c != nil && c.gen == ps.gen && c.plan == plan {
		return c
	}
	p := ps.plans[plan]
	c := &acctConfig{plan: plan, gen: ps.gen, rate: p.Rate, quota: p.Quota}
	c.policy = accountPolicy(c)
	a.rate.setRate(c.rate, now)
	a.cfg.Store(c)
	return c
}

func (k *keyState) configure(ac *acctConfig, kr Rate, now int64) *keyConfig {
	k.mu.Lock()
	defer k.mu.Unlock()
	if c := k.cfg.Load(); c != nil && c.acct == ac && sameRate(c.rate, kr) {
		return c
	}
	var r *Rate
	if kr != (Rate{}) {
		r = &kr
	}
	c := &keyConfig{rate: r, acct: ac}
	c.policy = keyPolicy(c)
	k.rate.setRate(r, now)
	k.cfg.Store(c)
	return c
}

// Time is the request's time as given to Begin.
func (r Request) Time() time.Time { return time.Unix(0, r.now) }

// Limited reports whether any limit applies to the request (and so
// whether it gets RateLimit headers).
func (r Request) Limited() bool {
	return r.kc.policy != ""
}

// Denial says which limit refused a request.
type Denial uint8

// The limits that can refuse a request.
const (
	// NotDenied: the request passed.
	NotDenied Denial = iota
	// KeyRate: the key's own rate.
	KeyRate
	// AccountRate: the account's rate (all its keys together).
	AccountRate
)

// TakeRate takes a token from the key's bucket and one from its
// account's. If either is empty it takes none and returns how long until
// both could give one.
func (r Request) TakeRate() (Denial, time.Duration) {
	kr, ar := r.kc.rate, r.kc.acct.rate
	k, a := r.k, r.k.acct
	if kr != nil {
		if ok, wait := k.rate.take(kr, r.now); !ok {
			return KeyRate, time.Duration(wait)
		}
	}
	if ar != nil {
		if ok, wait := a.rate.take(ar, r.now); !ok {
			if kr != nil {
				k.rate.refund(kr)
			}
			return AccountRate, time.Duration(wait)
		}
	}
	return NotDenied, 0
}

// TakeQuota counts the request against its account's quota, or, if the
// quota is used up, reports false and when the period ends.
func (r Request) TakeQuota() (bool, time.Time) {
	q := r.kc.acct.quota
	if q == nil {
		return true, time.Time{}
	}
	qs := &r.k.acct.quota
	end := qs.end.Load()
	if r.now >= end {
		end = r.k.acct.roll(r.l, q.Period, r.now)
	}
	n := qs.local.Add(1)
	if qs.base.Load()+n > q.Requests {
		qs.local.Add(-1)
		return false, time.Unix(0, end).UTC()
	}
	return true, time.Time{}
}

// roll starts the period holding now, keeping the ended period's local
// count for the store, and returns the new period's end. The new period
// starts from what the store held for it when the limiter started, if
// anything (a restart), and learns the rest at the next Sync.
func (a *account) roll(l *Limiter, p Period, now int64) int64 {
	q := &a.quota
	q.mu.Lock()
	defer q.mu.Unlock()
	if end := q.end.Load(); now < end {
		return end
	}
	if n := q.local.Swap(0); n != 0 && q.start.Load() != 0 {
		q.rolled = append(q.rolled, periodCount{period: p, start: time.Unix(0, q.start.Load()).UTC(), n: n})
	}
	start := p.Start(time.Unix(0, now))
	end := p.Next(start).UnixNano()
	q.base.Store(l.sync.preloaded(a.id, p, start))
	q.start.Store(start.UnixNano())
	q.end.Store(end)
	return end
}

// Record counts the request's outcome in its key's usage for this hour.
func (r Request) Record(o Outcome) {
	hour := r.now / int64(time.Second) / 3600 * 3600
	s := &r.k.usage[(hour/3600)&1]
	if s.hour.Load() != hour {
		s.hour.Store(hour)
	}
	s.n[o].Add(1)
}

// secondsUp rounds nanoseconds up to whole seconds.
func secondsUp(ns int64) int64 {
	if ns <= 0 {
		return 0
	}
	return (ns + int64(time.Second) - 1) / int64(time.Second)
}

// RetryAfterSeconds is d rounded up to whole seconds, at least 1, as
// Retry-After wants it.
func RetryAfterSeconds(d time.Duration) int64 {
	return max(secondsUp(int64(d)), 1)
}

// QuotaUsed returns the account's quota, what the limiter knows of its use
// in the current period, and when the period ends; ok is false when the
// account's plan (as last seen) has no quota or the account was not seen.
func (l *Limiter) QuotaUsed(accountID string) (q Quota, used int64, resetsAt time.Time, ok bool) {
	sh := &l.acctShards[hashString(l, accountID)]
	sh.mu.RLock()
	a := sh.m[accountID]
	sh.mu.RUnlock()
	if a == nil {
		return Quota{}, 0, time.Time{}, false
	}
	c := a.cfg.Load()
	if c == nil || c.quota == nil {
		return Quota{}, 0, time.Time{}, false
	}
	now := l.now().UnixNano()
	end := a.quota.end.Load()
	if now >= end {
		end = a.roll(l, c.quota.Period, now)
	}
	return *c.quota, a.quota.base.Load() + a.quota.local.Load(), time.Unix(0, end).UTC(), true
}
