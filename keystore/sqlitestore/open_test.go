package sqlitestore_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/spkgate/spkgate/keystore/sqlitestore"
	"github.com/spkgate/spkgate/keystore/storetest"
)

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "spk.db")
	s := openAt(t, path)
	if _, err := s.CreateKey(context.Background(), storetest.CreateKeyParams("acct")); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o700 {
		t.Errorf("directory mode %o, want 700", perm)
	}
	for _, name := range []string{"spk.db", "spk.db-wal"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if perm := st.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s mode %o, want no group or other access", name, perm)
		}
	}
}

func TestOpenRejectsNonFiles(t *testing.T) {
	for _, p := range []string{"", ":memory:", "file::memory:?cache=shared"} {
		if s, err := sqlitestore.Open(context.Background(), p); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded, want an error", p)
		}
	}
}

func TestPathWithURICharacters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "we?ird#na%20me.db")
	s := openAt(t, path)
	nk := storetest.CreateKeyParams("acct")
	if _, err := s.CreateKey(context.Background(), nk); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at the given path: %v", err)
	}
}

// TestReopen checks that migrations are idempotent and data survives.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spk.db")
	ctx := context.Background()
	nk := storetest.CreateKeyParams("acct", "monitors:read")
	s := openAt(t, path)
	if _, err := s.CreateKey(ctx, nk); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if _, err := s.SetPlan(ctx, "acct", "pro"); err != nil {
		t.Fatalf("SetPlan: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for range 2 {
		s := openAt(t, path)
		cred, err := s.LookupKey(ctx, nk.Hash)
		if err != nil {
			t.Fatalf("LookupKey after reopen: %v", err)
		}
		if cred.Plan != "pro" || cred.Key.ID != nk.ID {
			t.Errorf("after reopen: plan %q id %q", cred.Plan, cred.Key.ID)
		}
		s.Close()
	}
}

// TestConcurrentOpen opens one new file from several goroutines at once,
// as instances started together would: each must come up, and the
// migrations must be applied once. Switching a new file to WAL is refused
// at once (no busy handler) while another connection reads it, so this
// is repeated on fresh files to meet that window.
func TestConcurrentOpen(t *testing.T) {
	const openers = 8
	for round := range 25 {
		path := filepath.Join(t.TempDir(), "spk.db")
		var wg sync.WaitGroup
		stores := make([]*sqlitestore.Store, openers)
		errs := make([]error, openers)
		for i := range stores {
			wg.Go(func() { stores[i], errs[i] = sqlitestore.Open(context.Background(), path) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d: Open %d: %v", round, i, err)
				continue
			}
			if _, err := stores[i].CreateKey(context.Background(), storetest.CreateKeyParams("acct")); err != nil {
				t.Errorf("round %d: CreateKey on store %d: %v", round, i, err)
			}
			stores[i].Close()
		}
	}
}
