package keycache

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestTrustBoundIsExact: while the cache follows the change log, an entry
// is trusted for exactly MaxStale after the last moment the cache was
// known to be current, at any moment of its clock: nothing has to run in
// between for the bound to apply.
func TestTrustBoundIsExact(t *testing.T) {
	c, _, _, clock, k := cachedKey(t)
	synced := clock.Load()
	c.markSynced(synced, DefaultMaxStale)

	clock.Store(synced + int64(DefaultMaxStale))
	if _, st := c.Cached(k.Secret); st != Valid {
		t.Fatalf("entry at the bound: %v, want Valid", st)
	}
	clock.Add(1)
	if _, st := c.Cached(k.Secret); st != Invalid {
		t.Fatalf("entry 1ns past the bound: %v, want it refused", st)
	}
	// A newer sync trusts it again; one older than the last changes nothing.
	c.markSynced(clock.Load(), DefaultMaxStale)
	if _, st := c.Cached(k.Secret); st != Valid {
		t.Fatalf("entry after a sync: %v, want Valid", st)
	}
	c.markSynced(synced, DefaultMaxStale)
	clock.Add(int64(DefaultMaxStale) + 1)
	if _, st := c.Cached(k.Secret); st != Invalid {
		t.Fatalf("entry past the bound after an older sync was reported: %v", st)
	}
}

// TestTrustBoundSurvivesRacingChecks stages the lost update of the check
// that used to maintain the bound: a sync is recorded and its check reads
// the clock; before it stores its verdict ("in sync"), time passes the
// bound and another check withdraws trust; then the first check's store
// lands and overwrote that, trusting every entry until some later check.
// The entry must be refused at once.
func TestTrustBoundSurvivesRacingChecks(t *testing.T) {
	c, _, _, clock, k := cachedKey(t)
	loaded := clock.Load()
	c.markSynced(loaded, DefaultMaxStale)

	later := loaded + int64(time.Second)
	past := later + int64(DefaultMaxStale) + 1
	var armed atomic.Bool
	base := c.now
	c.now = func() time.Time {
		if armed.CompareAndSwap(true, false) {
			// Held up here: the bound passes and a concurrent check
			// (an older sync reported late) runs in between.
			clock.Store(past)
			c.markSynced(loaded, DefaultMaxStale)
			return time.Unix(0, later)
		}
		return base()
	}
	armed.Store(true)
	c.markSynced(later, DefaultMaxStale)
	armed.Store(false)
	clock.Store(past)
	if _, st := c.Cached(k.Secret); st != Invalid {
		t.Fatalf("entry %s past the last sync: %v, want it refused", DefaultMaxStale+time.Nanosecond, st)
	}
}
