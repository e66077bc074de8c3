package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spkgate/spkgate/internal/pgtest"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/pgstore"
	"github.com/spkgate/spkgate/keystore/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func open(tb testing.TB, dsn string) *pgstore.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := pgstore.Open(ctx, dsn)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) keystore.Store {
		return open(t, pgtest.DSN(t))
	})
}

// TestConcurrentOpen: instances starting at once on an empty database all
// come up (the migrations run once, under the advisory lock).
func TestConcurrentOpen(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	const n = 5
	stores := make([]*pgstore.Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			stores[i], errs[i] = pgstore.Open(ctx, dsn)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
			continue
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	if t.Failed() {
		return
	}
	ctx := context.Background()
	for i, s := range stores {
		if _, err := s.CreateKey(ctx, storetest.NewKey("acct")); err != nil {
			t.Errorf("CreateKey on store %d: %v", i, err)
		}
	}
	list, err := stores[0].ListKeys(ctx, "acct")
	if err != nil || len(list) != n {
		t.Errorf("ListKeys = %d keys, %v; want %d", len(list), err, n)
	}
}

// TestReopen: migrations are idempotent and data survives.
func TestReopen(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	ctx := context.Background()
	nk := storetest.NewKey("acct")
	s := open(t, dsn)
	if _, err := s.CreateKey(ctx, nk); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := open(t, dsn)
	if _, err := s2.LookupKey(ctx, nk.Hash); err != nil {
		t.Fatalf("LookupKey after reopen: %v", err)
	}
}

// TestChangesVisibleInOrder checks what a change-log follower relies on:
// a reader never sees a change while an earlier seq is still uncommitted.
func TestChangesVisibleInOrder(t *testing.T) {
	t.Parallel()
	s := open(t, pgtest.DSN(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const writers, each = 8, 15
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				nk := storetest.NewKey("acct")
				if _, err := s.CreateKey(ctx, nk); err != nil {
					t.Errorf("CreateKey: %v", err)
					return
				}
				if _, _, err := s.RevokeKey(ctx, "acct", nk.ID); err != nil {
					t.Errorf("RevokeKey: %v", err)
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()

	var after int64
	seen := 0
	follow := func() {
		cs, err := s.Changes(ctx, after, 1000)
		if err != nil {
			t.Fatalf("Changes: %v", err)
		}
		for _, c := range cs {
			if c.Seq <= after {
				t.Fatalf("seq %d after %d", c.Seq, after)
			}
			after = c.Seq
			seen++
		}
	}
	for {
		select {
		case <-done:
			follow()
			if want := writers * each * 2; seen != want {
				t.Errorf("a follower saw %d changes, want %d: some became visible after a later seq", seen, want)
			}
			return
		default:
			follow()
		}
	}
}

// withPassword returns dsn with a password, so that the test can check
// that error messages never contain it. The throwaway cluster trusts every
// local connection, so any password works.
func withPassword(t *testing.T, dsn, pw string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		t.Skip("needs a postgres:// URL")
	}
	u.User = url.UserPassword(u.User.Username(), pw)
	return u.String()
}

// TestServerStopped: with the server down, LookupKey fails fast with an
// error matching keystore.ErrUnavailable that does not leak the password;
// once the server is back the same store works again.
func TestServerStopped(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t)
	const pw = "s3cret-Pa55word"
	dsn := withPassword(t, srv.DSN(t), pw)
	s := open(t, dsn)
	ctx := context.Background()
	nk := storetest.NewKey("acct")
	if _, err := s.CreateKey(ctx, nk); err != nil {
		t.Fatal(err)
	}

	srv.Stop(t)
	for _, call := range []struct {
		name string
		fn   func() error
	}{
		{"LookupKey", func() error { _, err := s.LookupKey(ctx, nk.Hash); return err }},
		{"CreateKey", func() error { _, err := s.CreateKey(ctx, storetest.NewKey("acct")); return err }},
		{"RevokeKey", func() error { _, _, err := s.RevokeKey(ctx, "acct", nk.ID); return err }},
		{"Changes", func() error { _, err := s.Changes(ctx, 0, 10); return err }},
		{"Ping", func() error { return s.Ping(ctx) }},
	} {
		start := time.Now()
		err := call.fn()
		if !errors.Is(err, keystore.ErrUnavailable) {
			t.Errorf("%s with the server stopped: err = %v, want ErrUnavailable", call.name, err)
			continue
		}
		if errors.Is(err, keystore.ErrNotFound) {
			t.Errorf("%s: an outage looks like an unknown key: %v", call.name, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v to fail, want a fast answer", call.name, d)
		}
		msg := err.Error()
		for _, secret := range []string{pw, dsn, fmt.Sprintf("%x", nk.Hash[:])} {
			if strings.Contains(msg, secret) {
				t.Errorf("%s error %q leaks a secret", call.name, msg)
			}
		}
		t.Logf("%s: %v", call.name, err)
	}

	srv.Start(t)
	deadline := time.Now().Add(15 * time.Second)
	for {
		cred, err := s.LookupKey(ctx, nk.Hash)
		if err == nil {
			if cred.Key.ID != nk.ID {
				t.Errorf("after restart: got key %q", cred.Key.ID)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store did not recover after the server came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The revocation that failed during the outage did not happen.
	cred, err := s.LookupKey(ctx, nk.Hash)
	if err != nil || cred.Key.RevokedAt != nil {
		t.Errorf("after the outage: %v, revoked %v", err, cred.Key.RevokedAt)
	}
}

// TestBackendsTerminated: connections killed under the pool (a failover,
// an operator's pg_terminate_backend) cost at most one failed call.
func TestBackendsTerminated(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t)
	dsn := srv.DSN(t)
	s := open(t, dsn)
	ctx := context.Background()
	nk := storetest.NewKey("acct")
	if _, err := s.CreateKey(ctx, nk); err != nil {
		t.Fatal(err)
	}
	srv.TerminateBackends(t, pgtest.DatabaseName(t, dsn))
	ok := 0
	for range 5 {
		_, err := s.LookupKey(ctx, nk.Hash)
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, keystore.ErrUnavailable):
			t.Errorf("after terminated backends: %v, want ErrUnavailable or success", err)
		}
	}
	if ok < 4 {
		t.Errorf("%d of 5 lookups succeeded after backends were terminated", ok)
	}
}

func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	const pw = "hunter2-xyzzy"
	dsn := "postgres://spk:" + pw + "@127.0.0.1:1/spk?sslmode=disable"
	start := time.Now()
	_, err := pgstore.Open(context.Background(), dsn)
	if !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("Open(unreachable) err = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open(unreachable) took %v", d)
	}
	if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("error %q leaks the connection string", err)
	}
}

func TestOpenBadDSN(t *testing.T) {
	t.Parallel()
	const pw = "hunter2-xyzzy"
	_, err := pgstore.Open(context.Background(), "postgres://spk:"+pw+"@host:notaport/db")
	if err == nil {
		t.Fatal("Open(bad DSN) succeeded")
	}
	if strings.Contains(err.Error(), pw) {
		t.Errorf("error %q leaks the password", err)
	}
}

// BenchmarkLookupKey measures the store's cold path (no cache in front):
// one LookupKey by hash in a database of 10,000 keys, over TCP to a local
// server. For a bigger table run, e.g.:
//
//	SPK_BENCH_KEYS=1000000 go test -run '^$' -bench LookupKey ./keystore/pgstore
//
// (set SPK_TEST_DATABASE_URL to measure against another server).
func BenchmarkLookupKey(b *testing.B) {
	s := open(b, pgtest.DSN(b))
	storetest.BenchmarkLookupKey(b, s)
}

// BenchmarkTouchKeys measures one flush of last-used times (1,000 keys).
func BenchmarkTouchKeys(b *testing.B) {
	s := open(b, pgtest.DSN(b))
	storetest.BenchmarkTouchKeys(b, s)
}
