package keycache

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/sqlitestore"
)

// notifyingStore is a real SQLite store that is also a keystore.Notifier
// whose sessions the test drives (pgstore's real sessions are tested in
// pgstore and, end to end, in caddymodule). It counts lookups and log
// reads, can hold one lookup, and can fail every call as an unreachable
// store would.
type notifyingStore struct {
	keystore.Store
	sessions chan *session
	lookups  atomic.Int64
	reads    atomic.Int64
	down     atomic.Bool
	hold     atomic.Pointer[chan chan struct{}]
}

// session is one Listen call: the test passes changes through l and ends
// the session by sending on end.
type session struct {
	l   keystore.ChangeListener
	end chan error
}

func (s *notifyingStore) Listen(ctx context.Context, l keystore.ChangeListener) error {
	if s.down.Load() {
		return keystore.ErrUnavailable
	}
	sess := &session{l: l, end: make(chan error, 1)}
	l.Listening()
	select {
	case s.sessions <- sess:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-sess.end:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *notifyingStore) LookupKey(ctx context.Context, h keystore.Hash) (keystore.Credential, error) {
	s.lookups.Add(1)
	if s.down.Load() {
		return keystore.Credential{}, keystore.ErrUnavailable
	}
	cred, err := s.Store.LookupKey(ctx, h)
	if hold := s.hold.Load(); hold != nil {
		release := make(chan struct{})
		select {
		case *hold <- release:
			<-release
		case <-ctx.Done():
		}
	}
	return cred, err
}

// LookupKeys (the reloader's query) is down with the rest of the store.
func (s *notifyingStore) LookupKeys(ctx context.Context, hs []keystore.Hash) (map[keystore.Hash]keystore.Credential, error) {
	s.lookups.Add(1)
	if s.down.Load() {
		return nil, keystore.ErrUnavailable
	}
	return s.Store.LookupKeys(ctx, hs)
}

func (s *notifyingStore) Changes(ctx context.Context, after int64, limit int) ([]keystore.Change, error) {
	s.reads.Add(1)
	if s.down.Load() {
		return nil, keystore.ErrUnavailable
	}
	return s.Store.Changes(ctx, after, limit)
}

func (s *notifyingStore) LastChange(ctx context.Context) (int64, error) {
	s.reads.Add(1)
	if s.down.Load() {
		return 0, keystore.ErrUnavailable
	}
	return s.Store.LastChange(ctx)
}

// clock is a settable time source, safe for the goroutines of Follow.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// follow starts a cache over a notifying store and its Follow, and waits
// for the first listening session. other changes the store as another
// instance would: without touching this cache.
func follow(t *testing.T, cfg FollowConfig, clk *clock) (*Cache, *notifyingStore, *session, *keys.Manager) {
	t.Helper()
	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "spk.db"))
	if err != nil {
		t.Fatal(err)
	}
	ns := &notifyingStore{Store: st, sessions: make(chan *session, 1)}
	c, err := New(ns, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if clk != nil {
		c.now = clk.now
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Follow(ctx, cfg) }()
	t.Cleanup(func() { cancel(); <-done; c.Close(); st.Close() })
	sess := nextSession(t, ns)
	caughtUp(t, c, sess, clk)
	return c, ns, sess, &keys.Manager{Store: st}
}

func nextSession(t *testing.T, ns *notifyingStore) *session {
	t.Helper()
	select {
	case s := <-ns.sessions:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no listening session within 10s")
	}
	return nil
}

// caughtUp waits until the follower has read the log since sess began
// listening, which is when sess's heartbeats start to count.
func caughtUp(t *testing.T, c *Cache, sess *session, clk *clock) {
	t.Helper()
	waitFor(t, func() bool {
		at := c.now()
		if clk != nil {
			clk.advance(time.Millisecond)
			at = clk.now()
		}
		sess.l.Alive(at)
		return c.syncedAt.Load() >= at.UnixNano()
	})
}

func lastSeq(t *testing.T, s keystore.Store) int64 {
	t.Helper()
	seq, err := s.LastChange(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// cached verifies key and waits until its entry is admitted.
func cached(t *testing.T, c *Cache, key string) {
	t.Helper()
	if _, st := c.Verify(context.Background(), key); st != Valid {
		t.Fatalf("verify: %v", st)
	}
	c.Wait()
}

// TestNotificationInvalidatesWithoutReadingTheLog: a change notified in
// order is applied at once, with no store query; the log is read only when
// one arrives out of order.
func TestNotificationInvalidatesWithoutReadingTheLog(t *testing.T) {
	c, ns, sess, other := follow(t, FollowConfig{PollInterval: time.Hour}, nil)
	ctx := context.Background()
	base := lastSeq(t, ns)
	k := create(t, other, "a1") // plan change, then creation: base+1, base+2
	sess.l.Notified(keystore.Change{Seq: base + 1, Kind: keystore.ChangePlan, AccountID: "a1"})
	sess.l.Notified(keystore.Change{Seq: base + 2, Kind: keystore.ChangeCreated, AccountID: "a1"})
	cached(t, c, k.Secret)

	reads, lookups := ns.reads.Load(), ns.lookups.Load()
	if _, err := other.Revoke(ctx, testActor, "a1", k.ID); err != nil {
		t.Fatal(err)
	}
	if _, st := c.Verify(ctx, k.Secret); st != Valid {
		t.Fatal("the revocation reached the cache before its notification") // nothing else could have told it
	}
	sess.l.Notified(keystore.Change{Seq: base + 3, Kind: keystore.ChangeRevoked, AccountID: "a1"})
	if _, st := c.Verify(ctx, k.Secret); st != Invalid {
		t.Fatalf("revoked key %v right after its notification", st)
	}
	time.Sleep(50 * time.Millisecond)
	if got := ns.reads.Load(); got != reads {
		t.Errorf("an in-order notification caused %d reads of the log", got-reads)
	}
	if got := ns.lookups.Load(); got != lookups+1 {
		t.Errorf("%d lookups after the revocation, want 1", got-lookups)
	}

	// A notification from further ahead (an unused seq, a missed one)
	// makes the follower read the log.
	k2 := create(t, other, "a2")
	cached(t, c, k2.Secret)
	if _, err := other.Revoke(ctx, testActor, "a2", k2.ID); err != nil {
		t.Fatal(err)
	}
	sess.l.Notified(keystore.Change{Seq: lastSeq(t, ns), Kind: keystore.ChangeRevoked})
	waitFor(t, func() bool { return ns.reads.Load() > reads })
	waitFor(t, func() bool { _, st := c.Verify(ctx, k2.Secret); return st == Invalid })
}

// TestEveryListeningSessionDropsTheCache: a session that ends may have
// lost notifications, so when the next one listens the whole cache goes.
func TestEveryListeningSessionDropsTheCache(t *testing.T) {
	c, ns, sess, other := follow(t, FollowConfig{PollInterval: time.Hour}, nil)
	k := create(t, other, "a1")
	cached(t, c, k.Secret)
	lookups := ns.lookups.Load()
	c.Verify(context.Background(), k.Secret)
	if ns.lookups.Load() != lookups {
		t.Fatal("not cached")
	}
	drops := c.dropBefore.Load()
	sess.end <- keystore.ErrUnavailable
	nextSession(t, ns)
	waitFor(t, func() bool { return c.dropBefore.Load() > drops })
	c.Verify(context.Background(), k.Secret)
	if ns.lookups.Load() == lookups {
		t.Fatal("an entry survived a new listening session")
	}
}

// TestRevocationNotifiedDuringInFlightLookup: a lookup that read the key
// before the revocation and returns after its notification neither
// answers Valid nor caches its stale answer.
func TestRevocationNotifiedDuringInFlightLookup(t *testing.T) {
	c, ns, sess, other := follow(t, FollowConfig{PollInterval: time.Hour}, nil)
	ctx := context.Background()
	k := create(t, other, "a1")
	hold := make(chan chan struct{})
	ns.hold.Store(&hold)
	done := make(chan Status)
	go func() {
		_, st := c.Verify(ctx, k.Secret)
		done <- st
	}()
	var release chan struct{}
	select {
	case release = <-hold:
	case <-time.After(10 * time.Second):
		t.Fatal("the lookup did not reach the store")
	}
	ns.hold.Store(nil)
	if _, err := other.Revoke(ctx, testActor, "a1", k.ID); err != nil {
		t.Fatal(err)
	}
	sess.l.Notified(keystore.Change{Seq: lastSeq(t, ns), Kind: keystore.ChangeRevoked, AccountID: "a1"})
	close(release)
	if st := <-done; st != Invalid {
		t.Fatalf("in-flight lookup answered %v after the revocation was notified", st)
	}
	c.Wait()
	for range 5 {
		if _, st := c.Verify(ctx, k.Secret); st != Invalid {
			t.Fatal("revoked key accepted from the cache")
		}
	}
}

// TestStaleBoundWhileStoreUnreachable: with neither heartbeats nor log
// reads, a cached key keeps working until MaxStale after the cache was
// last in sync, then gets Unavailable (never Invalid); once the store is
// back the key works again without a restart.
func TestStaleBoundWhileStoreUnreachable(t *testing.T) {
	clk := &clock{}
	clk.ns.Store(time.Now().UnixNano())
	c, ns, sess, other := follow(t, FollowConfig{}, clk)
	ctx := context.Background()
	k := create(t, other, "a1")
	cached(t, c, k.Secret)
	sess.l.Alive(clk.now())

	ns.down.Store(true)
	sess.end <- keystore.ErrUnavailable
	clk.advance(DefaultMaxStale - time.Second)
	if _, st := c.Verify(ctx, k.Secret); st != Valid {
		t.Fatalf("cached key within the bound: %v", st)
	}
	clk.advance(2 * time.Second)
	if _, st := c.Verify(ctx, k.Secret); st != Unavailable {
		t.Fatalf("cached key past the bound while the store is down: %v, want Unavailable", st)
	}

	ns.down.Store(false)
	caughtUp(t, c, nextSession(t, ns), clk)
	waitFor(t, func() bool { _, st := c.Verify(ctx, k.Secret); return st == Valid })
}

// TestHeartbeatsKeepTrustWhileTheLogFails: while the listening session
// answers its heartbeats, entries stay trusted even if the log cannot be
// read (a pool exhausted by slow queries): every change still arrives.
func TestHeartbeatsKeepTrustWhileTheLogFails(t *testing.T) {
	clk := &clock{}
	clk.ns.Store(time.Now().UnixNano())
	c, ns, sess, other := follow(t, FollowConfig{PollInterval: 50 * time.Millisecond}, clk)
	ctx := context.Background()
	k := create(t, other, "a1")
	// The creation's changes (a plan change among them) must be applied
	// before the key is cached, or they invalidate its entry: wait for a
	// read that started after them to end.
	reads := ns.reads.Load()
	waitFor(t, func() bool { return ns.reads.Load() >= reads+3 })
	cached(t, c, k.Secret)
	lookups := ns.lookups.Load()

	reads = ns.reads.Load()
	ns.down.Store(true) // log reads (and lookups) fail from now on
	// A read failed for sure.
	waitFor(t, func() bool { return ns.reads.Load() >= reads+2 })
	for range 4 {
		clk.advance(3 * time.Second)
		sess.l.Alive(clk.now())
		if _, st := c.Verify(ctx, k.Secret); st != Valid {
			t.Fatalf("cached key with a live session: %v", st)
		}
	}
	if got := ns.lookups.Load(); got != lookups {
		t.Errorf("%d lookups while the session vouched for the cache", got-lookups)
	}
	// Without heartbeats the bound applies.
	clk.advance(DefaultMaxStale + time.Second)
	if _, st := c.Verify(ctx, k.Secret); st != Unavailable {
		t.Fatalf("cached key after heartbeats stopped: %v, want Unavailable", st)
	}
}

// TestRevokedLookupInvalidatesTheAccount: a lookup that finds a key
// revoked before this instance heard of it makes every entry of the
// account stale, so a valid entry of the same key that a lookup started
// before the revocation puts in the cache later (ristretto admits entries
// asynchronously, and may drop the negative one) is never answered: once
// a request got 401 for a key, no later one gets 200.
func TestRevokedLookupInvalidatesTheAccount(t *testing.T) {
	c, _, m := setup(t)
	ctx := context.Background()
	k := create(t, m, "a1")
	other := &keys.Manager{Store: m.Store} // another instance: this cache is not told
	h := apikey.Hash(k.Secret)
	before := c.epoch.Load()
	cred, err := m.Store.LookupKey(ctx, h) // read by a lookup in flight...
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Revoke(ctx, testActor, "a1", k.ID); err != nil { // ...when the key is revoked
		t.Fatal(err)
	}
	if _, st := c.Verify(ctx, k.Secret); st != Invalid { // another request sees the revocation
		t.Fatalf("revoked key: %v", st)
	}
	// The negative entry is dropped and the first lookup's answer lands late.
	c.Wait()
	c.entries.Del(slot(&h))
	c.Wait()
	stale := newEntry(h, before, &cred)
	stale.staleAt = c.now().Add(time.Minute).UnixNano()
	c.entries.Set(slot(&h), stale, 1)
	c.Wait()
	if e, ok := c.entries.Get(slot(&h)); !ok || e != stale {
		t.Fatal("the late entry was not admitted; the test proves nothing")
	}
	if _, st := c.Verify(ctx, k.Secret); st != Invalid {
		t.Fatalf("a valid answer read before the revocation was served after a 401: %v", st)
	}
}

// TestCacheHoldsMaxEntries: the cache holds as many keys as MaxEntries
// says, not MaxEntries divided by ristretto's per-item bookkeeping.
func TestCacheHoldsMaxEntries(t *testing.T) {
	c, _, _ := setup(t)
	const n = 20_000
	for i := range n {
		var h keystore.Hash
		h[0], h[1], h[2] = byte(i), byte(i>>8), byte(i>>16)
		e := &Entry{hash: h, epoch: c.epoch.Load(), known: true}
		for !c.entries.Set(slot(&h), e, 1) {
			c.Wait() // the set buffer was full: offer it again
		}
	}
	c.Wait()
	held := 0
	for i := range n {
		var h keystore.Hash
		h[0], h[1], h[2] = byte(i), byte(i>>8), byte(i>>16)
		if _, ok := c.entries.Get(slot(&h)); ok {
			held++
		}
	}
	if held < n*99/100 {
		t.Fatalf("the cache holds %d of %d keys (MaxEntries %d)", held, n, c.cfg.MaxEntries)
	}
}
