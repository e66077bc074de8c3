package keycache

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spkgate/spkgate/apikey"
)

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
		c.entries.Wait()
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

// A key used every 320 s is seen once more before the refresh point, and
// its next use would come after its entry's end: that use reloads it, so
// the key never costs a request a store lookup, however many lifetimes
// it is used for.
func TestRefreshAheadAtTheKeysPace(t *testing.T) {
	c, cs, _, clock, k := cachedKey(t)
	ctx := context.Background()
	const pace = 320 * time.Second
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
		c.entries.Wait()
		if n := cs.lookups.Load() - int64(c.Stats().Reloads); n != 1 {
			t.Fatalf("after use %d: %d lookups on the request path, want only the first", use, n)
		}
		// (The fake clock does not move ristretto's own expiry, so check
		// the lifetime the entry now cached records.)
		h := apikey.Hash(k.Secret)
		if e, ok := c.entries.Get(slot(&h)); !ok || e.staleAt <= clock.Load()+int64(pace) {
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
	if _, err := m.Revoke(ctx, testActor, "a1", k.ID); err != nil {
		t.Fatal(err)
	}
	close(release)
	eventually(t, "the reload did not finish", func() bool { return c.Stats().Reloaded >= 1 })
	c.entries.Wait()
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
	c.entries.Wait()
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
	c.entries.Wait()
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

// While the cache can prove it is current (here: a heartbeat or log read
// every second, as Follow records them), a key in use is never reloaded,
// however long it is used within its TTL: reloads come from changes, not
// from a timer. The old 30 s lifetime and the 5 s trust bound pass many
// times over.
func TestNoTimerReloadWhileCurrent(t *testing.T) {
	c, cs, _, clock, k := cachedKey(t)
	ctx := context.Background()
	start := clock.Load()
	for clock.Load()-start < int64(5*time.Minute) {
		clock.Add(int64(time.Second))
		c.markSynced(clock.Load(), DefaultMaxStale)
		if _, st := c.Verify(ctx, k.Secret); st != Valid {
			t.Fatalf("refused %s after it was cached", time.Duration(clock.Load()-start))
		}
	}
	c.markSynced(clock.Load(), DefaultMaxStale)
	if n, r := cs.lookups.Load(), c.Stats().Reloads; n != 1 || r != 0 {
		t.Fatalf("%d store calls and %d reloads for five minutes of use while current, want the first lookup only", n, r)
	}
}

// While the cache cannot prove it is current, entries in use are reloaded
// in the background before the trust bound ends (the store still answers
// lookups here), so the key keeps working without a lookup on the request
// path; each reload moves its entry's bound on.
func TestReloadsWhileNotCurrent(t *testing.T) {
	c, cs, _, clock, k := cachedKey(t)
	ctx := context.Background()
	c.markSynced(clock.Load(), DefaultMaxStale) // the last proof; none after it
	for i := range 4 {
		// Past RefreshAhead of the bound, as measured from the last proof
		// or the last reload, whichever is later.
		clock.Add(int64(float64(DefaultMaxStale)*RefreshAhead) + int64(100*time.Millisecond))
		if _, st := c.Verify(ctx, k.Secret); st != Valid {
			t.Fatalf("round %d: refused within the bound", i)
		}
		eventually(t, fmt.Sprintf("round %d: no reload while not current", i), func() bool { return c.Stats().Reloaded >= uint64(i+1) })
		c.Wait()
	}
	// Four bounds' worth of time passed since the last proof: the entry
	// is still trusted because every reload renewed it, and no request
	// waited for a lookup.
	if _, st := c.Cached(k.Secret); st != Valid {
		t.Fatal("reloaded entry not trusted")
	}
	if n := cs.lookups.Load() - int64(c.Stats().Reloads); n != 1 {
		t.Fatalf("%d lookups on the request path, want only the first", n)
	}
}
