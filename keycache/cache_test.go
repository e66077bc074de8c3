package keycache

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

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
	c.entries.Wait()
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
	if err := m.SetPlan(context.Background(), testActor, account, "pro"); err != nil {
		t.Fatal(err)
	}
	k, err := m.Create(context.Background(), testActor, account, keys.CreateRequest{Name: "k", Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return k
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
