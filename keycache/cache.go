// Package keycache verifies API keys against a store through an in-memory
// cache, and keeps that cache honest when keys are revoked, plans change or
// keys are created — on this instance or on another one sharing the store.
//
// Verified keys (and, for a shorter time, unknown ones) are held in a
// ristretto cache. Misses for the same key share one store query
// (singleflight). Every entry records the cache epoch at which its store
// query started; an invalidation takes a new epoch and marks the account
// (or, for creations, every negative entry) as invalid before it, so a
// lookup that was already in flight when a key was revoked can never put the
// old answer back: its entry is older than the revocation and is refused.
package keycache

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"golang.org/x/sync/singleflight"

	"github.com/spkgate/spkgate/keystore"
)

// Limits and defaults of the cache lifetimes. A verified key's entry lives
// until a change to its key or account invalidates it, it is evicted, or
// its TTL ends: the TTL is a safety net (an instance that can prove it has
// heard every change has no reason to reload; see Follow and trusted).
const (
	DefaultTTL         = 10 * time.Minute
	MaxTTL             = time.Hour
	DefaultNegativeTTL = 5 * time.Second
	MaxNegativeTTL     = 10 * time.Second
)

// Status is the outcome of a verification.
type Status uint8

const (
	// Valid: the key exists, is not revoked and has not expired.
	Valid Status = iota
	// Invalid: malformed, unknown, revoked or expired — one answer for all.
	Invalid
	// Unavailable: the store could not answer and the key is not cached.
	Unavailable
)

// Config tunes a Cache.
type Config struct {
	// TTL is how long a verified key is cached at most, however current
	// the cache is: the safety net behind change-driven invalidation.
	TTL time.Duration
	// NegativeTTL is how long an unknown, revoked or expired key is
	// remembered as such.
	NegativeTTL time.Duration
	// MaxEntries bounds the number of cached keys (positive and negative).
	MaxEntries int64
	// QueryTimeout bounds one store query made for a miss.
	QueryTimeout time.Duration
	// MaxConcurrentLookups bounds the store queries in flight for misses,
	// so that a flood of well-formed unknown keys cannot take every
	// connection of the store's pool. Default: 16.
	MaxConcurrentLookups int
	// Now is the clock that decides expiry, entry lifetimes and the trust
	// bound; nil means time.Now. Tests set it to step over a key's expiry
	// instead of waiting for it.
	Now func() time.Time
}

func (c *Config) setDefaults() error {
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = DefaultNegativeTTL
	}
	if c.MaxEntries == 0 {
		c.MaxEntries = 200_000
	}
	if c.QueryTimeout == 0 {
		c.QueryTimeout = 3 * time.Second
	}
	if c.MaxConcurrentLookups <= 0 {
		c.MaxConcurrentLookups = 16
	}
	switch {
	case c.TTL < 0 || c.TTL > MaxTTL:
		return fmt.Errorf("cache ttl %s out of range: it must be positive and at most %s", c.TTL, MaxTTL)
	case c.NegativeTTL < 0 || c.NegativeTTL > MaxNegativeTTL:
		return fmt.Errorf("negative cache ttl %s out of range: it must be positive and at most %s", c.NegativeTTL, MaxNegativeTTL)
	case c.MaxEntries < 100:
		return fmt.Errorf("cache size %d too small", c.MaxEntries)
	}
	return nil
}

// Cache verifies keys through the store with caching. It is safe for
// concurrent use. Create it with New and stop it with Close.
type Cache struct {
	store keystore.Store
	cfg   Config
	// entries holds the cached keys, positive and negative, by slot.
	entries *ristretto.Cache[uint64, *Entry]
	// recent remembers, longer than entries, the keys that were valid (see
	// VerifyKnown).
	recent *recentSet
	group  singleflight.Group
	now    func() time.Time

	// ttl and negTTL are the current lifetimes (they change on reload).
	ttl, negTTL atomic.Int64

	// epoch increases with every invalidation.
	epoch atomic.Uint64
	// lastInval is the epoch of the newest account invalidation: an entry
	// at or after it needs no look at accountInval.
	lastInval atomic.Uint64
	// dropBefore invalidates every entry older than it (whole-cache drop).
	dropBefore atomic.Uint64
	// negBefore invalidates every negative entry older than it (creations).
	negBefore atomic.Uint64
	// accountInval maps account id to the epoch of its last invalidation.
	accountInval sync.Map // string -> invalidation

	// syncedAt (unix nanoseconds) is the newest moment as of which every
	// change committed to the store has been applied (see Follow). It
	// only moves forward.
	syncedAt atomic.Int64
	// maxStale (nanoseconds) is how long after the last moment it was
	// known to be current an entry is trusted (FollowConfig.MaxStale); 0
	// while nothing follows the change log (see trusted).
	maxStale atomic.Int64

	touchMu sync.Mutex
	touched []*Entry
	// cooling holds the keys written since coolingSince: their uses are
	// not recorded again until TouchPrecision has passed.
	cooling      []*Entry
	coolingSince time.Time

	// refreshQ holds entries due for a reload (see hit and reloader).
	refreshQ chan *Entry
	// reloadSlotWait is defaultReloadSlotWait (tests shorten it).
	reloadSlotWait time.Duration
	stop           chan struct{}
	stopQueries    context.CancelFunc // cancels reloadCtx on Close
	reloadCtx      context.Context
	reloaderDone   chan struct{}
	closeOnce      sync.Once

	// lookupSlots bounds concurrent store lookups.
	lookupSlots chan struct{}
	stats       counters
}

// counters are kept off the hit path: only misses and refusals count.
type counters struct {
	malformed, lookups, found, notFound, failed atomic.Uint64
	reloads, reloaded                           atomic.Uint64
}

// Stats are the cache's counters since it was created.
type Stats struct {
	// Malformed counts keys refused by their format, without a lookup.
	Malformed uint64
	// Lookups counts store queries made for cache misses.
	Lookups uint64
	// Found and NotFound count lookups by outcome (a revoked key counts as
	// found); Failed counts lookups that failed and misses that found no
	// free lookup slot in time (or a reload query that failed).
	Found, NotFound, Failed uint64
	// Reloads counts the store queries that reloaded cached keys before
	// they expired, and Reloaded the keys they reloaded (see Verify).
	Reloads, Reloaded uint64
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	return Stats{
		Malformed: c.stats.malformed.Load(),
		Lookups:   c.stats.lookups.Load(),
		Found:     c.stats.found.Load(),
		NotFound:  c.stats.notFound.Load(),
		Failed:    c.stats.failed.Load(),
		Reloads:   c.stats.reloads.Load(),
		Reloaded:  c.stats.reloaded.Load(),
	}
}

// New returns a cache in front of store.
func New(store keystore.Store, cfg Config) (*Cache, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	entries, err := ristretto.NewCache(&ristretto.Config[uint64, *Entry]{
		NumCounters: cfg.MaxEntries * 10,
		MaxCost:     cfg.MaxEntries,
		BufferItems: 64,
		// Every entry costs 1, so MaxCost counts entries. Without this,
		// ristretto adds its own bookkeeping (about 56 bytes) to each
		// entry's cost and 200,000 "entries" hold about 3,500 keys.
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("creating cache: %v", err)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	c := &Cache{store: store, cfg: cfg, entries: entries, recent: newRecentSet(cfg.MaxEntries, now().UnixNano()), now: now, lookupSlots: make(chan struct{}, cfg.MaxConcurrentLookups), reloadSlotWait: defaultReloadSlotWait,
		refreshQ: make(chan *Entry, 16*keystore.MaxLookupBatch), stop: make(chan struct{}), reloaderDone: make(chan struct{})}
	c.reloadCtx, c.stopQueries = context.WithCancel(context.Background())
	go c.reloader()
	c.ttl.Store(int64(cfg.TTL))
	c.negTTL.Store(int64(cfg.NegativeTTL))
	c.epoch.Store(1)
	return c, nil
}

// Store returns the store behind the cache.
func (c *Cache) Store() keystore.Store { return c.store }

// SetTTLs changes the lifetimes of entries filled from now on (a config
// reload). Entries already cached keep their lifetime, at most MaxTTL.
func (c *Cache) SetTTLs(ttl, negative time.Duration) error {
	cfg := c.cfg
	cfg.TTL, cfg.NegativeTTL = ttl, negative
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	c.ttl.Store(int64(cfg.TTL))
	c.negTTL.Store(int64(cfg.NegativeTTL))
	return nil
}

func slot(h *keystore.Hash) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

// Close stops the cache. It does not close the store.
func (c *Cache) Close() {
	c.closeOnce.Do(func() {
		close(c.stop)
		c.stopQueries() // a reload in flight must not hold Close up
		<-c.reloaderDone
		c.entries.Close()
	})
}

// Wait blocks until every entry set so far is visible to Verify (the
// underlying cache admits entries asynchronously). For tests and benchmarks.
func (c *Cache) Wait() { c.entries.Wait() }
