package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// keysTests: the keys of an account: create, read, list, isolation, conflicts.
var keysTests = []test{
	{"CreateAndLookup", testCreateAndLookup},
	{"CreateDefaults", testCreateDefaults},
	{"CreateValidation", testCreateValidation},
	{"ListKeys", testListKeys},
	{"GetKey", testGetKey},
	{"AccountIsolation", testAccountIsolation},
	{"Conflict", testConflict},
	{"Unicode", testUnicode},
}

func testCreateAndLookup(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	exp := time.Now().Add(90 * 24 * time.Hour)
	nk := CreateKeyParams(acct, "monitors:read", "incidents:write")
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
		nk := CreateKeyParams(acct)
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
	cases := map[string]func(*keystore.CreateKeyParams){
		"empty id":      func(k *keystore.CreateKeyParams) { k.ID = "" },
		"empty account": func(k *keystore.CreateKeyParams) { k.AccountID = "" },
		"zero hash":     func(k *keystore.CreateKeyParams) { k.Hash = keystore.Hash{} },
	}
	for name, mutate := range cases {
		nk := CreateKeyParams(acct)
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

func testListKeys(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	a, b := newAccount(), newAccount()
	base := time.Now().Add(-time.Hour)
	var ids []string
	for i := range 5 {
		nk := CreateKeyParams(a)
		nk.Name = fmt.Sprintf("key %d", i)
		nk.CreatedAt = base.Add(time.Duration(i) * time.Minute)
		create(t, s, nk)
		ids = append(ids, nk.ID)
	}
	create(t, s, CreateKeyParams(b))
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
	nk := CreateKeyParams(acct, "analytics:read")
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
	nk := CreateKeyParams(a)
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
	nk := CreateKeyParams(acct)
	create(t, s, nk)

	sameID := CreateKeyParams(acct)
	sameID.ID = nk.ID
	_, err := s.CreateKey(ctx, sameID)
	wantErr(t, "CreateKey(duplicate id)", err, keystore.ErrConflict)

	sameHash := CreateKeyParams(newAccount())
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
		nk := CreateKeyParams(acct, "status_pages:read")
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
