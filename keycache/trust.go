package keycache

import "time"

// The trust bound. An entry is known to be current as of the later of two
// moments: when its store query started (loadedAt) and the newest moment
// as of which every committed change has been applied (syncedAt). While
// the cache follows the change log, an entry is trusted for at most
// maxStale after that moment.
//
// This is decided on every use from the two values themselves, rather
// than from a threshold that a periodic check derives from them: such a
// check (the guard this replaced) was a read-modify-write of its own, so
// a check that read the clock and syncedAt just before the cache fell
// out of step could store "trusted" after a later check had withdrawn
// trust, and the old entries stayed usable until the check ran again; and
// between two checks the bound was late by up to their interval. Now the
// bound holds to the nanosecond of the cache's clock, and syncedAt moves
// only forward (compare-and-swap), so no update can be lost.

// markSynced records that every change committed before t (unix
// nanoseconds) has been applied, and that entries are trusted for at most
// maxStale after the last such moment.
func (c *Cache) markSynced(t int64, maxStale time.Duration) {
	c.maxStale.Store(int64(maxStale))
	for {
		cur := c.syncedAt.Load()
		if t <= cur || c.syncedAt.CompareAndSwap(cur, t) {
			return
		}
	}
}

// trusted reports whether e may be used at now (unix nanoseconds): always
// while nothing follows the change log (maxStale 0), and otherwise while
// now is at most maxStale past the last moment e was known to be current.
func (c *Cache) trusted(e *Entry, now int64) bool {
	maxStale := c.maxStale.Load()
	return maxStale == 0 || now-max(e.loadedAt, c.syncedAt.Load()) <= maxStale
}
