package keycache

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spkgate/spkgate/keystore"
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
