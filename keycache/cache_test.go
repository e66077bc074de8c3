package keycache

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/sqlitestore"
)

// countingStore counts lookups and can hold one lookup until released, to
// stage a revocation racing an in-flight lookup. Everything else goes to a
// real SQLite store.
type countingStore struct {
	keystore.Store
	lookups atomic.Int64
	hold    atomic.Pointer[chan chan struct{}] // a lookup sends a channel here and waits on it
}

func (s *countingStore) LookupKey(ctx context.Context, h keystore.Hash) (keystore.Credential, error) {
	s.lookups.Add(1)
	cred, err := s.Store.LookupKey(ctx, h)
	s.wait(ctx)
	return cred, err
}

// LookupKeys counts as one lookup, like the one query it is.
func (s *countingStore) LookupKeys(ctx context.Context, hs []keystore.Hash) (map[keystore.Hash]keystore.Credential, error) {
	s.lookups.Add(1)
	found, err := s.Store.LookupKeys(ctx, hs)
	s.wait(ctx)
	return found, err
}

// holdOn makes every lookup from now on wait until the test takes it from
// the returned channel and closes what it took; holdOff stops that.
func (s *countingStore) holdOn() chan chan struct{} {
	ch := make(chan chan struct{})
	s.hold.Store(&ch)
	return ch
}

func (s *countingStore) holdOff() { s.hold.Store(nil) }

// wait holds a lookup until the test releases it, when hold is set.
func (s *countingStore) wait(ctx context.Context) {
	hold := s.hold.Load()
	if hold == nil {
		return
	}
	release := make(chan struct{})
	// Wait for the test to take the lookup: a lookup that ran ahead of
	// the test must not slip past the hold.
	select {
	case *hold <- release:
		<-release
	case <-ctx.Done():
	}
}

func setup(t testing.TB) (*Cache, *countingStore, *keys.Manager) {
	t.Helper()
	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "spk.db"))
	if err != nil {
		t.Fatal(err)
	}
	cs := &countingStore{Store: st}
	c, err := New(cs, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); st.Close() })
	return c, cs, &keys.Manager{Store: cs, Cache: c}
}

// setClock makes c's clock the returned value (unix nanoseconds), starting
// at the real time; tests move it forward.
func setClock(c *Cache) *atomic.Int64 {
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	c.now = func() time.Time { return time.Unix(0, clock.Load()) }
	return &clock
}

// cachedKey is setup with a settable clock (see setClock) and one key of
// account "a1", verified and cached.
func cachedKey(t *testing.T) (*Cache, *countingStore, *keys.Manager, *atomic.Int64, keys.Created) {
	t.Helper()
	c, cs, m := setup(t)
	clock := setClock(c)
	k := create(t, m, "a1")
	if _, st := c.Verify(context.Background(), k.Secret); st != Valid {
		t.Fatal("refused")
	}
	c.lru.Wait()
	return c, cs, m, clock, k
}

// eventually fails the test with msg unless cond holds within 5 s.
func eventually(t *testing.T, msg string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
	}
}

func create(t testing.TB, m *keys.Manager, account string, scopes ...string) keys.Created {
	t.Helper()
	if err := m.SetPlan(context.Background(), account, "pro"); err != nil {
		t.Fatal(err)
	}
	k, err := m.Create(context.Background(), account, keys.CreateRequest{Name: "k", Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestVerifyCachesAndSharesMisses(t *testing.T) {
	c, cs, m := setup(t)
	k := create(t, m, "a1", "monitors:read")
	ctx := context.Background()

	// Hold the first store lookup until all 50 callers are waiting.
	hold := cs.holdOn()
	var wg, started sync.WaitGroup
	for range 50 {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			if e, st := c.Verify(ctx, k.Secret); st != Valid || e.KeyID != k.ID || e.Plan != "pro" || e.ScopesHeader != "monitors:read" {
				t.Errorf("verify: %v %+v", st, e)
			}
		}()
	}
	release := <-hold
	started.Wait()
	time.Sleep(50 * time.Millisecond) // let them reach the shared flight
	cs.holdOff()
	close(release)
	wg.Wait()
	c.lru.Wait()
	n := cs.lookups.Load()
	if n > 2 {
		t.Fatalf("%d store lookups for 50 concurrent first requests", n)
	}
	for range 100 {
		c.Verify(ctx, k.Secret)
	}
	if got := cs.lookups.Load(); got != n {
		t.Fatalf("cached key looked up again: %d -> %d", n, got)
	}
}

func TestMalformedNeverReachesStore(t *testing.T) {
	c, cs, m := setup(t)
	k := create(t, m, "a1")
	for _, bad := range []string{"", "spk_", "spk_x", k.Secret[:39] + "!", k.Secret + "x", "Bearer " + k.Secret} {
		if _, st := c.Verify(context.Background(), bad); st != Invalid {
			t.Fatalf("%q: %v", bad, st)
		}
	}
	if cs.lookups.Load() != 0 {
		t.Fatal("malformed keys reached the store")
	}
	if st := c.Stats(); st.Malformed != 6 || st.Lookups != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNegativeCacheAndCreation(t *testing.T) {
	c, cs, m := setup(t)
	ctx := context.Background()
	g, _ := apikey.Generate()
	c.Verify(ctx, g.Secret)
	c.lru.Wait() // the cache admits entries asynchronously
	for range 20 {
		if _, st := c.Verify(ctx, g.Secret); st != Invalid {
			t.Fatal("unknown key accepted")
		}
	}
	if n := cs.lookups.Load(); n != 1 {
		t.Fatalf("unknown key looked up %d times within the negative ttl", n)
	}
	// A key created now must work at once even though its hash (here any
	// unknown one) was refused a moment ago: creation drops negative entries.
	before := cs.lookups.Load()
	m.Cache.InvalidateUnknown()
	c.Verify(ctx, g.Secret)
	if cs.lookups.Load() == before {
		t.Fatal("negative entry survived a creation")
	}
	k := create(t, m, "a1")
	if _, st := c.Verify(ctx, k.Secret); st != Valid {
		t.Fatal("new key refused")
	}
}

func TestRevocationRacingInFlightLookup(t *testing.T) {
	c, cs, m := setup(t)
	ctx := context.Background()
	k := create(t, m, "a1")
	hold := cs.holdOn()

	// A lookup starts and reads the key while it is still valid...
	done := make(chan Status)
	go func() {
		_, st := c.Verify(ctx, k.Secret)
		done <- st
	}()
	release := <-hold
	// ...the key is revoked while that answer is on its way...
	if _, err := m.Revoke(ctx, "a1", k.ID); err != nil {
		t.Fatal(err)
	}
	cs.holdOff()
	close(release)
	// ...and the stale answer must not be used or cached.
	if st := <-done; st != Invalid {
		t.Fatalf("in-flight lookup returned %v after the revocation", st)
	}
	c.lru.Wait()
	for range 5 {
		if _, st := c.Verify(ctx, k.Secret); st != Invalid {
			t.Fatal("revoked key accepted from the cache")
		}
	}
}

func TestPlanChangeAndRevocationFromChangeLog(t *testing.T) {
	// Two caches on one store stand for two instances (or the command line
	// and a server): changes made through one reach the other through the
	// change log.
	c1, cs, m1 := setup(t)
	c2, err := New(cs, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c2.Follow(ctx, FollowConfig{PollInterval: 20 * time.Millisecond})
	_ = c1

	k := create(t, m1, "a1")
	e, st := c2.Verify(ctx, k.Secret)
	if st != Valid || e.Plan != "pro" {
		t.Fatalf("%v %+v", st, e)
	}
	c2.lru.Wait()
	if err := m1.SetPlan(ctx, "a1", "free"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { e, _ := c2.Verify(ctx, k.Secret); return e != nil && e.Plan == "free" })
	if _, err := m1.Revoke(ctx, "", k.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, st := c2.Verify(ctx, k.Secret); return st == Invalid })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExpiry(t *testing.T) {
	c, _, m := setup(t)
	ctx := context.Background()
	m.SetPlan(ctx, "a1", "pro")
	exp := time.Now().Add(time.Hour)
	k, err := m.Create(ctx, "a1", keys.CreateRequest{Name: "x", ExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	if _, st := c.Verify(ctx, k.Secret); st != Valid {
		t.Fatal("unexpired key refused")
	}
	c.now = func() time.Time { return exp.Add(time.Second) }
	if _, st := c.Verify(ctx, k.Secret); st != Invalid {
		t.Fatal("expired key accepted from the cache")
	}
}

// A key that has already expired when it is looked up is cached as a
// refusal, like an unknown key, and not remembered as a key that was valid.
func TestExpiredWhenLookedUp(t *testing.T) {
	c, cs, m := setup(t)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	k, err := m.Create(ctx, "a1", keys.CreateRequest{Name: "x", ExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return exp.Add(time.Second) }
	before := cs.lookups.Load()
	for range 3 {
		if _, st := c.Verify(ctx, k.Secret); st != Invalid {
			t.Fatalf("expired key: status %v", st)
		}
		c.lru.Wait()
	}
	if n := cs.lookups.Load() - before; n != 1 {
		t.Errorf("%d lookups for three uses of an expired key, want 1 (then cached)", n)
	}
	c.lru.Clear()
	c.recent.Wait()
	if _, st := c.VerifyKnown(ctx, k.Secret); st != Invalid {
		t.Fatalf("VerifyKnown of an expired key: status %v", st)
	}
	if n := cs.lookups.Load() - before; n != 1 {
		t.Errorf("VerifyKnown looked up an expired key (%d lookups): it was remembered as valid", n)
	}
}

func TestTouchBatches(t *testing.T) {
	c, _, m := setup(t)
	ctx := context.Background()
	k := create(t, m, "a1")
	e, _ := c.Verify(ctx, k.Secret)
	for range 1000 {
		c.Touch(e)
	}
	if len(c.touched) != 1 {
		t.Fatalf("%d pending touches for one key", len(c.touched))
	}
	if err := c.FlushTouched(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := m.Store.GetKey(ctx, "a1", k.ID)
	if err != nil || got.LastUsedAt == nil {
		t.Fatalf("last used not written: %v %+v", err, got)
	}
	// Within TouchPrecision, later uses are not written again...
	c.Touch(e)
	if len(c.touched) != 0 {
		t.Fatal("a use within TouchPrecision was queued")
	}
	// ...after it, the next use is.
	later := time.Now().Add(TouchPrecision + time.Second)
	c.now = func() time.Time { return later }
	if err := c.FlushTouched(ctx); err != nil {
		t.Fatal(err)
	}
	c.Touch(e)
	if len(c.touched) != 1 {
		t.Fatal("a use after TouchPrecision was not queued")
	}
}

func TestVerifyCachedDoesNotAllocate(t *testing.T) {
	c, _, m := setup(t)
	k := create(t, m, "a1")
	ctx := context.Background()
	c.Verify(ctx, k.Secret)
	c.lru.Wait()
	if n := testing.AllocsPerRun(200, func() {
		if _, st := c.Verify(ctx, k.Secret); st != Valid {
			t.Fatal("refused")
		}
	}); n != 0 {
		t.Fatalf("cached verify allocates %v times", n)
	}
}

func BenchmarkVerifyCached(b *testing.B) {
	c, _, m := setup(b)
	k := create(b, m, "a1", "monitors:read")
	ctx := context.Background()
	c.Verify(ctx, k.Secret)
	c.lru.Wait()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, st := c.Verify(ctx, k.Secret); st != Valid {
				b.Fatal("refused")
			}
		}
	})
}

func TestVerifyKnownLooksUpOnlyRecentlyValidKeys(t *testing.T) {
	c, cs, m := setup(t)
	ctx := context.Background()
	k := create(t, m, "a1")
	if _, st := c.Verify(ctx, k.Secret); st != Valid {
		t.Fatal("refused")
	}
	c.Wait()
	c.recent.Wait()
	// The entry expires (here: is dropped); the key was valid recently, so
	// it may be looked up again even for a client past its failure limit.
	c.DropAll()
	before := cs.lookups.Load()
	if _, st := c.VerifyKnown(ctx, k.Secret); st != Valid || cs.lookups.Load() != before+1 {
		t.Fatalf("recently valid key: %v, %d lookups", st, cs.lookups.Load()-before)
	}
	// A key never seen valid costs no lookup.
	g, _ := apikey.Generate()
	before = cs.lookups.Load()
	if _, st := c.VerifyKnown(ctx, g.Secret); st != Invalid || cs.lookups.Load() != before {
		t.Fatal("an unknown key was looked up for a blocked client")
	}
	// A revoked key that was valid is looked up and found revoked.
	if _, err := m.Revoke(ctx, "a1", k.ID); err != nil {
		t.Fatal(err)
	}
	if _, st := c.VerifyKnown(ctx, k.Secret); st != Invalid {
		t.Fatal("revoked key accepted")
	}
}

// A key in use is reloaded in the background before its entry expires: the
// requests that find it near its end are answered from the cache, the
// store sees one more lookup however many they are, and what the store
// says then (here: revoked behind the cache's back) is what later
// requests get.
func TestRefreshAhead(t *testing.T) {
	c, cs, _, clock, k := cachedKey(t)
	ctx := context.Background()
	// Revoked in the store only: no invalidation reaches this cache.
	if _, _, err := cs.Store.RevokeKey(ctx, "a1", k.ID); err != nil {
		t.Fatal(err)
	}

	// Used every second until just before RefreshAhead of the shortest
	// lifetime: no reload.
	start := clock.Load()
	for clock.Load()-start < int64(float64(DefaultTTL)*0.9*RefreshAhead*0.99)-int64(time.Second) {
		clock.Add(int64(time.Second))
		if _, st := c.Verify(ctx, k.Secret); st != Valid {
			t.Fatal("refused before its entry's end")
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n, r := cs.lookups.Load(), c.Stats().Reloads; n != 1 || r != 0 {
		t.Fatalf("%d lookups and %d reloads before the refresh point, want 1 and 0", n, r)
	}

	// After it: still answered from the cache while the reload runs (held
	// here until every request was answered), and reloaded once.
	clock.Store(time.Now().Add(DefaultTTL * 8 / 10).UnixNano())
	hold := cs.holdOn()
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, st := c.Verify(ctx, k.Secret); st != Valid {
				t.Error("a cached key was refused while its reload ran")
			}
		})
	}
	wg.Wait()
	select {
	case release := <-hold:
		cs.holdOff()
		close(release)
	case <-time.After(5 * time.Second):
		t.Fatal("no reload started")
	}
	// The reload runs in the background: poll (polling is hits, which
	// start no second reload).
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.lru.Wait()
		if _, st := c.Verify(ctx, k.Secret); st == Invalid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reload did not replace the entry: the revoked key is still accepted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// One reload for the twenty hits. (A poll that lands between the
	// reload invalidating the account, on finding the key revoked, and
	// caching that answer misses and asks the store itself: that lookup
	// is not a reload.)
	if r := c.Stats().Reloads; r != 1 {
		t.Fatalf("%d reloads, want 1", r)
	}
}

// A key used every 16 s is seen once more before the refresh point, and
// its next use would come after its entry's end: that use reloads it, so
// the key never costs a request a store lookup, however many lifetimes
// it is used for.
func TestRefreshAheadAtTheKeysPace(t *testing.T) {
	c, cs, _, clock, k := cachedKey(t)
	ctx := context.Background()
	const pace = 16 * time.Second
	// Before every refresh point, and two paces past every lifetime.
	if minRefresh := time.Duration(float64(DefaultTTL) * 0.9 * RefreshAhead); pace >= minRefresh || 2*pace < DefaultTTL {
		t.Fatalf("pace %s does not fall between the refresh point %s and half the lifetime", pace, minRefresh)
	}
	for use := 1; use <= 3; use++ {
		clock.Add(int64(pace))
		if _, st := c.Verify(ctx, k.Secret); st != Valid {
			t.Fatalf("use %d refused", use)
		}
		eventually(t, fmt.Sprintf("use %d did not reload the key", use), func() bool { return c.Stats().Reloaded >= uint64(use) })
		c.lru.Wait()
		if n := cs.lookups.Load() - int64(c.Stats().Reloads); n != 1 {
			t.Fatalf("after use %d: %d lookups on the request path, want only the first", use, n)
		}
		// (The fake clock does not move ristretto's own expiry, so check
		// the lifetime the entry now cached records.)
		h := apikey.Hash(k.Secret)
		if e, ok := c.lru.Get(slot(&h)); !ok || e.staleAt <= clock.Load()+int64(pace) {
			t.Fatalf("after use %d the cached entry would not last until the next use", use)
		}
	}
}

// A reload finds every lookup slot held by misses: it waits for one
// without taking any, runs when one frees up and, if none does within
// reloadSlotWait, leaves its entries to a later hit.
func TestRefreshAheadGivesWayToMisses(t *testing.T) {
	// start caches a key, takes every lookup slot and makes a hit that
	// queues the key for a reload. The slot wait is set before anything
	// is queued (the reloader reads it after receiving from the queue).
	start := func(t *testing.T, slotWait time.Duration) (*Cache, *countingStore, *Entry, func()) {
		c, cs, _, clock, k := cachedKey(t)
		c.reloadSlotWait = slotWait
		ctx := context.Background()
		for range cap(c.lookupSlots) {
			c.lookupSlots <- struct{}{}
		}
		clock.Add(int64(DefaultTTL * 8 / 10))
		e, st := c.Verify(ctx, k.Secret)
		if st != Valid {
			t.Fatal("refused while due for a reload")
		}
		hit := func() {
			if _, st := c.Verify(ctx, k.Secret); st != Valid {
				t.Fatal("refused while due for a reload")
			}
		}
		return c, cs, e, hit
	}
	freeSlots := func(c *Cache) {
		for range cap(c.lookupSlots) {
			<-c.lookupSlots
		}
	}

	t.Run("waits", func(t *testing.T) {
		c, cs, _, _ := start(t, time.Minute)
		time.Sleep(3 * refreshWait)
		if n, r := cs.lookups.Load(), c.Stats().Reloads; n != 1 || r != 0 {
			t.Fatalf("%d store calls and %d reloads with every slot taken, want 1 and 0", n, r)
		}
		freeSlots(c)
		// No hit after this: the reload queued before must run by itself.
		eventually(t, "the waiting reload did not run once a slot was free", func() bool { return c.Stats().Reloaded == 1 })
		if n, r := cs.lookups.Load(), c.Stats().Reloads; n != 2 || r != 1 {
			t.Fatalf("%d store calls and %d reloads, want the first lookup and one reload", n, r)
		}
	})

	t.Run("gives up", func(t *testing.T) {
		c, cs, e, hit := start(t, 50*time.Millisecond)
		eventually(t, "the reload never gave up waiting for a slot", func() bool { return !e.refreshing.Load() })
		if n, r := cs.lookups.Load(), c.Stats().Reloads; n != 1 || r != 0 {
			t.Fatalf("%d store calls and %d reloads with every slot taken, want 1 and 0", n, r)
		}
		freeSlots(c)
		hit() // queues it again
		eventually(t, "a hit after the reload gave up did not queue it again", func() bool { return c.Stats().Reloaded == 1 })
	})
}

// A reload whose query was under way when the key's account was
// invalidated (here: the key revoked through the Manager, as the admin API
// does) must not put what it read back: the next request asks the store
// and is refused.
func TestReloadRacingRevocation(t *testing.T) {
	c, cs, m, clock, k := cachedKey(t)
	ctx := context.Background()
	clock.Store(time.Now().Add(DefaultTTL * 8 / 10).UnixNano())
	hold := cs.holdOn()
	if _, st := c.Verify(ctx, k.Secret); st != Valid {
		t.Fatal("refused while due for a reload")
	}
	var release chan struct{}
	select {
	case release = <-hold: // the reload has read the key, still valid
	case <-time.After(5 * time.Second):
		t.Fatal("no reload started")
	}
	cs.holdOff()
	if _, err := m.Revoke(ctx, "a1", k.ID); err != nil {
		t.Fatal(err)
	}
	close(release)
	eventually(t, "the reload did not finish", func() bool { return c.Stats().Reloaded >= 1 })
	c.lru.Wait()
	if _, st := c.Verify(ctx, k.Secret); st != Invalid {
		t.Fatal("a reload that read the key before its revocation put it back")
	}
}

// Keys due for a reload are reloaded together: 300 keys cost two store
// queries, not 300. A key revoked behind the cache's back is refused
// once its reload ran, the others keep working, and a key whose use was
// recorded is not written again because its entry was replaced.
func TestReloadsAreBatched(t *testing.T) {
	c, cs, m := setup(t)
	ctx := context.Background()
	clock := setClock(c)
	secrets := make([]string, 300)
	var revokedID string
	for i := range secrets {
		// The last key has an account of its own: finding a key revoked
		// invalidates its whole account, as a miss's lookup does.
		account := "a1"
		if i == len(secrets)-1 {
			account = "a2"
		}
		k := create(t, m, account)
		secrets[i], revokedID = k.Secret, k.ID
		e, st := c.Verify(ctx, k.Secret)
		if st != Valid {
			t.Fatal("refused")
		}
		c.Touch(e)
	}
	c.lru.Wait()
	if err := c.FlushTouched(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cs.Store.RevokeKey(ctx, "a2", revokedID); err != nil {
		t.Fatal(err)
	}
	before := cs.lookups.Load()

	clock.Store(time.Now().Add(DefaultTTL * 8 / 10).UnixNano())
	for _, s := range secrets {
		if _, st := c.Verify(ctx, s); st != Valid {
			t.Fatal("a cached key was refused while due for a reload")
		}
	}
	eventually(t, "not every key was reloaded", func() bool { return c.Stats().Reloaded >= uint64(len(secrets)) })
	c.lru.Wait()
	// Two full batches' worth of keys; a slow machine may split them
	// further, but never into anything like one query per key.
	st := c.Stats()
	if st.Reloads < 2 || st.Reloads > 6 || cs.lookups.Load()-before != int64(st.Reloads) {
		t.Errorf("%d reload queries (%d store calls) for %d keys, want 2 (at most 6)", st.Reloads, cs.lookups.Load()-before, len(secrets))
	}
	for i, s := range secrets {
		e, status := c.Verify(ctx, s)
		if i == len(secrets)-1 {
			if status != Invalid {
				t.Error("the key revoked in the store is still accepted after its reload")
			}
			continue
		}
		if status != Valid {
			t.Fatalf("key %d refused after its reload", i)
		}
		c.Touch(e)
	}
	if n := len(c.touched); n != 0 {
		t.Errorf("%d uses queued for writing again after the reload, want 0", n)
	}
	if n := cs.lookups.Load() - before; n != int64(st.Reloads) {
		t.Errorf("%d store calls, want only the %d reloads", n, st.Reloads)
	}
}
