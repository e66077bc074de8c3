package keycache

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
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

// Reconnection of the listening session (stores that are a
// keystore.Notifier): the first retry comes after minBackoff, each
// further one waits twice as long up to maxBackoff, randomised by up to
// half; after a session that answered a heartbeat, or lasted resetBackoff,
// the next retry is back at minBackoff.
const (
	minBackoff   = 100 * time.Millisecond
	maxBackoff   = 5 * time.Second
	resetBackoff = 10 * time.Second
)

// guardInterval is how often Follow checks whether the cache is in sync.
const guardInterval = 100 * time.Millisecond

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
	wg.Go(f.guard)
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

// follower is Follow's state. It is the keystore.ChangeListener of the
// listening sessions, whose calls come from the listening goroutine while
// Follow's own goroutine reads the log: mu orders the two.
type follower struct {
	c   *Cache
	cfg FollowConfig
	ctx context.Context

	mu sync.Mutex
	// seq is the position in the change log: every change up to it has
	// been applied. -1: unknown.
	seq int64
	// resync: the position cannot be trusted (a session replaced one that
	// ended, or a read failed: the store may have failed over); the next
	// read takes the log's head and drops the whole cache.
	resync bool
	// session counts the listening sessions that started; caughtUp is the
	// session during which the last successful read started. A session's
	// heartbeats vouch for the cache only once a read that started after
	// it began listening has succeeded: what committed before it listened
	// comes from that read.
	session, caughtUp uint64
	// unapplied counts notifications that could not be applied (no
	// account, unknown kind); readUnapplied is how many of them the last
	// successful read covers. Heartbeats vouch for nothing while one is
	// not covered.
	unapplied, readUnapplied uint64
	// readFailed and listenFailed remember a failure for OnRecovered.
	readFailed   bool
	listenFailed bool // only touched by the listening goroutine
	// heardBack: the current session answered a heartbeat.
	heardBack atomic.Bool

	wake chan struct{}
}

func (f *follower) report(op string, err error) {
	if f.cfg.OnError != nil && f.ctx.Err() == nil {
		f.cfg.OnError(op, err)
	}
}

func (f *follower) recovered(op string) {
	if f.cfg.OnRecovered != nil && f.ctx.Err() == nil {
		f.cfg.OnRecovered(op)
	}
}

// signal asks Follow's goroutine to read the log now.
func (f *follower) signal() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// readBatch is how many changes one query of the log returns at most.
const readBatch = 1000

// read catches up with the change log (or, when the position is unknown,
// takes the head of the log and drops the whole cache). On success every
// change committed before the read started is applied.
func (f *follower) read() {
	c := f.c
	start := c.now().UnixNano()
	qctx, cancel := context.WithTimeout(f.ctx, c.cfg.QueryTimeout)
	defer cancel()

	f.mu.Lock()
	resync, seq := f.resync || f.seq < 0, f.seq
	session, unapplied := f.session, f.unapplied
	mustDrop := f.resync
	f.resync = false
	f.mu.Unlock()

	fail := func(err error) {
		f.mu.Lock()
		f.resync = true
		f.readFailed = true
		f.mu.Unlock()
		f.report(opReadLog, err)
	}
	if resync {
		last, err := c.store.LastChange(qctx)
		if err != nil {
			fail(err)
			return
		}
		f.mu.Lock()
		// The first read of a new cache has nothing to drop unless a
		// lookup started before it knew the head of the log.
		if mustDrop || c.stats.lookups.Load() > 0 {
			c.DropAll()
		}
		f.seq = last
		f.mu.Unlock()
	} else {
		for {
			changes, err := c.store.Changes(qctx, seq, readBatch)
			if err != nil {
				fail(err)
				return
			}
			f.mu.Lock()
			for _, ch := range changes {
				if ch.Seq > f.seq {
					c.Apply(ch)
					f.seq = ch.Seq
				}
			}
			f.mu.Unlock()
			if len(changes) < readBatch {
				break
			}
			seq = changes[len(changes)-1].Seq
		}
	}
	f.mu.Lock()
	f.caughtUp = session
	f.readUnapplied = max(f.readUnapplied, unapplied)
	wasFailing := f.readFailed
	f.readFailed = false
	f.mu.Unlock()
	c.markSynced(start, f.cfg.MaxStale)
	if wasFailing {
		f.recovered(opReadLog)
	}
}

// Listening implements keystore.ChangeListener. A session that replaces
// another may follow a time when none listened, so the next read drops the
// whole cache; the first session only has the log read, to catch up.
func (f *follower) Listening() {
	f.mu.Lock()
	f.session++
	if f.session > 1 {
		f.resync = true
	}
	f.mu.Unlock()
	f.signal()
	if f.listenFailed {
		f.listenFailed = false
		f.recovered(opListen)
	}
}

// Notified implements keystore.ChangeListener. The change's invalidation
// is applied at once: invalidations can be applied in any order and more
// than once. The position in the log moves on only when the change is the
// next one; otherwise (a change of which this instance saw no earlier
// part, a sequence number left unused by a rolled-back transaction, a
// payload without the account) the log is read.
func (f *follower) Notified(ch keystore.Change) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch.Seq > 0 && ch.Seq <= f.seq {
		return // already applied
	}
	if !applicable(ch) {
		f.unapplied++
		f.signal()
		return
	}
	f.c.Apply(ch)
	if f.seq >= 0 && ch.Seq == f.seq+1 {
		f.seq = ch.Seq
		return
	}
	f.signal()
}

// applicable reports whether a notified change carries what applying it
// needs.
func applicable(ch keystore.Change) bool {
	switch ch.Kind {
	case keystore.ChangeCreated:
		return ch.Seq > 0
	case keystore.ChangeRevoked, keystore.ChangePlan, keystore.ChangeUpdated:
		return ch.Seq > 0 && ch.AccountID != ""
	}
	return false
}

// Alive implements keystore.ChangeListener: every change committed before
// t has been notified, and so applied, unless the session has not caught
// up with the log yet or a notification could not be applied.
func (f *follower) Alive(t time.Time) {
	f.heardBack.Store(true)
	f.mu.Lock()
	ok := f.caughtUp == f.session && f.readUnapplied == f.unapplied
	f.mu.Unlock()
	if ok {
		f.c.markSynced(t.UnixNano(), f.cfg.MaxStale)
	}
}

// listen runs listening sessions until f.ctx ends, reopening each one that
// ends after a randomised, growing pause.
func (f *follower) listen(n keystore.Notifier) {
	backoff := minBackoff
	for {
		started := time.Now()
		f.heardBack.Store(false)
		err := n.Listen(f.ctx, f)
		if f.ctx.Err() != nil {
			return
		}
		f.listenFailed = true
		f.report(opListen, err)
		if f.heardBack.Load() || time.Since(started) >= resetBackoff {
			backoff = minBackoff
		}
		pause := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, maxBackoff)
		select {
		case <-f.ctx.Done():
			return
		case <-time.After(pause):
		}
	}
}

// guard withdraws trust from old entries whenever the cache has not been
// confirmed in sync for longer than MaxStale.
func (f *follower) guard() {
	tick := time.NewTicker(guardInterval)
	defer tick.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-tick.C:
			f.c.checkTrust(f.cfg.MaxStale)
		}
	}
}

// markSynced records that every change committed before t (unix
// nanoseconds) has been applied.
func (c *Cache) markSynced(t int64, maxStale time.Duration) {
	for {
		cur := c.syncedAt.Load()
		if t <= cur || c.syncedAt.CompareAndSwap(cur, t) {
			break
		}
	}
	c.checkTrust(maxStale)
}

// checkTrust sets trustFrom: 0 while the cache was in sync within
// maxStale, else now-maxStale, so that no entry loaded earlier is used.
func (c *Cache) checkTrust(maxStale time.Duration) {
	now := c.now().UnixNano()
	if now-c.syncedAt.Load() <= int64(maxStale) {
		c.trustFrom.Store(0)
		return
	}
	c.trustFrom.Store(now - int64(maxStale))
}
