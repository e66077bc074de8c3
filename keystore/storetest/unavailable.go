package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// unavailableTests: a store that cannot answer: canceled contexts, a closed store.
var unavailableTests = []test{
	{"CanceledContext", testCanceledContext},
	{"Closed", testClosed},
}

func testCanceledContext(t *testing.T, s keystore.Store) {
	acct := newAccount()
	nk := CreateKeyParams(acct)
	create(t, s, nk)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.LookupKey(ctx, nk.Hash)
	if err == nil {
		t.Fatalf("LookupKey with a canceled context succeeded")
	}
	if errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("LookupKey with a canceled context = %v; must not look like an unknown key", err)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("LookupKey with a canceled context = %v, want it to wrap context.Canceled", err)
	}

	// A revocation that cannot run leaves neither the revocation nor its change.
	if _, _, err := s.RevokeKey(ctx, acct, nk.ID); err == nil {
		t.Fatalf("RevokeKey with a canceled context succeeded")
	}
	cred, err := s.LookupKey(ctxFor(t), nk.Hash)
	if err != nil {
		t.Fatalf("LookupKey: %v", err)
	}
	if cred.Key.RevokedAt != nil {
		t.Errorf("a canceled revocation revoked the key")
	}
	if n := countChanges(changesOf(t, s), keystore.ChangeRevoked); n != 0 {
		t.Errorf("a canceled revocation recorded %d changes", n)
	}
}

func testClosed(t *testing.T, s keystore.Store) {
	acct := newAccount()
	nk := CreateKeyParams(acct)
	create(t, s, nk)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ctx := ctxFor(t)
	calls := map[string]func() error{
		"LookupKey": func() error { _, err := s.LookupKey(ctx, nk.Hash); return err },
		"LookupKeys": func() error {
			_, err := s.LookupKeys(ctx, []keystore.Hash{nk.Hash})
			return err
		},
		"CreateKey": func() error { _, err := s.CreateKey(ctx, CreateKeyParams(acct)); return err },
		"ListKeys":  func() error { _, err := s.ListKeys(ctx, acct); return err },
		"GetKey":    func() error { _, err := s.GetKey(ctx, acct, nk.ID); return err },
		"RevokeKey": func() error { _, _, err := s.RevokeKey(ctx, acct, nk.ID); return err },
		"RevokeAccountKeys": func() error {
			_, err := s.RevokeAccountKeys(ctx, acct)
			return err
		},
		"SetPlan":   func() error { _, err := s.SetPlan(ctx, acct, "pro"); return err },
		"GetPlan":   func() error { _, err := s.GetPlan(ctx, acct); return err },
		"TouchKeys": func() error { return s.TouchKeys(ctx, map[string]time.Time{nk.ID: time.Now()}) },
		"Changes":   func() error { _, err := s.Changes(ctx, 0, 10); return err },
		"LastChange": func() error {
			_, err := s.LastChange(ctx)
			return err
		},
		"PruneChanges": func() error { return s.PruneChanges(ctx, time.Now()) },
		"Ping":         func() error { return s.Ping(ctx) },
	}
	for name, call := range calls {
		err := call()
		if !errors.Is(err, keystore.ErrUnavailable) {
			t.Errorf("%s after Close: err = %v, want ErrUnavailable", name, err)
		}
	}
}
