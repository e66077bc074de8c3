package keycache

import (
	"context"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// RefreshAhead is the part of a positive entry's lifetime (its TTL) and,
// while the cache cannot prove it is current, of its trust bound, after
// which any hit reloads it in the background; before that, only a hit
// whose key is used too seldom to be seen again before the entry ends does
// (see Cache.hit).
const RefreshAhead = 0.75

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
