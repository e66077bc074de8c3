// Package storetest is the conformance suite that every keystore.Store
// backend must pass. Each backend's tests call Run with a function that
// opens a fresh, empty store; the suite then checks the behaviour that the
// gateway, the console and the admin API rely on, identically for every
// backend.
//
// The package imports only the standard library and keystore, so that a
// backend's tests pull in no other backend's driver.
package storetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// Run runs the conformance suite against the backend that open creates.
// open is called once per subtest and must return a new, empty store; it
// should register the store's Close with t.Cleanup (closing twice must be
// harmless, as one subtest closes its store itself). Subtests run in
// parallel.
func Run(t *testing.T, open func(t *testing.T) keystore.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s keystore.Store)
	}{
		{"CreateAndLookup", testCreateAndLookup},
		{"CreateDefaults", testCreateDefaults},
		{"CreateValidation", testCreateValidation},
		{"LookupUnknown", testLookupUnknown},
		{"LookupKeys", testLookupKeys},
		{"ListKeys", testListKeys},
		{"GetKey", testGetKey},
		{"AccountIsolation", testAccountIsolation},
		{"Conflict", testConflict},
		{"Revoke", testRevoke},
		{"RevokeConcurrent", testRevokeConcurrent},
		{"RevokeAccountKeys", testRevokeAccountKeys},
		{"RevokeAccountKeysConcurrent", testRevokeAccountKeysConcurrent},
		{"Expiry", testExpiry},
		{"CredentialUsable", testCredentialUsable},
		{"Plan", testPlan},
		{"PlanVisibleInLookup", testPlanVisibleInLookup},
		{"ChangesLog", testChangesLog},
		{"ChangesEmpty", testChangesEmpty},
		{"PruneChanges", testPruneChanges},
		{"TouchKeys", testTouchKeys},
		{"ConcurrentWriters", testConcurrentWriters},
		{"Unicode", testUnicode},
		{"CanceledContext", testCanceledContext},
		{"Closed", testClosed},
	}
	tests = append(tests, lifecycleTests...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			tc.fn(t, s)
		})
	}
}

// NewHash returns the SHA-256 of random bytes, as a stand-in for the hash of
// a freshly generated key.
func NewHash() keystore.Hash {
	return sha256.Sum256([]byte(rand.Text()))
}

// NewID returns a random key id of the form "key_...".
func NewID() string {
	return "key_" + rand.Text()
}

// NewKey returns a valid NewKey for account with a random id and hash, the
// given scopes, and a creation time of now.
func NewKey(account string, scopes ...string) keystore.NewKey {
	h := NewHash()
	return keystore.NewKey{
		ID:        NewID(),
		AccountID: account,
		Name:      "test key",
		Prefix:    "spk_" + base64.RawURLEncoding.EncodeToString(h[:3]),
		Hash:      h,
		Scopes:    scopes,
		CreatedAt: time.Now(),
	}
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newAccount() string { return "acct_" + rand.Text()[:12] }

func create(t testing.TB, s keystore.Store, nk keystore.NewKey) keystore.Key {
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
func checkKey(t testing.TB, got keystore.Key, nk keystore.NewKey) {
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
func checkCheckedFields(t testing.TB, got keystore.Key, nk keystore.NewKey) {
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
func checkCredential(t testing.TB, got keystore.Credential, nk keystore.NewKey) {
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

func testCreateAndLookup(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	exp := time.Now().Add(90 * 24 * time.Hour)
	nk := NewKey(acct, "monitors:read", "incidents:write")
	nk.Name = "ci-pipeline"
	nk.ExpiresAt = &exp
	// Nanoseconds must be truncated, not rounded, on every backend.
	nk.CreatedAt = time.Date(2024, 2, 29, 23, 59, 59, 999_999_999, time.FixedZone("X", 3600))

	created, err := s.CreateKey(ctx, nk)
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	checkKey(t, created, nk)
	if created.LastUsedAt != nil || created.RevokedAt != nil {
		t.Errorf("new key has last_used_at %v revoked_at %v, want both nil", created.LastUsedAt, created.RevokedAt)
	}
	wantCreated := time.Date(2024, 2, 29, 22, 59, 59, 999_999_000, time.UTC)
	checkTime(t, "created_at", &created.CreatedAt, &wantCreated)

	cred, err := s.LookupKey(ctx, nk.Hash)
	if err != nil {
		t.Fatalf("LookupKey: %v", err)
	}
	checkCredential(t, cred, nk)
	if cred.Plan != "" {
		t.Errorf("plan = %q for an account without a recorded plan, want \"\"", cred.Plan)
	}
	if !cred.Usable(time.Now()) {
		t.Errorf("new key not usable")
	}

	got, err := s.GetKey(ctx, acct, nk.ID)
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	checkKey(t, got, nk)

	list, err := s.ListKeys(ctx, acct)
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	if len(list) != 1 {
		t.Fatalf("ListKeys returned %d keys, want 1", len(list))
	}
	checkKey(t, list[0], nk)

	cs := changesOf(t, s)
	if len(cs) != 1 || cs[0].Kind != keystore.ChangeCreated || cs[0].Hash != nk.Hash || cs[0].AccountID != acct {
		t.Fatalf("changes after create = %+v, want one %q change for the key", cs, keystore.ChangeCreated)
	}
}

func testCreateDefaults(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	for _, scopes := range [][]string{nil, {}} {
		nk := NewKey(acct)
		nk.Scopes = scopes
		nk.CreatedAt = time.Time{}
		before := time.Now().Add(-time.Second)
		k := create(t, s, nk)
		if k.Scopes == nil || len(k.Scopes) != 0 {
			t.Errorf("CreateKey scopes = %#v, want an empty non-nil slice", k.Scopes)
		}
		if k.CreatedAt.Before(before) || k.CreatedAt.After(time.Now().Add(time.Second)) {
			t.Errorf("zero CreatedAt stored as %v, want about now", k.CreatedAt)
		}
		cred, err := s.LookupKey(ctx, nk.Hash)
		if err != nil {
			t.Fatalf("LookupKey: %v", err)
		}
		if cred.Key.Scopes == nil || len(cred.Key.Scopes) != 0 {
			t.Errorf("looked up scopes = %#v, want an empty non-nil slice", cred.Key.Scopes)
		}
		got, err := s.GetKey(ctx, acct, nk.ID)
		if err != nil {
			t.Fatalf("GetKey: %v", err)
		}
		if !got.CreatedAt.Equal(k.CreatedAt) {
			t.Errorf("stored created_at %v, CreateKey returned %v", got.CreatedAt, k.CreatedAt)
		}
		if cred.Key.ExpiresAt != nil {
			t.Errorf("expires_at = %v, want nil", cred.Key.ExpiresAt)
		}
	}
}

func testCreateValidation(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	cases := map[string]func(*keystore.NewKey){
		"empty id":      func(k *keystore.NewKey) { k.ID = "" },
		"empty account": func(k *keystore.NewKey) { k.AccountID = "" },
		"zero hash":     func(k *keystore.NewKey) { k.Hash = keystore.Hash{} },
	}
	for name, mutate := range cases {
		nk := NewKey(acct)
		mutate(&nk)
		_, err := s.CreateKey(ctx, nk)
		if err == nil {
			t.Errorf("%s: CreateKey succeeded, want a validation error", name)
			continue
		}
		if errors.Is(err, keystore.ErrConflict) || errors.Is(err, keystore.ErrUnavailable) || errors.Is(err, keystore.ErrNotFound) {
			t.Errorf("%s: err = %v, want a validation error, not a sentinel", name, err)
		}
	}
	if cs := changesOf(t, s); len(cs) != 0 {
		t.Errorf("failed creations recorded %d changes", len(cs))
	}
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
	k1, k2, k3 := NewKey(a1, "monitors:read"), NewKey(a1), NewKey(a2, "incidents:write")
	for _, nk := range []keystore.NewKey{k1, k2, k3} {
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
	for _, nk := range []keystore.NewKey{k1, k2, k3} {
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

func testListKeys(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	a, b := newAccount(), newAccount()
	base := time.Now().Add(-time.Hour)
	var ids []string
	for i := range 5 {
		nk := NewKey(a)
		nk.Name = fmt.Sprintf("key %d", i)
		nk.CreatedAt = base.Add(time.Duration(i) * time.Minute)
		create(t, s, nk)
		ids = append(ids, nk.ID)
	}
	create(t, s, NewKey(b))
	if _, _, err := s.RevokeKey(ctx, a, ids[2]); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}

	list, err := s.ListKeys(ctx, a)
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	var got []string
	for _, k := range list {
		got = append(got, k.ID)
		if k.AccountID != a {
			t.Errorf("ListKeys(a) returned a key of account %q", k.AccountID)
		}
		if k.RevokedAt != nil {
			t.Errorf("ListKeys returned revoked key %s", k.ID)
		}
	}
	want := []string{ids[4], ids[3], ids[1], ids[0]}
	if !slices.Equal(got, want) {
		t.Errorf("ListKeys ids = %q, want newest first without the revoked one: %q", got, want)
	}

	empty, err := s.ListKeys(ctx, newAccount())
	if err != nil {
		t.Fatalf("ListKeys(unknown account): %v", err)
	}
	if len(empty) != 0 {
		t.Errorf("ListKeys(unknown account) = %d keys, want 0", len(empty))
	}
}

func testGetKey(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	nk := NewKey(acct, "analytics:read")
	create(t, s, nk)

	for _, account := range []string{acct, ""} {
		k, err := s.GetKey(ctx, account, nk.ID)
		if err != nil {
			t.Fatalf("GetKey(%q): %v", account, err)
		}
		checkKey(t, k, nk)
	}
	_, err := s.GetKey(ctx, acct, NewID())
	wantErr(t, "GetKey(unknown id)", err, keystore.ErrNotFound)

	// A revoked key can still be read by id (with its revocation time).
	if _, _, err := s.RevokeKey(ctx, acct, nk.ID); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	k, err := s.GetKey(ctx, acct, nk.ID)
	if err != nil {
		t.Fatalf("GetKey(revoked): %v", err)
	}
	if k.RevokedAt == nil {
		t.Errorf("GetKey(revoked).RevokedAt = nil")
	}
}

func testAccountIsolation(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	a, b := newAccount(), newAccount()
	nk := NewKey(a)
	create(t, s, nk)

	_, err := s.GetKey(ctx, b, nk.ID)
	wantErr(t, "GetKey(other account)", err, keystore.ErrNotFound)
	_, _, err = s.RevokeKey(ctx, b, nk.ID)
	wantErr(t, "RevokeKey(other account)", err, keystore.ErrNotFound)

	list, err := s.ListKeys(ctx, b)
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	if len(list) != 0 {
		t.Errorf("account B lists %d keys of account A", len(list))
	}
	cred, err := s.LookupKey(ctx, nk.Hash)
	if err != nil {
		t.Fatalf("LookupKey: %v", err)
	}
	if cred.Key.RevokedAt != nil {
		t.Errorf("a failed revocation by another account revoked the key")
	}
	if n := countChanges(changesOf(t, s), keystore.ChangeRevoked); n != 0 {
		t.Errorf("a failed revocation recorded %d revocation changes", n)
	}
}

func testConflict(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	nk := NewKey(acct)
	create(t, s, nk)

	sameID := NewKey(acct)
	sameID.ID = nk.ID
	_, err := s.CreateKey(ctx, sameID)
	wantErr(t, "CreateKey(duplicate id)", err, keystore.ErrConflict)

	sameHash := NewKey(newAccount())
	sameHash.Hash = nk.Hash
	_, err = s.CreateKey(ctx, sameHash)
	wantErr(t, "CreateKey(duplicate hash)", err, keystore.ErrConflict)

	// Neither failed creation left a row or a change behind.
	if _, err := s.LookupKey(ctx, sameID.Hash); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("LookupKey(hash of the rejected key) err = %v, want ErrNotFound", err)
	}
	cred, err := s.LookupKey(ctx, nk.Hash)
	if err != nil {
		t.Fatalf("LookupKey: %v", err)
	}
	if cred.Key.ID != nk.ID || cred.Key.AccountID != acct {
		t.Errorf("the original key was replaced: %+v", cred.Key)
	}
	if cs := changesOf(t, s); len(cs) != 1 {
		t.Errorf("%d changes recorded, want 1 (only the successful creation)", len(cs))
	}
}

func testRevoke(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	nk := NewKey(acct, "monitors:write")
	create(t, s, nk)
	other := NewKey(acct)
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

// testRevokeConcurrent checks that the revocation and its change row are one
// atomic step: of many simultaneous revocations of one key exactly one wins
// and exactly one change is recorded.
func testRevokeConcurrent(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	nk := NewKey(acct)
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

// testRevokeAccountKeys: every active key of the account is revoked, with
// one ChangeRevoked per key, and nothing of another account.
func testRevokeAccountKeys(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct, other := newAccount(), newAccount()
	const n = 250
	active := map[keystore.Hash]string{}
	for range n {
		nk := NewKey(acct)
		create(t, s, nk)
		active[nk.Hash] = nk.ID
	}
	gone := NewKey(acct)
	create(t, s, gone)
	if _, _, err := s.RevokeKey(ctx, acct, gone.ID); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	kept := NewKey(other)
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

// testRevokeAccountKeysConcurrent: single revocations, last-used writes and
// a bulk revocation of the same keys at once neither deadlock nor revoke a
// key twice.
func testRevokeAccountKeysConcurrent(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	const n = 40
	ids := make([]string, n)
	for i := range ids {
		nk := NewKey(acct)
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

func testExpiry(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	past := time.Now().Add(-time.Minute)
	future := time.Date(2099, 12, 31, 23, 59, 59, 123_456_789, time.UTC)
	for _, tc := range []struct {
		exp    time.Time
		usable bool
	}{{past, false}, {future, true}} {
		nk := NewKey(acct)
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

func testPlan(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	_, err := s.GetPlan(ctx, acct)
	wantErr(t, "GetPlan(unknown)", err, keystore.ErrNotFound)

	steps := []struct {
		plan    string
		changed bool
	}{
		{"pro", true},
		{"pro", false},
		{"free", true},
		{"free", false},
		{"enterprise", true},
	}
	for _, st := range steps {
		changed, err := s.SetPlan(ctx, acct, st.plan)
		if err != nil {
			t.Fatalf("SetPlan(%q): %v", st.plan, err)
		}
		if changed != st.changed {
			t.Errorf("SetPlan(%q) changed = %v, want %v", st.plan, changed, st.changed)
		}
		got, err := s.GetPlan(ctx, acct)
		if err != nil {
			t.Fatalf("GetPlan: %v", err)
		}
		if got != st.plan {
			t.Errorf("GetPlan = %q, want %q", got, st.plan)
		}
	}
	cs := changesOf(t, s)
	if len(cs) != 3 || countChanges(cs, keystore.ChangePlan) != 3 {
		t.Fatalf("changes = %+v, want 3 plan changes (none for unchanged plans)", cs)
	}
	for _, c := range cs {
		if c.AccountID != acct || c.Hash != (keystore.Hash{}) {
			t.Errorf("plan change = {account %q, hash set %v}, want account %q and no hash", c.AccountID, c.Hash != keystore.Hash{}, acct)
		}
	}

	// Accounts are independent.
	other := newAccount()
	if changed, err := s.SetPlan(ctx, other, "pro"); err != nil || !changed {
		t.Fatalf("SetPlan(other) = %v, %v; want true, nil", changed, err)
	}
	if p, err := s.GetPlan(ctx, acct); err != nil || p != "enterprise" {
		t.Errorf("GetPlan(acct) = %q, %v after setting another account's plan", p, err)
	}
}

func testPlanVisibleInLookup(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	nk := NewKey(acct)
	create(t, s, nk)
	for _, plan := range []string{"pro", "free"} {
		if _, err := s.SetPlan(ctx, acct, plan); err != nil {
			t.Fatalf("SetPlan: %v", err)
		}
		cred, err := s.LookupKey(ctx, nk.Hash)
		if err != nil {
			t.Fatalf("LookupKey: %v", err)
		}
		if cred.Plan != plan {
			t.Errorf("LookupKey plan = %q, want %q", cred.Plan, plan)
		}
	}
}

func testChangesLog(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	k1, k2 := NewKey(acct), NewKey(acct)
	create(t, s, k1)
	if _, err := s.SetPlan(ctx, acct, "business"); err != nil {
		t.Fatalf("SetPlan: %v", err)
	}
	create(t, s, k2)
	if _, _, err := s.RevokeKey(ctx, acct, k1.ID); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}

	all := changesOf(t, s)
	type kh struct {
		kind keystore.ChangeKind
		hash keystore.Hash
	}
	want := []kh{
		{keystore.ChangeCreated, k1.Hash},
		{keystore.ChangePlan, keystore.Hash{}},
		{keystore.ChangeCreated, k2.Hash},
		{keystore.ChangeRevoked, k1.Hash},
	}
	if len(all) != len(want) {
		t.Fatalf("got %d changes, want %d: %+v", len(all), len(want), all)
	}
	var prev int64
	for i, c := range all {
		if c.Kind != want[i].kind || c.Hash != want[i].hash || c.AccountID != acct {
			t.Errorf("change %d = %s of %q, want %s", i, c.Kind, c.AccountID, want[i].kind)
		}
		if c.Seq <= prev {
			t.Errorf("change %d seq %d not greater than previous %d", i, c.Seq, prev)
		}
		prev = c.Seq
		if c.At.IsZero() || time.Since(c.At) > time.Minute || c.At.Location() != time.UTC {
			t.Errorf("change %d at %v, want about now in UTC", i, c.At)
		}
	}

	last, err := s.LastChange(ctx)
	if err != nil {
		t.Fatalf("LastChange: %v", err)
	}
	if last != all[len(all)-1].Seq {
		t.Errorf("LastChange = %d, want %d", last, all[len(all)-1].Seq)
	}

	// after and limit.
	page, err := s.Changes(ctx, all[0].Seq, 2)
	if err != nil {
		t.Fatalf("Changes(after, 2): %v", err)
	}
	if len(page) != 2 || page[0].Seq != all[1].Seq || page[1].Seq != all[2].Seq {
		t.Errorf("Changes(after first, limit 2) = %+v, want changes 2 and 3", page)
	}
	rest, err := s.Changes(ctx, last, 10)
	if err != nil {
		t.Fatalf("Changes(last): %v", err)
	}
	if len(rest) != 0 {
		t.Errorf("Changes(after last) = %d changes, want 0", len(rest))
	}
}

func testChangesEmpty(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	last, err := s.LastChange(ctx)
	if err != nil || last != 0 {
		t.Errorf("LastChange on an empty store = %d, %v; want 0, nil", last, err)
	}
	cs, err := s.Changes(ctx, 0, 10)
	if err != nil || len(cs) != 0 {
		t.Errorf("Changes on an empty store = %d, %v; want none", len(cs), err)
	}
	if err := s.PruneChanges(ctx, time.Now()); err != nil {
		t.Errorf("PruneChanges on an empty store: %v", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func testPruneChanges(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	for range 3 {
		create(t, s, NewKey(acct))
	}
	all := changesOf(t, s)
	last := all[len(all)-1].Seq

	if err := s.PruneChanges(ctx, time.Now().Add(-time.Hour)); err != nil {
		t.Fatalf("PruneChanges(an hour ago): %v", err)
	}
	if got := changesOf(t, s); len(got) != 3 {
		t.Errorf("pruning before an hour ago left %d of 3 changes", len(got))
	}

	if err := s.PruneChanges(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("PruneChanges(future): %v", err)
	}
	got := changesOf(t, s)
	// The most recent change is kept so that LastChange never goes back.
	if len(got) > 1 {
		t.Errorf("pruning everything left %d changes, want at most the latest one", len(got))
	}
	if l, err := s.LastChange(ctx); err != nil || l != last {
		t.Errorf("LastChange after pruning = %d, %v; want %d", l, err, last)
	}

	// New changes continue the sequence.
	create(t, s, NewKey(acct))
	got = changesOf(t, s)
	if len(got) == 0 || got[len(got)-1].Seq <= last {
		t.Errorf("change after pruning has seq %v, want > %d", got, last)
	}
}

func testTouchKeys(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	k1, k2, k3 := NewKey(acct), NewKey(acct), NewKey(acct)
	for _, k := range []keystore.NewKey{k1, k2, k3} {
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
	check := func(nk keystore.NewKey, want *time.Time) {
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

func testConcurrentWriters(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	const writers, perWriter = 20, 5
	var wg sync.WaitGroup
	errs := make(chan error, writers*(perWriter+3))
	for w := range writers {
		wg.Go(func() {
			for range perWriter {
				nk := NewKey(acct)
				if _, err := s.CreateKey(ctx, nk); err != nil {
					errs <- fmt.Errorf("CreateKey: %w", err)
				}
			}
			plan := fmt.Sprintf("plan-%d", w%3)
			if _, err := s.SetPlan(ctx, acct, plan); err != nil {
				errs <- fmt.Errorf("SetPlan: %w", err)
			}
			nk := NewKey(acct)
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

func testUnicode(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := "аккаунт-" + newAccount() + "-🔑"
	names := []string{
		"zapier-integration",
		"ключ для CI 🔑",
		"日本語のキー",
		`quotes ' " ; -- DROP TABLE api_keys; \ %_`,
		"mixed\ttabs and\nnewlines",
	}
	for _, name := range names {
		nk := NewKey(acct, "status_pages:read")
		nk.Name = name
		k := create(t, s, nk)
		if k.Name != name {
			t.Errorf("CreateKey name = %q, want %q", k.Name, name)
		}
		got, err := s.GetKey(ctx, acct, nk.ID)
		if err != nil {
			t.Fatalf("GetKey: %v", err)
		}
		if got.Name != name {
			t.Errorf("GetKey name = %q, want %q", got.Name, name)
		}
	}
	list, err := s.ListKeys(ctx, acct)
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	if len(list) != len(names) {
		t.Errorf("ListKeys = %d keys, want %d", len(list), len(names))
	}
	if _, err := s.SetPlan(ctx, acct, "prö"); err != nil {
		t.Fatalf("SetPlan: %v", err)
	}
	if p, err := s.GetPlan(ctx, acct); err != nil || p != "prö" {
		t.Errorf("GetPlan = %q, %v; want %q", p, err, "prö")
	}
}

func testCanceledContext(t *testing.T, s keystore.Store) {
	acct := newAccount()
	nk := NewKey(acct)
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
	nk := NewKey(acct)
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
		"CreateKey": func() error { _, err := s.CreateKey(ctx, NewKey(acct)); return err },
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
