package storetest

import (
	"context"
	"crypto/rand"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newAccount() string { return "acct_" + rand.Text()[:12] }

func create(t testing.TB, s keystore.Store, nk keystore.CreateKeyParams) keystore.Key {
	t.Helper()
	k, err := s.CreateKey(ctxFor(t), nk)
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	return k
}

// micro is the precision every backend keeps: times are truncated to it.
func micro(tm time.Time) time.Time { return tm.UTC().Truncate(time.Microsecond) }

func microPtr(tm *time.Time) *time.Time {
	if tm == nil {
		return nil
	}
	v := micro(*tm)
	return &v
}

func checkTime(t testing.TB, what string, got, want *time.Time) {
	t.Helper()
	switch {
	case got == nil && want == nil:
		return
	case got == nil || want == nil:
		t.Errorf("%s = %v, want %v", what, got, want)
		return
	}
	if !got.Equal(*want) {
		t.Errorf("%s = %v, want %v", what, got.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano))
	}
	if got.Location() != time.UTC {
		t.Errorf("%s location = %v, want UTC", what, got.Location())
	}
}

// checkKey compares a stored key with what was created from nk.
func checkKey(t testing.TB, got keystore.Key, nk keystore.CreateKeyParams) {
	t.Helper()
	checkCheckedFields(t, got, nk)
	if got.Name != nk.Name || got.Prefix != nk.Prefix {
		t.Errorf("key name %q prefix %q, want %q %q", got.Name, got.Prefix, nk.Name, nk.Prefix)
	}
	if !nk.CreatedAt.IsZero() {
		want := micro(nk.CreatedAt)
		checkTime(t, "created_at", &got.CreatedAt, &want)
	}
}

// checkCheckedFields checks the fields of a key that the gateway checks,
// the ones a lookup returns (keystore.Credential).
func checkCheckedFields(t testing.TB, got keystore.Key, nk keystore.CreateKeyParams) {
	t.Helper()
	if got.ID != nk.ID || got.AccountID != nk.AccountID {
		t.Errorf("key = {id %q account %q}, want {%q %q}", got.ID, got.AccountID, nk.ID, nk.AccountID)
	}
	if got.Scopes == nil {
		t.Errorf("scopes = nil, want a non-nil slice")
	}
	if !slices.Equal(got.Scopes, nk.Scopes) && (len(got.Scopes) != 0 || len(nk.Scopes) != 0) {
		t.Errorf("scopes = %q, want %q", got.Scopes, nk.Scopes)
	}
	checkTime(t, "expires_at", got.ExpiresAt, microPtr(nk.ExpiresAt))
}

// checkCredential checks what a lookup returns for nk: the fields the
// gateway needs, and nothing else (keystore.Credential).
func checkCredential(t testing.TB, got keystore.Credential, nk keystore.CreateKeyParams) {
	t.Helper()
	k := got.Key
	checkCheckedFields(t, k, nk)
	if k.Name != "" || k.Prefix != "" || !k.CreatedAt.IsZero() || k.LastUsedAt != nil {
		t.Errorf("credential has name %q prefix %q created_at %v last_used_at %v, want them left zero",
			k.Name, k.Prefix, k.CreatedAt, k.LastUsedAt)
	}
}

func wantErr(t testing.TB, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: err = %v, want %v", what, err, target)
	}
}

func changesOf(t testing.TB, s keystore.Store) []keystore.Change {
	t.Helper()
	cs, err := s.Changes(ctxFor(t), 0, 10000)
	if err != nil {
		t.Fatalf("Changes: %v", err)
	}
	return cs
}

func countChanges(cs []keystore.Change, kind keystore.ChangeKind) int {
	n := 0
	for _, c := range cs {
		if c.Kind == kind {
			n++
		}
	}
	return n
}
