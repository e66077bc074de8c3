package keycache

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/keystore"
)

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
	now := c.now().UnixNano()
	if e, ok := c.entries.Get(slot(&h)); ok && e.hash == h && c.fresh(e, now) {
		return c.hit(e, now)
	}
	return c.miss(ctx, h)
}

// hit answers from a cached entry and, when the entry is due for a
// reload, queues it for the reloader, which reloads due entries together
// in the background, so a key in use never waits for one. An entry is due
//   - while the cache cannot prove it is current: from RefreshAhead of the
//     trust bound on (see trusted), so keys in use stay trusted for as long
//     as the store answers lookups, five seconds at a time;
//   - always: from RefreshAhead of its TTL (the safety net) on, or when the
//     key's next use, as far apart as its last two, would find it gone.
//
// While the cache is current (the change log or its notifications vouch
// for every change) the first rule never applies and the second only once
// per TTL (10 minutes by default): entries are reloaded by changes, not by
// a timer.
func (c *Cache) hit(e *Entry, now int64) (*Entry, Status) {
	if !e.usable(now) {
		return nil, Invalid
	}
	if !e.refreshing.Load() {
		last := e.lastHit.Load()
		refreshAt := e.loadedAt + int64(float64(e.staleAt-e.loadedAt)*RefreshAhead)
		due := now >= refreshAt || now+(now-last) >= e.staleAt
		if ms := c.maxStale.Load(); ms > 0 && now-max(e.loadedAt, c.syncedAt.Load()) >= int64(float64(ms)*RefreshAhead) {
			due = true
		}
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

func (c *Cache) answer(e *Entry) (*Entry, Status) {
	if !e.usable(c.now().UnixNano()) {
		return nil, Invalid
	}
	return e, Valid
}

// fresh reports whether e's lifetime has not ended at now (unix
// nanoseconds), no invalidation happened since e was filled, and e is
// still trusted (see trusted).
func (c *Cache) fresh(e *Entry, now int64) bool {
	if now >= e.staleAt || e.epoch < c.dropBefore.Load() || (!e.known && e.epoch < c.negBefore.Load()) || !c.trusted(e, now) {
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
		e = newRefusal(h, epoch, loadedAt)
	default:
		return nil, err
	}
	ttl := time.Duration(c.ttl.Load())
	if e.known {
		// Up to a tenth shorter, so that keys cached together do not
		// expire together.
		if j := ttl / 10; j > 0 {
			ttl -= rand.N(j)
		}
		e.lastHit.Store(loadedAt)
	} else {
		ttl = time.Duration(c.negTTL.Load())
	}
	// The lifetime is checked on every use (see fresh), so ristretto
	// keeps no expiry of its own: that saved its expiration buckets and
	// their cleanup, and an expired entry waits to be replaced or evicted.
	e.staleAt = loadedAt + int64(ttl)
	if !c.fresh(e, c.now().UnixNano()) {
		return nil, errRetry
	}
	c.entries.Set(slot(&h), e, 1)
	if e.known {
		c.recent.add(&h, loadedAt)
	}
	return e, nil
}

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
	now := c.now().UnixNano()
	if e, ok := c.entries.Get(slot(&h)); ok && e.hash == h && c.fresh(e, now) {
		return c.hit(e, now)
	}
	if c.recent.has(&h, now) {
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
	now := c.now().UnixNano()
	if e, ok := c.entries.Get(slot(&h)); ok && e.hash == h && c.fresh(e, now) {
		return c.answer(e)
	}
	return nil, Invalid
}
