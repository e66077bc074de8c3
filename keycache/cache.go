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
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"golang.org/x/sync/singleflight"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/scope"
)

// Limits and defaults of the cache lifetimes.
const (
	DefaultTTL         = 30 * time.Second
	MaxTTL             = 60 * time.Second
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

// Entry is a verified key as the request path needs it. Its header values
// and placeholder provider are built once when the entry is filled, so a
// request served from the cache allocates nothing for them.
type Entry struct {
	hash      keystore.Hash
	epoch     uint64
	loadedAt  int64 // unix nanoseconds when its store query started
	known     bool
	expiresAt int64 // unix nanoseconds; 0 = never
	touched   atomic.Bool
	// refreshAt (unix nanoseconds) is when a hit starts reloading the
	// entry in the background, before it expires; 0 = never. staleAt is
	// when the entry's cache lifetime ends, and lastHit when it was last
	// used (or loaded), to a second: a hit that, at the key's pace, would
	// not come again before staleAt reloads it too.
	refreshAt  int64
	staleAt    int64
	lastHit    atomic.Int64
	refreshing atomic.Bool

	// KeyID is the key's public id.
	KeyID string
	// AccountID is the owning account.
	AccountID string
	// Plan is the account's plan when the entry was filled.
	Plan string
	// Scopes is the key's scope set.
	Scopes scope.Set
	// ScopesHeader is the X-Spk-Scopes value ("*" for full access).
	ScopesHeader string

	// Placeholders answers the identity placeholders of the key
	// (PlaceholderAccount and the three others) and nothing else, in the
	// shape of caddy.ReplacerFunc. It is built once per entry, so a
	// handler can add it to a request's replacer without allocating.
	Placeholders func(name string) (value any, ok bool)
}

// The placeholders an Entry answers.
const (
	PlaceholderAccount = "http.auth.user.id"
	PlaceholderKeyID   = "http.auth.user.key_id"
	PlaceholderScopes  = "http.auth.user.scopes"
	PlaceholderPlan    = "http.auth.user.plan"
)

func (e *Entry) placeholder(name string) (any, bool) {
	switch name {
	case PlaceholderAccount:
		return e.AccountID, true
	case PlaceholderKeyID:
		return e.KeyID, true
	case PlaceholderScopes:
		return e.ScopesHeader, true
	case PlaceholderPlan:
		return e.Plan, true
	}
	return nil, false
}

// Config tunes a Cache.
type Config struct {
	// TTL is how long a verified key is trusted without asking the store.
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
	lru   *ristretto.Cache[uint64, *Entry]
	// recent remembers, longer than lru, the keys that were valid (see
	// VerifyKnown).
	recent *ristretto.Cache[uint64, keystore.Hash]
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
	// change committed to the store has been applied (see Follow).
	syncedAt atomic.Int64
	// trustFrom (unix nanoseconds) refuses every entry loaded before it:
	// 0 while the cache is in sync with the store, now-MaxStale while it
	// is not (see Follow).
	trustFrom atomic.Int64

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

type invalidation struct {
	epoch uint64
	at    time.Time
}

// New returns a cache in front of store.
func New(store keystore.Store, cfg Config) (*Cache, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	lru, err := ristretto.NewCache(&ristretto.Config[uint64, *Entry]{
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
	recent, err := ristretto.NewCache(&ristretto.Config[uint64, keystore.Hash]{
		NumCounters:        cfg.MaxEntries * 10,
		MaxCost:            cfg.MaxEntries,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		lru.Close()
		return nil, fmt.Errorf("creating cache: %v", err)
	}
	c := &Cache{store: store, cfg: cfg, lru: lru, recent: recent, now: time.Now, lookupSlots: make(chan struct{}, cfg.MaxConcurrentLookups), reloadSlotWait: defaultReloadSlotWait,
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

// Verify checks key and returns its entry when it is Valid. A malformed key
// is Invalid without any cache or store lookup. Verify does not allocate
// when the key is cached; a cached key near the end of its entry's life
// (or used too seldom to be seen again before then) is reloaded in the
// background, batched with others (Stats.Reloads).
func (c *Cache) Verify(ctx context.Context, key string) (*Entry, Status) {
	if apikey.Check(key) != nil {
		c.stats.malformed.Add(1)
		return nil, Invalid
	}
	h := apikey.Hash(key)
	if e, ok := c.lru.Get(slot(&h)); ok && e.hash == h && c.fresh(e) {
		return c.hit(e)
	}
	return c.miss(ctx, h)
}

// hit answers from a cached entry and, when the entry is near the end of
// its lifetime or the key's next use at its pace would come after that
// end, queues it for the reloader, which reloads due entries together in
// the background: a key in use is reloaded before it expires instead of
// costing one of its requests a store lookup, and keys first cached
// together (at start, or after the whole cache was dropped) cost a few
// batched queries instead of a burst of lookups.
func (c *Cache) hit(e *Entry) (*Entry, Status) {
	now := c.now().UnixNano()
	if !e.usable(now) {
		return nil, Invalid
	}
	if e.refreshAt != 0 && !e.refreshing.Load() {
		last := e.lastHit.Load()
		// Due from RefreshAhead of its lifetime on, or when the key's
		// next use, as far apart as its last two, would find the entry
		// gone. The second rule matters for keys used less often than a
		// quarter of a lifetime (every ~8-30 s at the default TTL), which
		// would otherwise miss that last quarter and cost one of their
		// requests a lookup every lifetime; a key used about once a
		// lifetime is reloaded at each use, in the background.
		due := now >= e.refreshAt || now+(now-last) >= e.staleAt
		if now-last >= int64(time.Second) {
			// At most one write a second: a busy key's entry is read by
			// every core.
			e.lastHit.Store(now)
		}
		// A full queue is checked first, so that while the reloader is
		// behind, hits on due entries only read.
		if due && len(c.refreshQ) < cap(c.refreshQ) && e.refreshing.CompareAndSwap(false, true) {
			select {
			case c.refreshQ <- e:
			default: // filled up meanwhile: a later hit tries again
				e.refreshing.Store(false)
			}
		}
	}
	return e, Valid
}

// refreshWait is how long the reloader gathers entries due for a reload
// before it asks the store for them in one query. An entry is due with,
// in general, a quarter of its lifetime (seconds) left, so the wait costs
// nothing; one first used again just before its end may expire first and
// cost that use a lookup, as it would have without reloads.
const refreshWait = 100 * time.Millisecond

// reloader reloads the entries that hits found near their end, up to
// keystore.MaxLookupBatch per store query, until Close. One query per
// batch instead of one per key: with thousands of keys in use, reloads
// were most of what a key cost the gateway beyond its first use.
func (c *Cache) reloader() {
	defer close(c.reloaderDone)
	batch := make([]*Entry, 0, keystore.MaxLookupBatch)
	timer := time.NewTimer(refreshWait)
	timer.Stop()
	for {
		select {
		case <-c.stop:
			return
		case e := <-c.refreshQ:
			batch = append(batch[:0], e)
		}
		timer.Reset(refreshWait)
	gather:
		for len(batch) < cap(batch) {
			select {
			case e := <-c.refreshQ:
				batch = append(batch, e)
			case <-timer.C:
				break gather
			case <-c.stop:
				return
			}
		}
		timer.Stop()
		if !c.reload(batch) {
			// The store failed: its entries may be queued again by the
			// next hits, so pause rather than retry every refreshWait.
			select {
			case <-c.stop:
				return
			case <-time.After(reloadFailurePause):
			}
		}
	}
}

// reloadFailurePause is how long the reloader pauses after a reload query
// failed.
const reloadFailurePause = time.Second

// defaultReloadSlotWait bounds how long a batch of reloads waits for a
// lookup slot while misses hold them all. Its entries generally have
// seconds of life left; giving up at once had turned a burst of misses (a
// cold start with many keys) into expired entries and more misses.
const defaultReloadSlotWait = time.Second

// reload queries the store once for the entries of batch and replaces
// them. It waits up to reloadSlotWait for a lookup slot, in turn with the
// misses waiting (one slot at most, so misses keep the others); if none
// frees up, its entries are left to a later hit to queue again. It
// reports false when the store query failed.
func (c *Cache) reload(batch []*Entry) bool {
	wait := time.NewTimer(c.reloadSlotWait)
	select {
	case c.lookupSlots <- struct{}{}:
		wait.Stop()
		defer func() { <-c.lookupSlots }()
	case <-wait.C:
		unmark(batch)
		return true
	case <-c.stop:
		wait.Stop()
		return true
	}
	hashes := make([]keystore.Hash, len(batch))
	for i, e := range batch {
		hashes[i] = e.hash
	}
	ctx, cancel := context.WithTimeout(c.reloadCtx, c.cfg.QueryTimeout)
	defer cancel()
	// Before the query, as in load: an invalidation after this moment
	// makes what the query read stale (install refuses it).
	epoch := c.epoch.Load()
	loadedAt := c.now().UnixNano()
	found, err := c.store.LookupKeys(ctx, hashes)
	c.stats.reloads.Add(1)
	if err != nil {
		c.stats.failed.Add(1)
		unmark(batch)
		return false
	}
	for _, old := range batch {
		cred, ok := found[old.hash]
		var lerr error
		if !ok {
			lerr = keystore.ErrNotFound
		}
		e, err := c.install(old.hash, epoch, loadedAt, cred, lerr)
		if err != nil {
			// Invalidated meanwhile: the next hit on the old entry, if
			// it is still fresh, may queue it again.
			old.refreshing.Store(false)
			continue
		}
		if e.known {
			// A use already recorded (or about to be) carries over: the
			// new entry joins the current cooling period instead of
			// writing last_used_at again. Under touchMu, so that a
			// cooling reset cannot fall between the read and the store.
			c.touchMu.Lock()
			if old.touched.Load() {
				e.touched.Store(true)
				c.cooling = append(c.cooling, e)
			}
			c.touchMu.Unlock()
		}
	}
	// Counted once installed, so that a reader of Stats sees them in place.
	c.stats.reloaded.Add(uint64(len(batch)))
	return true
}

// unmark lets a later hit queue the entries of a reload that did not run
// (or failed) again.
func unmark(batch []*Entry) {
	for _, e := range batch {
		e.refreshing.Store(false)
	}
}

func (c *Cache) answer(e *Entry) (*Entry, Status) {
	if !e.usable(c.now().UnixNano()) {
		return nil, Invalid
	}
	return e, Valid
}

// usable reports whether e is a known key that has not expired at now
// (unix nanoseconds).
func (e *Entry) usable(now int64) bool {
	return e.known && (e.expiresAt == 0 || now < e.expiresAt)
}

// fresh reports whether no invalidation happened since e was filled and,
// while the cache is out of sync with the store, whether e is recent
// enough to be trusted.
func (c *Cache) fresh(e *Entry) bool {
	if e.epoch < c.dropBefore.Load() || (!e.known && e.epoch < c.negBefore.Load()) || e.loadedAt < c.trustFrom.Load() {
		return false
	}
	if e.epoch >= c.lastInval.Load() {
		return true
	}
	v, ok := c.accountInval.Load(e.AccountID)
	return !ok || v.(invalidation).epoch <= e.epoch
}

var errRetry = errors.New("invalidated while loading")

func (c *Cache) miss(ctx context.Context, h keystore.Hash) (*Entry, Status) {
	v, err, _ := c.group.Do(string(h[:]), func() (any, error) {
		// Detached from the first caller: its cancellation must not fail
		// the others waiting on the same key.
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.QueryTimeout)
		defer cancel()
		for range 3 {
			e, err := c.load(qctx, h)
			if err == errRetry {
				continue
			}
			return e, err
		}
		return nil, keystore.ErrUnavailable
	})
	if err != nil {
		return nil, Unavailable
	}
	return c.answer(v.(*Entry))
}

// RefreshAhead is the part of a positive entry's lifetime after which
// any hit reloads it in the background; before that, only a hit whose key
// is used too seldom to be seen again before the entry ends does (see
// Cache.hit).
const RefreshAhead = 0.75

// load queries the store and caches the answer, unless an invalidation
// touching it happened while the query ran (errRetry).
func (c *Cache) load(ctx context.Context, h keystore.Hash) (*Entry, error) {
	select {
	case c.lookupSlots <- struct{}{}:
		defer func() { <-c.lookupSlots }()
	case <-ctx.Done():
		c.stats.failed.Add(1)
		return nil, keystore.ErrUnavailable
	}
	epoch := c.epoch.Load()
	loadedAt := c.now().UnixNano()
	c.stats.lookups.Add(1)
	cred, err := c.store.LookupKey(ctx, h)
	switch {
	case err == nil:
		c.stats.found.Add(1)
	case errors.Is(err, keystore.ErrNotFound):
		c.stats.notFound.Add(1)
	default:
		c.stats.failed.Add(1)
	}
	return c.install(h, epoch, loadedAt, cred, err)
}

// install caches what the store answered for h (cred, or err), from a
// query that started at loadedAt in epoch, unless an invalidation touching
// it happened since (errRetry); a store error is returned as is.
func (c *Cache) install(h keystore.Hash, epoch uint64, loadedAt int64, cred keystore.Credential, err error) (*Entry, error) {
	var e *Entry
	switch {
	case err == nil && cred.Usable(time.Unix(0, loadedAt)):
		e = newEntry(h, epoch, &cred)
		e.loadedAt = loadedAt
	case err == nil || errors.Is(err, keystore.ErrNotFound):
		// Revoked, expired (both final) or unknown: cached alike, as a
		// refusal that builds nothing, is not remembered as a key that
		// was valid and outlives the account's invalidations, so that
		// the three cost about the same.
		//
		// Revoked: until its notification arrives, this instance may
		// still hold the key as valid from a lookup that read it just
		// before the revocation. Invalidate the account now, so that
		// once one request got 401 for the key no later one gets 200;
		// the refusal takes the new epoch.
		if r := cred.Key.RevokedAt; err == nil && r != nil && c.now().Sub(*r) < 2*MaxTTL {
			c.InvalidateAccount(cred.Key.AccountID)
			epoch = c.epoch.Load()
		}
		e = &Entry{hash: h, epoch: epoch, loadedAt: loadedAt}
	default:
		return nil, err
	}
	if !c.fresh(e) {
		return nil, errRetry
	}
	ttl := time.Duration(c.ttl.Load())
	if e.known {
		// Up to a tenth shorter, so that keys cached together do not
		// expire together; refreshed from RefreshAhead of that on.
		if j := ttl / 10; j > 0 {
			ttl -= rand.N(j)
		}
		e.refreshAt = loadedAt + int64(float64(ttl)*RefreshAhead)
		e.staleAt = loadedAt + int64(ttl)
		e.lastHit.Store(loadedAt)
	} else {
		ttl = time.Duration(c.negTTL.Load())
	}
	c.lru.SetWithTTL(slot(&h), e, 1, ttl)
	if e.known {
		c.recent.SetWithTTL(slot(&h), h, 1, RecentTTL)
	}
	return e, nil
}

func newEntry(h keystore.Hash, epoch uint64, cred *keystore.Credential) *Entry {
	k := &cred.Key
	// Few objects per entry, so that a cache of many keys adds little to
	// every garbage collection's marking: the four strings share one
	// allocation, and placeholder values are boxed only when read.
	scopes := scope.Header(k.Scopes)
	all := k.AccountID + k.ID + scopes + cred.Plan
	i, j, l := len(k.AccountID), len(k.AccountID)+len(k.ID), len(k.AccountID)+len(k.ID)+len(scopes)
	e := &Entry{
		hash:         h,
		epoch:        epoch,
		known:        true,
		AccountID:    all[:i],
		KeyID:        all[i:j],
		ScopesHeader: all[j:l],
		Plan:         all[l:],
	}
	e.Placeholders = e.placeholder
	if k.ExpiresAt != nil {
		e.expiresAt = k.ExpiresAt.UnixNano()
	}
	if s, err := scope.Parse(k.Scopes); err == nil {
		e.Scopes = s
	} // an unknown stored scope grants nothing (e.Scopes stays 0)
	return e
}

// InvalidateAccount makes every cached entry of the account stale: the
// next request with any of its keys asks the store. Used for revocations
// and plan changes.
func (c *Cache) InvalidateAccount(accountID string) {
	e := c.epoch.Add(1)
	c.accountInval.Store(accountID, invalidation{epoch: e, at: c.now()})
	for {
		last := c.lastInval.Load()
		if last >= e || c.lastInval.CompareAndSwap(last, e) {
			break
		}
	}
}

// Forget removes the entry of one key hash, to free its memory early.
// Correctness never depends on it (see InvalidateAccount).
func (c *Cache) Forget(h keystore.Hash) { c.lru.Del(slot(&h)) }

// InvalidateUnknown makes every negative entry stale: used when a key is
// created, so a key that was refused a moment ago works at once.
func (c *Cache) InvalidateUnknown() {
	c.negBefore.Store(c.epoch.Add(1))
}

// DropAll makes every entry stale and frees them.
func (c *Cache) DropAll() {
	c.dropBefore.Store(c.epoch.Add(1))
	c.lru.Clear()
}

// Apply applies one change from the store's change log. A change without
// its hash (a notification) invalidates just the same; only the early
// freeing of the key's entry is skipped.
func (c *Cache) Apply(ch keystore.Change) {
	switch ch.Kind {
	case keystore.ChangeCreated:
		c.InvalidateUnknown()
	case keystore.ChangeRevoked, keystore.ChangePlan, keystore.ChangeUpdated:
		c.InvalidateAccount(ch.AccountID)
	default:
		c.DropAll()
		return
	}
	if ch.Hash != (keystore.Hash{}) {
		c.Forget(ch.Hash)
	}
}

// pruneInvalidations forgets account invalidations older than any entry can
// be: an entry lives at most MaxTTL, so older marks can no longer match.
func (c *Cache) pruneInvalidations() {
	cutoff := c.now().Add(-2 * MaxTTL)
	c.accountInval.Range(func(k, v any) bool {
		if v.(invalidation).at.Before(cutoff) {
			c.accountInval.CompareAndDelete(k, v)
		}
		return true
	})
}

// TouchPrecision is how stale a key's last-used time may be: a key's use
// is written at most once per TouchPrecision (plus the flush interval).
// Every write rewrites a page of the store for one key, so this is what
// 100,000 keys in use cost: on SQLite with a million keys stored, ~25 µs
// of CPU per key written (BenchmarkTouchKeys), which at one minute was
// ~4% of a busy gateway's CPU and at five minutes is under 1%. A key's
// first use is still written within the flush interval.
const TouchPrecision = 5 * time.Minute

// Touch records that e was used; the time is written to the store in the
// next batch (see FlushTouched). Only the first use of a key per
// TouchPrecision costs more than one atomic load.
func (c *Cache) Touch(e *Entry) {
	if e.touched.Load() || !e.touched.CompareAndSwap(false, true) {
		return
	}
	c.touchMu.Lock()
	c.touched = append(c.touched, e)
	c.touchMu.Unlock()
}

// FlushTouched writes the last-used time of the keys first used since the
// last flush, in one batch. Keys written stay marked as used (their later
// uses are not recorded) until TouchPrecision has passed.
func (c *Cache) FlushTouched(ctx context.Context) error {
	now := c.now()
	c.touchMu.Lock()
	batch := c.touched
	c.touched = nil
	if now.Sub(c.coolingSince) >= TouchPrecision {
		for _, e := range c.cooling {
			e.touched.Store(false)
		}
		c.cooling, c.coolingSince = nil, now
	}
	c.cooling = append(c.cooling, batch...)
	c.touchMu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	used := make(map[string]time.Time, len(batch))
	for _, e := range batch {
		used[e.KeyID] = now
	}
	return c.store.TouchKeys(ctx, used)
}

// Close stops the cache. It does not close the store.
func (c *Cache) Close() {
	c.closeOnce.Do(func() {
		close(c.stop)
		c.stopQueries() // a reload in flight must not hold Close up
		<-c.reloaderDone
		c.lru.Close()
		c.recent.Close()
	})
}

// Wait blocks until every entry set so far is visible to Verify (the
// underlying cache admits entries asynchronously). For tests and benchmarks.
func (c *Cache) Wait() { c.lru.Wait() }

// RecentTTL is how long a key that was once verified may still cost a
// store lookup from a client address past its failure limit.
const RecentTTL = 10 * time.Minute

// VerifyKnown is Verify for clients that have failed too often: a key
// cached as valid answers from the cache; a key verified as valid within
// RecentTTL (whose entry has since expired) is looked up again; anything
// else is Invalid without a store lookup. So guesses from such a client
// cost nothing, while a real key used by someone behind the same address
// keeps working, even across cache expiry.
func (c *Cache) VerifyKnown(ctx context.Context, key string) (*Entry, Status) {
	if apikey.Check(key) != nil {
		c.stats.malformed.Add(1)
		return nil, Invalid
	}
	h := apikey.Hash(key)
	if e, ok := c.lru.Get(slot(&h)); ok && e.hash == h && c.fresh(e) {
		return c.hit(e)
	}
	if prev, ok := c.recent.Get(slot(&h)); ok && prev == h {
		return c.miss(ctx, h)
	}
	return nil, Invalid
}

// Cached answers from the cache alone: a key without a fresh cached entry
// is Invalid, and the store is never asked. For probes and tests.
func (c *Cache) Cached(key string) (*Entry, Status) {
	if apikey.Check(key) != nil {
		return nil, Invalid
	}
	h := apikey.Hash(key)
	if e, ok := c.lru.Get(slot(&h)); ok && e.hash == h && c.fresh(e) {
		return c.answer(e)
	}
	return nil, Invalid
}
