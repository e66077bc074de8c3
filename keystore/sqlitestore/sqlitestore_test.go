package sqlitestore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/sqlitestore"
	"github.com/spkgate/spkgate/keystore/storetest"
)

func openAt(tb testing.TB, path string) *sqlitestore.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := sqlitestore.Open(ctx, path)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) keystore.Store {
		return openAt(t, filepath.Join(t.TempDir(), "spk.db"))
	})
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "spk.db")
	s := openAt(t, path)
	if _, err := s.CreateKey(context.Background(), storetest.NewKey("acct")); err != nil {
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
	nk := storetest.NewKey("acct")
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
	nk := storetest.NewKey("acct", "monitors:read")
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
			if _, err := stores[i].CreateKey(context.Background(), storetest.NewKey("acct")); err != nil {
				t.Errorf("round %d: CreateKey on store %d: %v", round, i, err)
			}
			stores[i].Close()
		}
	}
}

// TestWritersOfAnotherStoreWait: two stores on one file (as a server and a
// command line tool would be) writing at once must not see SQLITE_BUSY.
func TestWritersOfAnotherStoreWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spk.db")
	a, b := openAt(t, path), openAt(t, path)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 10 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			for j := range 10 {
				nk := storetest.NewKey("acct")
				if _, err := s.CreateKey(ctx, nk); err != nil {
					errs <- err
					continue
				}
				if _, err := s.SetPlan(ctx, "acct", fmt.Sprintf("p%d", j%2)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("write: %v", err)
	}
	list, err := b.ListKeys(ctx, "acct")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 100 {
		t.Errorf("%d keys, want 100", len(list))
	}
}

// helperEnv makes the test binary act as a second process writing to the
// database (see TestSecondProcess).
const helperEnv = "SPK_SQLITESTORE_HELPER_DB"

func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		os.Exit(helperProcess(path))
	}
	os.Exit(m.Run())
}

func helperProcess(path string) int {
	n, _ := strconv.Atoi(os.Getenv(helperEnv + "_N"))
	ctx := context.Background()
	s, err := sqlitestore.Open(ctx, path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 1
	}
	defer s.Close()
	for i := range n {
		nk := storetest.NewKey("acct")
		if _, err := s.CreateKey(ctx, nk); err != nil {
			fmt.Fprintln(os.Stderr, "create:", err)
			return 1
		}
		if _, _, err := s.RevokeKey(ctx, "acct", nk.ID); err != nil {
			fmt.Fprintln(os.Stderr, "revoke:", err)
			return 1
		}
		if _, err := s.SetPlan(ctx, "acct", fmt.Sprintf("plan%d", i%2)); err != nil {
			fmt.Fprintln(os.Stderr, "set plan:", err)
			return 1
		}
	}
	return 0
}

// TestSecondProcess runs writers in two other processes on the same file
// while this one writes too: none may fail with SQLITE_BUSY, and the
// change log must hold every change exactly once.
func TestSecondProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spk.db")
	s := openAt(t, path)
	const n = 50
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var cmds []*exec.Cmd
	for range 2 {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+path, helperEnv+"_N="+strconv.Itoa(n))
		cmd.Stderr = &prefixWriter{t: t}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	ctx := context.Background()
	for range n {
		if _, err := s.CreateKey(ctx, storetest.NewKey("acct")); err != nil {
			t.Errorf("CreateKey while other processes write: %v", err)
		}
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper process: %v", err)
		}
	}
	cs, err := s.Changes(ctx, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[keystore.ChangeKind]int{}
	for _, c := range cs {
		counts[c.Kind]++
	}
	if counts[keystore.ChangeCreated] != 3*n || counts[keystore.ChangeRevoked] != 2*n {
		t.Errorf("changes %v, want %d created and %d revoked", counts, 3*n, 2*n)
	}
	list, err := s.ListKeys(ctx, "acct")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != n {
		t.Errorf("%d active keys, want %d", len(list), n)
	}
}

type prefixWriter struct{ t *testing.T }

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.t.Logf("helper: %s", p)
	return len(p), nil
}

func TestErrorsCarryNoHash(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "spk.db"))
	nk := storetest.NewKey("acct")
	ctx := context.Background()
	if _, err := s.CreateKey(ctx, nk); err != nil {
		t.Fatal(err)
	}
	dup := storetest.NewKey("acct")
	dup.Hash = nk.Hash
	_, err := s.CreateKey(ctx, dup)
	if !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	msg := strings.ToLower(err.Error())
	for _, enc := range []string{fmt.Sprintf("%x", nk.Hash[:]), string(nk.Hash[:])} {
		if strings.Contains(msg, enc) {
			t.Errorf("error message contains the key hash: %q", err)
		}
	}
}

// BenchmarkLookupKey measures the store's cold path (no cache in front):
// one LookupKey by hash in a database of 10,000 keys. For a bigger table
// run, e.g.:
//
//	SPK_BENCH_KEYS=1000000 go test -run '^$' -bench LookupKey ./keystore/sqlitestore
func BenchmarkLookupKey(b *testing.B) {
	s := openAt(b, filepath.Join(b.TempDir(), "spk.db"))
	storetest.BenchmarkLookupKey(b, s)
}

// BenchmarkTouchKeys measures one flush of last-used times (1,000 keys).
func BenchmarkTouchKeys(b *testing.B) {
	s := openAt(b, filepath.Join(b.TempDir(), "spk.db"))
	storetest.BenchmarkTouchKeys(b, s)
}
