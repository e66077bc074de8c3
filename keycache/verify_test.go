package keycache

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/keys"
)

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
	c.entries.Wait()
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
	c.entries.Wait() // the cache admits entries asynchronously
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
	if _, err := m.Revoke(ctx, testActor, "a1", k.ID); err != nil {
		t.Fatal(err)
	}
	cs.holdOff()
	close(release)
	// ...and the stale answer must not be used or cached.
	if st := <-done; st != Invalid {
		t.Fatalf("in-flight lookup returned %v after the revocation", st)
	}
	c.entries.Wait()
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
	c2.entries.Wait()
	if err := m1.SetPlan(ctx, testActor, "a1", "free"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { e, _ := c2.Verify(ctx, k.Secret); return e != nil && e.Plan == "free" })
	if _, err := m1.Revoke(ctx, testActor, "", k.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, st := c2.Verify(ctx, k.Secret); return st == Invalid })
}

func TestExpiry(t *testing.T) {
	c, _, m := setup(t)
	ctx := context.Background()
	m.SetPlan(ctx, testActor, "a1", "pro")
	exp := time.Now().Add(time.Hour)
	k, err := m.Create(ctx, testActor, "a1", keys.CreateRequest{Name: "x", ExpiresAt: &exp})
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
	k, err := m.Create(ctx, testActor, "a1", keys.CreateRequest{Name: "x", ExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return exp.Add(time.Second) }
	before := cs.lookups.Load()
	for range 3 {
		if _, st := c.Verify(ctx, k.Secret); st != Invalid {
			t.Fatalf("expired key: status %v", st)
		}
		c.entries.Wait()
	}
	if n := cs.lookups.Load() - before; n != 1 {
		t.Errorf("%d lookups for three uses of an expired key, want 1 (then cached)", n)
	}
	c.entries.Clear()
	if _, st := c.VerifyKnown(ctx, k.Secret); st != Invalid {
		t.Fatalf("VerifyKnown of an expired key: status %v", st)
	}
	if n := cs.lookups.Load() - before; n != 1 {
		t.Errorf("VerifyKnown looked up an expired key (%d lookups): it was remembered as valid", n)
	}
}

func TestVerifyCachedDoesNotAllocate(t *testing.T) {
	c, _, m := setup(t)
	k := create(t, m, "a1")
	ctx := context.Background()
	c.Verify(ctx, k.Secret)
	c.entries.Wait()
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
	c.entries.Wait()
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
	if _, err := m.Revoke(ctx, testActor, "a1", k.ID); err != nil {
		t.Fatal(err)
	}
	if _, st := c.VerifyKnown(ctx, k.Secret); st != Invalid {
		t.Fatal("revoked key accepted")
	}
}
