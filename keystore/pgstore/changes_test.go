package pgstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/spkgate/spkgate/internal/pgtest"
	"github.com/spkgate/spkgate/keystore/storetest"
)

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
				nk := storetest.CreateKeyParams("acct")
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
