package caddymodule

import (
	"hash/maphash"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// failureLimiter counts failed authentications per client address with a
// token bucket: each address may fail `limit` times, and earns one more try
// every window/limit. An address without tokens is "blocked": its requests
// are answered from the cache of verified keys only, so a valid cached key
// still works from behind a shared address, while guesses cost no store
// lookup.
//
// Checking an address costs one atomic load while no address is blocked.
type failureLimiter struct {
	limit   float64
	perTok  time.Duration // time to earn one token back
	now     func() time.Time
	seed    maphash.Seed
	shards  [64]failureShard
	blocked atomic.Int64 // addresses currently without tokens
	maxAddr int          // per shard
}

type failureShard struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens  float64
	updated time.Time
	blocked bool
}

func newFailureLimiter(limit int, window time.Duration) *failureLimiter {
	l := &failureLimiter{
		limit:   float64(limit),
		perTok:  window / time.Duration(limit),
		now:     time.Now,
		seed:    maphash.MakeSeed(),
		maxAddr: 4096,
	}
	for i := range l.shards {
		l.shards[i].buckets = make(map[string]*bucket)
	}
	return l
}

func (l *failureLimiter) shard(addr string) *failureShard {
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
	addr := clientAddr(r)
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

// evictLocked forgets the buckets that are full again (they hold no state
// worth keeping); if none is, it forgets one at random, never a blocked one
// when it can help it.
func (l *failureLimiter) evictLocked(s *failureShard, now time.Time) {
	for addr, b := range s.buckets {
		l.refill(b, now)
		if b.tokens >= l.limit {
			delete(s.buckets, addr)
		}
	}
	if len(s.buckets) < l.maxAddr {
		return
	}
	for addr, b := range s.buckets {
		if !b.blocked {
			delete(s.buckets, addr)
			return
		}
	}
	for addr := range s.buckets { // every address is blocked: keep the newest
		l.blocked.Add(-1)
		delete(s.buckets, addr)
		return
	}
}
