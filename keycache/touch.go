package keycache

import (
	"context"
	"time"
)

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
