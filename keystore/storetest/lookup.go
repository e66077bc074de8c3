package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// lookupTests: what the gateway reads on a request: a key by its hash, alone or in batches.
var lookupTests = []test{
	{"LookupUnknown", testLookupUnknown},
	{"LookupKeys", testLookupKeys},
	{"Expiry", testExpiry},
	{"CredentialUsable", testCredentialUsable},
}

func testLookupUnknown(t *testing.T, s keystore.Store) {
	_, err := s.LookupKey(ctxFor(t), NewHash())
	wantErr(t, "LookupKey(unknown)", err, keystore.ErrNotFound)
	if errors.Is(err, keystore.ErrUnavailable) {
		t.Errorf("unknown key also reported as unavailable: %v", err)
	}
}

// LookupKeys answers for many hashes what LookupKey answers for each:
// revoked keys included with their revocation, plans included, unknown
// hashes absent; nothing for an empty batch, and an error for one over
// MaxLookupBatch.
func testLookupKeys(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	a1, a2 := newAccount(), newAccount()
	if _, err := s.SetPlan(ctx, a1, "business"); err != nil {
		t.Fatal(err)
	}
	k1, k2, k3 := CreateKeyParams(a1, "monitors:read"), CreateKeyParams(a1), CreateKeyParams(a2, "incidents:write")
	for _, nk := range []keystore.CreateKeyParams{k1, k2, k3} {
		create(t, s, nk)
	}
	if _, _, err := s.RevokeKey(ctx, a1, k2.ID); err != nil {
		t.Fatal(err)
	}
	unknown := NewHash()
	got, err := s.LookupKeys(ctx, []keystore.Hash{k1.Hash, k2.Hash, unknown, k3.Hash})
	if err != nil {
		t.Fatalf("LookupKeys: %v", err)
	}
	if len(got) != 3 {
		t.Fatalf("LookupKeys found %d keys, want 3", len(got))
	}
	if _, ok := got[unknown]; ok {
		t.Error("an unknown hash was found")
	}
	for _, nk := range []keystore.CreateKeyParams{k1, k2, k3} {
		one, err := s.LookupKey(ctx, nk.Hash)
		if err != nil {
			t.Fatal(err)
		}
		many := got[nk.Hash]
		checkCredential(t, many, nk)
		if many.Plan != one.Plan || (many.Key.RevokedAt == nil) != (one.Key.RevokedAt == nil) {
			t.Errorf("key %s: LookupKeys says plan %q revoked %v, LookupKey plan %q revoked %v",
				nk.ID, many.Plan, many.Key.RevokedAt, one.Plan, one.Key.RevokedAt)
		}
	}
	if got[k1.Hash].Plan != "business" || got[k2.Hash].Key.RevokedAt == nil {
		t.Errorf("plan %q, revoked %v", got[k1.Hash].Plan, got[k2.Hash].Key.RevokedAt)
	}
	if empty, err := s.LookupKeys(ctx, nil); err != nil || len(empty) != 0 {
		t.Errorf("LookupKeys(nil) = %v, %v; want nothing", empty, err)
	}
	_, err = s.LookupKeys(ctx, make([]keystore.Hash, keystore.MaxLookupBatch+1))
	if err == nil || errors.Is(err, keystore.ErrUnavailable) {
		t.Errorf("LookupKeys of %d hashes: err = %v, want a validation error", keystore.MaxLookupBatch+1, err)
	}
}

func testExpiry(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	past := time.Now().Add(-time.Minute)
	future := time.Date(2099, 12, 31, 23, 59, 59, 123_456_789, time.UTC)
	for _, tc := range []struct {
		exp    time.Time
		usable bool
	}{{past, false}, {future, true}} {
		nk := CreateKeyParams(acct)
		nk.ExpiresAt = &tc.exp
		created := create(t, s, nk)
		checkTime(t, "CreateKey expires_at", created.ExpiresAt, microPtr(&tc.exp))
		cred, err := s.LookupKey(ctx, nk.Hash)
		if err != nil {
			t.Fatalf("LookupKey: %v (expired keys are still returned)", err)
		}
		checkTime(t, "LookupKey expires_at", cred.Key.ExpiresAt, microPtr(&tc.exp))
		if got := cred.Usable(time.Now()); got != tc.usable {
			t.Errorf("expiring at %v: Usable = %v, want %v", tc.exp, got, tc.usable)
		}
	}
}

func testCredentialUsable(t *testing.T, s keystore.Store) {
	now := time.Now()
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	cases := []struct {
		name string
		key  keystore.Key
		want bool
	}{
		{"active", keystore.Key{}, true},
		{"expires later", keystore.Key{ExpiresAt: at(time.Second)}, true},
		{"expires now", keystore.Key{ExpiresAt: at(0)}, false},
		{"expired", keystore.Key{ExpiresAt: at(-time.Second)}, false},
		{"revoked", keystore.Key{RevokedAt: at(-time.Hour)}, false},
		{"revoked in the future", keystore.Key{RevokedAt: at(time.Hour)}, false},
		{"revoked and not expired", keystore.Key{RevokedAt: at(-time.Hour), ExpiresAt: at(time.Hour)}, false},
	}
	for _, tc := range cases {
		c := keystore.Credential{Key: tc.key}
		if got := c.Usable(now); got != tc.want {
			t.Errorf("%s: Usable = %v, want %v", tc.name, got, tc.want)
		}
	}
	_ = s
}
