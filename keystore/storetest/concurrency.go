package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// concurrencyTests: writers racing each other on the same keys.
var concurrencyTests = []test{
	{"RevokeConcurrent", testRevokeConcurrent},
	{"RevokeAccountKeysConcurrent", testRevokeAccountKeysConcurrent},
	{"ConcurrentWriters", testConcurrentWriters},
}

// testRevokeConcurrent checks that the revocation and its change row are one
// atomic step: of many simultaneous revocations of one key exactly one wins
// and exactly one change is recorded.
func testRevokeConcurrent(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	nk := CreateKeyParams(acct)
	create(t, s, nk)

	const n = 10
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		wins     int
		failures []error
	)
	for range n {
		wg.Go(func() {
			_, _, err := s.RevokeKey(ctx, acct, nk.ID)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, keystore.ErrNotFound):
				failures = append(failures, err)
			}
		})
	}
	wg.Wait()
	for _, err := range failures {
		t.Errorf("concurrent RevokeKey: %v", err)
	}
	if wins != 1 {
		t.Errorf("%d concurrent revocations succeeded, want exactly 1", wins)
	}
	if got := countChanges(changesOf(t, s), keystore.ChangeRevoked); got != 1 {
		t.Errorf("%d revocation changes recorded, want exactly 1", got)
	}
}

// testRevokeAccountKeysConcurrent: single revocations, last-used writes and
// a bulk revocation of the same keys at once neither deadlock nor revoke a
// key twice.
func testRevokeAccountKeysConcurrent(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	const n = 40
	ids := make([]string, n)
	for i := range ids {
		nk := CreateKeyParams(acct)
		create(t, s, nk)
		ids[i] = nk.ID
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []error
	fail := func(err error) {
		mu.Lock()
		failures = append(failures, err)
		mu.Unlock()
	}
	wg.Go(func() {
		if _, err := s.RevokeAccountKeys(ctx, acct); err != nil {
			fail(fmt.Errorf("RevokeAccountKeys: %w", err))
		}
	})
	wg.Go(func() {
		used := map[string]time.Time{}
		for _, id := range ids {
			used[id] = time.Now()
		}
		if err := s.TouchKeys(ctx, used); err != nil {
			fail(fmt.Errorf("TouchKeys: %w", err))
		}
	})
	for i := len(ids) - 1; i >= 0; i-- {
		wg.Go(func() {
			if _, _, err := s.RevokeKey(ctx, acct, ids[i]); err != nil && !errors.Is(err, keystore.ErrNotFound) {
				fail(fmt.Errorf("RevokeKey: %w", err))
			}
		})
	}
	wg.Wait()
	for _, err := range failures {
		t.Error(err)
	}
	perKey := map[keystore.Hash]int{}
	for _, c := range changesOf(t, s) {
		if c.Kind == keystore.ChangeRevoked {
			perKey[c.Hash]++
		}
	}
	if len(perKey) != n {
		t.Errorf("%d keys have a revocation recorded, want %d", len(perKey), n)
	}
	for _, count := range perKey {
		if count != 1 {
			t.Fatalf("a key's revocation was recorded %d times", count)
		}
	}
}

func testConcurrentWriters(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	const writers, perWriter = 20, 5
	var wg sync.WaitGroup
	errs := make(chan error, writers*(perWriter+3))
	for w := range writers {
		wg.Go(func() {
			for range perWriter {
				nk := CreateKeyParams(acct)
				if _, err := s.CreateKey(ctx, nk); err != nil {
					errs <- fmt.Errorf("CreateKey: %w", err)
				}
			}
			plan := fmt.Sprintf("plan-%d", w%3)
			if _, err := s.SetPlan(ctx, acct, plan); err != nil {
				errs <- fmt.Errorf("SetPlan: %w", err)
			}
			nk := CreateKeyParams(acct)
			if _, err := s.CreateKey(ctx, nk); err != nil {
				errs <- fmt.Errorf("CreateKey: %w", err)
				return
			}
			if _, _, err := s.RevokeKey(ctx, acct, nk.ID); err != nil {
				errs <- fmt.Errorf("RevokeKey: %w", err)
			}
			if err := s.TouchKeys(ctx, map[string]time.Time{nk.ID: time.Now()}); err != nil {
				errs <- fmt.Errorf("TouchKeys: %w", err)
			}
			if _, err := s.LookupKey(ctx, nk.Hash); err != nil {
				errs <- fmt.Errorf("LookupKey: %w", err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	list, err := s.ListKeys(ctx, acct)
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	if len(list) != writers*perWriter {
		t.Errorf("ListKeys = %d keys, want %d", len(list), writers*perWriter)
	}
	cs := changesOf(t, s)
	if got, want := countChanges(cs, keystore.ChangeCreated), writers*(perWriter+1); got != want {
		t.Errorf("%d creation changes, want %d", got, want)
	}
	if got, want := countChanges(cs, keystore.ChangeRevoked), writers; got != want {
		t.Errorf("%d revocation changes, want %d", got, want)
	}
	if n := countChanges(cs, keystore.ChangePlan); n < 1 || n > writers {
		t.Errorf("%d plan changes, want between 1 and %d", n, writers)
	}
	seen := make(map[int64]bool)
	for i, c := range cs {
		if seen[c.Seq] || (i > 0 && c.Seq <= cs[i-1].Seq) {
			t.Fatalf("change seqs are not strictly increasing at %d", i)
		}
		seen[c.Seq] = true
	}
}
