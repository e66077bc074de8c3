package keycache

import (
	"context"
	"time"
)

// FollowConfig tunes Follow.
type FollowConfig struct {
	// PollInterval is how often the change log is read. Default: 1s.
	PollInterval time.Duration
	// FlushInterval is how often last-used times are written. Default: 10s.
	FlushInterval time.Duration
	// KeepChanges is how long change-log entries are kept. Default: 1h.
	KeepChanges time.Duration
	// OnError is told about store errors of the background work (it must not
	// block). It may be nil.
	OnError func(op string, err error)
}

// Follow runs the cache's background work until ctx ends: it applies the
// store's change log (revocations, plan changes and creations made by other
// instances or by the command line), writes last-used times in batches, and
// forgets old invalidation marks and change-log entries.
//
// Whenever the change log could not be read and then can be again, the
// whole cache is dropped: changes may have been missed in between.
func (c *Cache) Follow(ctx context.Context, cfg FollowConfig) {
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 10 * time.Second
	}
	if cfg.KeepChanges <= 0 {
		cfg.KeepChanges = time.Hour
	}
	report := func(op string, err error) {
		if cfg.OnError != nil && ctx.Err() == nil {
			cfg.OnError(op, err)
		}
	}
	poll := time.NewTicker(cfg.PollInterval)
	defer poll.Stop()
	flush := time.NewTicker(cfg.FlushInterval)
	defer flush.Stop()
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()

	seq := int64(-1) // unknown: read the head of the log first
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if err := c.FlushTouched(fctx); err != nil {
				report("flushing last-used times", err)
			}
			cancel()
			return
		case <-poll.C:
			var err error
			seq, err = c.poll(ctx, seq)
			if err != nil {
				report("reading change log", err)
			}
		case <-flush.C:
			if err := c.FlushTouched(ctx); err != nil {
				report("flushing last-used times", err)
			}
		case <-prune.C:
			c.pruneInvalidations()
			if err := c.store.PruneChanges(ctx, c.now().Add(-cfg.KeepChanges)); err != nil {
				report("pruning change log", err)
			}
		}
	}
}

// poll applies the changes after seq and returns the new position; -1
// means the position is unknown (the store failed), which drops the cache
// once the store answers again.
func (c *Cache) poll(ctx context.Context, seq int64) (int64, error) {
	qctx, cancel := context.WithTimeout(ctx, c.cfg.QueryTimeout)
	defer cancel()
	if seq < 0 {
		last, err := c.store.LastChange(qctx)
		if err != nil {
			return -1, err
		}
		c.DropAll()
		return last, nil
	}
	const batch = 1000
	for {
		changes, err := c.store.Changes(qctx, seq, batch)
		if err != nil {
			return -1, err
		}
		for _, ch := range changes {
			c.Apply(ch)
			seq = ch.Seq
		}
		if len(changes) < batch {
			return seq, nil
		}
	}
}
