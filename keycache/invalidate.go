package keycache

import (
	"time"

	"github.com/spkgate/spkgate/keystore"
)

type invalidation struct {
	epoch uint64
	at    time.Time
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
func (c *Cache) Forget(h keystore.Hash) { c.entries.Del(slot(&h)) }

// InvalidateUnknown makes every negative entry stale: used when a key is
// created, so a key that was refused a moment ago works at once.
func (c *Cache) InvalidateUnknown() {
	c.negBefore.Store(c.epoch.Add(1))
}

// DropAll makes every entry stale and frees them.
func (c *Cache) DropAll() {
	c.dropBefore.Store(c.epoch.Add(1))
	c.entries.Clear()
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
