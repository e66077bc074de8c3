package caddymodule

import (
	"hash/maphash"
	"math"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// failureLimiter counts failed authentications per client address with a
// token bucket: each address may fail `limit` times, and earns one more try
// every window/limit. An address without tokens is "blocked": its requests
// are answered from the cache of verified keys only, so a valid cached key
// still works from behind a shared address, while guesses cost no store
// lookup.
//
// The buckets live in a failureState that outlives the limiter: every
// spk_auth handler on the same key store shares one, across config
// reloads (see failureStates), while limit and window are the handler's
// own, so a reload keeps each address's budget and applies a changed
// failure_limit to it.
//
// Checking an address costs one atomic load while no address is blocked.
type failureLimiter struct {
	limit  float64
	perTok time.Duration // time to earn one token back
	now    func() time.Time
	*failureState
}

// failureState is the per-address state of the failure limit.
type failureState struct {
	seed    maphash.Seed
	shards  [64]failureShard
	blocked atomic.Int64 // addresses currently without tokens
	maxAddr int          // per shard
}

// failureStates holds a failureState per key store (the spk app's pool
// key) across config reloads, as caddy-ratelimit keeps its zones: a client
// that was guessing keys does not get a fresh allowance with every deploy.
var failureStates = caddy.NewUsagePool()

type failureShard struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens  float64
	updated time.Time
	blocked bool
}

func newFailureState() *failureState {
	st := &failureState{seed: maphash.MakeSeed(), maxAddr: 4096}
	for i := range st.shards {
		st.shards[i].buckets = make(map[string]*bucket)
	}
	return st
}

// Destruct implements caddy.Destructor; the state holds only memory.
func (*failureState) Destruct() error { return nil }

// failureClock is the clock of the limiters made from now on; tests
// through a real Caddy set it (export_test.go) so that they need not sleep
// until a try is earned back.
var failureClock = time.Now

// newFailureLimiter returns a limiter of limit failures per window on st,
// or on a state of its own if st is nil.
func newFailureLimiter(limit int, window time.Duration, st *failureState) *failureLimiter {
	if st == nil {
		st = newFailureState()
	}
	return &failureLimiter{
		limit:        float64(limit),
		perTok:       window / time.Duration(limit),
		now:          failureClock,
		failureState: st,
	}
}

func (l *failureState) shard(addr string) *failureShard {
	return &l.shards[maphash.String(l.seed, addr)%uint64(len(l.shards))]
}

// refill brings b up to date at now and reports whether it is still empty.
func (l *failureLimiter) refill(b *bucket, now time.Time) {
	earned := float64(now.Sub(b.updated)) / float64(l.perTok)
	b.tokens = math.Min(l.limit, b.tokens+earned)
	b.updated = now
	if b.blocked && b.tokens >= 1 {
		b.blocked = false
		l.blocked.Add(-1)
	}
}

// retryAfter reports whether the request's client address is blocked and,
// if so, how long until it may try again.
func (l *failureLimiter) retryAfter(r *http.Request) (time.Duration, bool) {
	if l == nil || l.blocked.Load() == 0 {
		return 0, false
	}
	addr := limitKey(clientAddr(r))
	s := l.shard(addr)
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.buckets[addr]
	if !ok || !b.blocked {
		return 0, false
	}
	l.refill(b, l.now())
	if !b.blocked {
		return 0, false
	}
	return time.Duration((1 - b.tokens) * float64(l.perTok)), true
}

// fail records a failed authentication from addr.
func (l *failureLimiter) fail(addr string) {
	if l == nil {
		return
	}
	now := l.now()
	addr = limitKey(addr)
	s := l.shard(addr)
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.buckets[addr]
	if !ok {
		if len(s.buckets) >= l.maxAddr {
			l.evictLocked(s, now)
		}
		b = &bucket{tokens: l.limit, updated: now}
		s.buckets[addr] = b
	}
	l.refill(b, now)
	b.tokens--
	if b.tokens < 1 && !b.blocked {
		b.blocked = true
		l.blocked.Add(1)
	}
}

// evictScan bounds the work of one eviction: a full shard is not scanned
// whole for every new address, which would let a flood of new addresses
// buy a 4096-entry scan per request.
const evictScan = 32

// evictLocked makes room in a full shard. It looks at up to evictScan
// buckets (map order is random), forgets those that are full again (they
// hold no state worth keeping) and, if none was, the least recently updated
// of those it saw, preferring one that is not blocked.
func (l *failureLimiter) evictLocked(s *failureShard, now time.Time) {
	var oldest, oldestBlocked string
	var oldestAt, oldestBlockedAt time.Time
	freed, seen := false, 0
	for addr, b := range s.buckets {
		if seen++; seen > evictScan {
			break
		}
		l.refill(b, now)
		switch {
		case b.tokens >= l.limit:
			delete(s.buckets, addr)
			freed = true
		case b.blocked && (oldestBlocked == "" || b.updated.Before(oldestBlockedAt)):
			oldestBlocked, oldestBlockedAt = addr, b.updated
		case !b.blocked && (oldest == "" || b.updated.Before(oldestAt)):
			oldest, oldestAt = addr, b.updated
		}
	}
	switch {
	case freed:
	case oldest != "":
		delete(s.buckets, oldest)
	case oldestBlocked != "":
		l.blocked.Add(-1)
		delete(s.buckets, oldestBlocked)
	}
}

// limitKey is the address a budget belongs to: an IPv4 address, or the /64
// of an IPv6 address (one subscriber usually holds a whole /64 and could
// otherwise rotate through it).
func limitKey(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil || !ip.Is6() || ip.Is4In6() {
		return addr
	}
	p, err := ip.Prefix(64)
	if err != nil {
		return addr
	}
	return p.String()
}
