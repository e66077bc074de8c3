package keycache

import (
	"context"
	"sync"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// Defaults and limits of Follow.
const (
	// DefaultPollInterval is how often the change log is read.
	DefaultPollInterval = time.Second
	// DefaultMaxStale is how long an entry is trusted, at most, after the
	// last moment the cache was known to hold every committed change.
	DefaultMaxStale = 5 * time.Second
)

// FollowConfig tunes Follow.
type FollowConfig struct {
	// PollInterval is how often the change log is read. Default: 1s.
	PollInterval time.Duration
	// MaxStale bounds how long an entry is trusted while the cache cannot
	// confirm that it holds every change the store has committed (the
	// store is unreachable, or neither its change log nor its
	// notifications can be read): an entry is trusted at most MaxStale
	// after the last moment it was known to be current; after that the
	// key is looked up again, and gets Unavailable if the store cannot
	// answer. It is raised to three poll intervals if that is longer.
	// Default: 5s.
	MaxStale time.Duration
	// FlushInterval is how often last-used times are written. Default: 10s.
	FlushInterval time.Duration
	// KeepChanges is how long change-log entries are kept. Default: 1h.
	KeepChanges time.Duration
	// OnError is told about store errors of the background work (it must
	// not block). It may be nil.
	OnError func(op string, err error)
	// OnRecovered is told when background work that failed (op as given
	// to OnError) works again. It must not block. It may be nil.
	OnRecovered func(op string)
	// Started, if not nil, is closed once Follow has made its first read
	// of the change log (or failed to). A caller that waits for it before
	// serving requests keeps that read from dropping what the first
	// requests cached.
	Started chan<- struct{}
}

// Operations reported to OnError and OnRecovered.
const (
	opReadLog = "reading change log"
	opListen  = "listening for changes"
)

// Follow runs the cache's background work until ctx ends: it keeps the
// cache in step with changes made by other instances or by the command
// line (revocations, plan changes, creations), writes last-used times in
// batches, and forgets old invalidation marks and change-log entries.
//
// Changes arrive two ways. If the store is a keystore.Notifier, a
// listening session applies each change as it commits; it is reopened
// with backoff whenever it ends, and whenever a new session replaces one
// that ended the whole cache is dropped, since changes may have been
// missed while none listened. Whatever the store, the change log is read
// every PollInterval as a backstop, and whenever a notification arrives
// out of order. When the log could not be read and then can be again, the
// whole cache is dropped as well (the store may have failed over).
//
// While the cache cannot confirm that it is in sync (no answered
// heartbeat of the listening session and no successful read of the log),
// no entry is trusted longer than MaxStale after it was last known to be
// current: see FollowConfig.MaxStale.
func (c *Cache) Follow(ctx context.Context, cfg FollowConfig) {
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.MaxStale <= 0 {
		cfg.MaxStale = DefaultMaxStale
	}
	cfg.MaxStale = max(cfg.MaxStale, 3*cfg.PollInterval)
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 10 * time.Second
	}
	if cfg.KeepChanges <= 0 {
		cfg.KeepChanges = time.Hour
	}
	f := &follower{c: c, cfg: cfg, ctx: ctx, seq: -1, wake: make(chan struct{}, 1)}
	// The cache is as current as the store now: the first read, right
	// away, drops whatever a lookup cached before it knew the log's head.
	c.markSynced(c.now().UnixNano(), cfg.MaxStale)
	f.read()
	if cfg.Started != nil {
		close(cfg.Started)
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	if n, ok := c.store.(keystore.Notifier); ok {
		wg.Go(func() { f.listen(n) })
	}

	poll := time.NewTicker(cfg.PollInterval)
	defer poll.Stop()
	flush := time.NewTicker(cfg.FlushInterval)
	defer flush.Stop()
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if err := c.FlushTouched(fctx); err != nil {
				f.report("flushing last-used times", err)
			}
			cancel()
			return
		case <-poll.C:
			f.read()
		case <-f.wake:
			f.read()
		case <-flush.C:
			if err := c.FlushTouched(ctx); err != nil {
				f.report("flushing last-used times", err)
			}
		case <-prune.C:
			c.pruneInvalidations()
			if err := c.store.PruneChanges(ctx, c.now().Add(-cfg.KeepChanges)); err != nil {
				f.report("pruning change log", err)
			}
		}
	}
}
