package pgstore_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spkgate/spkgate/internal/pgtest"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/pgstore"
	"github.com/spkgate/spkgate/keystore/storetest"
)

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
		if _, err := s.CreateKey(ctx, storetest.CreateKeyParams("acct")); err != nil {
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
	nk := storetest.CreateKeyParams("acct")
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
