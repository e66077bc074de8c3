package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// revokeTests: revoking one key or every key of an account.
var revokeTests = []test{
	{"Revoke", testRevoke},
	{"RevokeAccountKeys", testRevokeAccountKeys},
}

func testRevoke(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	nk := CreateKeyParams(acct, "monitors:write")
	create(t, s, nk)
	other := CreateKeyParams(acct)
	create(t, s, other)
	after, err := s.LastChange(ctx)
	if err != nil {
		t.Fatalf("LastChange: %v", err)
	}

	before := time.Now().Add(-time.Second)
	k, h, err := s.RevokeKey(ctx, acct, nk.ID)
	if err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	if h != nk.Hash {
		t.Errorf("RevokeKey returned a different hash")
	}
	if k.ID != nk.ID || k.AccountID != acct {
		t.Errorf("RevokeKey returned key %q of %q", k.ID, k.AccountID)
	}
	if k.RevokedAt == nil || k.RevokedAt.Before(before) || k.RevokedAt.Location() != time.UTC {
		t.Errorf("RevokeKey RevokedAt = %v, want about now, in UTC", k.RevokedAt)
	}

	cred, err := s.LookupKey(ctx, nk.Hash)
	if err != nil {
		t.Fatalf("LookupKey(revoked): %v (a revoked key is still returned)", err)
	}
	if cred.Key.RevokedAt == nil || !cred.Key.RevokedAt.Equal(*k.RevokedAt) {
		t.Errorf("looked up RevokedAt = %v, want %v", cred.Key.RevokedAt, k.RevokedAt)
	}
	if cred.Usable(time.Now()) {
		t.Errorf("revoked credential is usable")
	}

	_, _, err = s.RevokeKey(ctx, acct, nk.ID)
	wantErr(t, "RevokeKey(already revoked)", err, keystore.ErrNotFound)
	_, _, err = s.RevokeKey(ctx, acct, NewID())
	wantErr(t, "RevokeKey(unknown)", err, keystore.ErrNotFound)

	list, err := s.ListKeys(ctx, acct)
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	if len(list) != 1 || list[0].ID != other.ID {
		t.Errorf("ListKeys after revocation = %d keys, want only the other key", len(list))
	}

	// An empty account id revokes any account's key (operator use).
	_, h2, err := s.RevokeKey(ctx, "", other.ID)
	if err != nil {
		t.Fatalf("RevokeKey(\"\", id): %v", err)
	}
	if h2 != other.Hash {
		t.Errorf("RevokeKey(\"\") returned a different hash")
	}

	cs, err := s.Changes(ctx, after, 100)
	if err != nil {
		t.Fatalf("Changes: %v", err)
	}
	if len(cs) != 2 {
		t.Fatalf("revocations recorded %d changes, want 2: %+v", len(cs), cs)
	}
	for i, want := range []keystore.Hash{nk.Hash, other.Hash} {
		c := cs[i]
		if c.Kind != keystore.ChangeRevoked || c.Hash != want || c.AccountID != acct {
			t.Errorf("change %d = {%s %q}, want a revocation of the key of %q", i, c.Kind, c.AccountID, acct)
		}
	}
}

// testRevokeAccountKeys: every active key of the account is revoked, with
// one ChangeRevoked per key, and nothing of another account.
func testRevokeAccountKeys(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct, other := newAccount(), newAccount()
	const n = 250
	active := map[keystore.Hash]string{}
	for range n {
		nk := CreateKeyParams(acct)
		create(t, s, nk)
		active[nk.Hash] = nk.ID
	}
	gone := CreateKeyParams(acct)
	create(t, s, gone)
	if _, _, err := s.RevokeKey(ctx, acct, gone.ID); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	kept := CreateKeyParams(other)
	create(t, s, kept)
	after, err := s.LastChange(ctx)
	if err != nil {
		t.Fatalf("LastChange: %v", err)
	}

	got, err := s.RevokeAccountKeys(ctx, acct)
	if err != nil {
		t.Fatalf("RevokeAccountKeys: %v", err)
	}
	if got != n {
		t.Errorf("RevokeAccountKeys = %d, want %d (the already revoked key does not count)", got, n)
	}
	for h := range active {
		cred, err := s.LookupKey(ctx, h)
		if err != nil {
			t.Fatalf("LookupKey: %v", err)
		}
		if cred.Key.RevokedAt == nil || cred.Usable(time.Now()) {
			t.Fatalf("key %s still usable after RevokeAccountKeys", cred.Key.ID)
		}
	}
	if list, err := s.ListKeys(ctx, acct); err != nil || len(list) != 0 {
		t.Errorf("ListKeys after RevokeAccountKeys = %d keys, %v; want none", len(list), err)
	}
	if cred, err := s.LookupKey(ctx, kept.Hash); err != nil || cred.Key.RevokedAt != nil {
		t.Errorf("another account's key: %v, revoked %v", err, cred.Key.RevokedAt)
	}

	cs, err := s.Changes(ctx, after, 2*n)
	if err != nil {
		t.Fatalf("Changes: %v", err)
	}
	if len(cs) != n {
		t.Fatalf("RevokeAccountKeys recorded %d changes, want %d", len(cs), n)
	}
	for _, c := range cs {
		if _, ok := active[c.Hash]; !ok || c.Kind != keystore.ChangeRevoked || c.AccountID != acct {
			t.Fatalf("change {%s %q}: want a revocation of one of the account's active keys", c.Kind, c.AccountID)
		}
		delete(active, c.Hash)
	}

	// Nothing left to revoke: nothing revoked, nothing recorded.
	last, _ := s.LastChange(ctx)
	if got, err := s.RevokeAccountKeys(ctx, acct); err != nil || got != 0 {
		t.Errorf("second RevokeAccountKeys = %d, %v; want 0, nil", got, err)
	}
	if got, err := s.RevokeAccountKeys(ctx, newAccount()); err != nil || got != 0 {
		t.Errorf("RevokeAccountKeys(unknown account) = %d, %v; want 0, nil", got, err)
	}
	if now, _ := s.LastChange(ctx); now != last {
		t.Errorf("revoking nothing recorded changes (%d -> %d)", last, now)
	}
	if _, err := s.RevokeAccountKeys(ctx, ""); err == nil || errors.Is(err, keystore.ErrUnavailable) {
		t.Errorf("RevokeAccountKeys(\"\") = %v, want a validation error", err)
	}
}
