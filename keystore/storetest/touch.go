package storetest

import (
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// touchTests: last-used times, written in batches.
var touchTests = []test{
	{"TouchKeys", testTouchKeys},
}

func testTouchKeys(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	k1, k2, k3 := CreateKeyParams(acct), CreateKeyParams(acct), CreateKeyParams(acct)
	for _, k := range []keystore.CreateKeyParams{k1, k2, k3} {
		create(t, s, k)
	}
	if err := s.TouchKeys(ctx, nil); err != nil {
		t.Fatalf("TouchKeys(nil): %v", err)
	}

	t1 := time.Now().Add(-time.Minute)
	t2 := time.Now()
	if err := s.TouchKeys(ctx, map[string]time.Time{k1.ID: t1, k2.ID: t2, NewID(): t2}); err != nil {
		t.Fatalf("TouchKeys: %v", err)
	}
	check := func(nk keystore.CreateKeyParams, want *time.Time) {
		t.Helper()
		k, err := s.GetKey(ctx, "", nk.ID)
		if err != nil {
			t.Fatalf("GetKey: %v", err)
		}
		checkTime(t, "last_used_at", k.LastUsedAt, microPtr(want))
	}
	check(k1, &t1)
	check(k2, &t2)
	check(k3, nil)

	// An older batch (e.g. from a slower instance) does not move it back.
	if err := s.TouchKeys(ctx, map[string]time.Time{k1.ID: t2, k2.ID: t1}); err != nil {
		t.Fatalf("TouchKeys: %v", err)
	}
	check(k1, &t2)
	check(k2, &t2)

	list, err := s.ListKeys(ctx, acct)
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	for _, k := range list {
		if k.ID == k1.ID {
			checkTime(t, "listed last_used_at", k.LastUsedAt, microPtr(&t2))
		}
	}
	if n := len(changesOf(t, s)); n != 3 {
		t.Errorf("TouchKeys recorded changes: %d, want only the 3 creations", n)
	}
}
