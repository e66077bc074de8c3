package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// lifecycleTests are the conformance tests of the key lifecycle: stored
// restrictions, edits, rolls and the audit trail.
var lifecycleTests = []test{
	{"Restrictions", testRestrictions},
	{"UpdateKey", testUpdateKey},
	{"UpdateKeyRefused", testUpdateKeyRefused},
	{"RollKey", testRollKey},
	{"RollKeyNoGrace", testRollKeyNoGrace},
	{"RollKeyRefused", testRollKeyRefused},
	{"Events", testEvents},
	{"EventsOnlyForChanges", testEventsOnlyForChanges},
	{"PruneEvents", testPruneEvents},
}

// auditor records the events a store announces.
type auditor struct {
	mu  sync.Mutex
	evs []keystore.Event
}

func (a *auditor) ctx(t testing.TB, name, source string) context.Context {
	return keystore.WithAudit(ctxFor(t), keystore.Audit{
		Actor: keystore.Actor{Name: name, Source: source, IP: "192.0.2.7", UserAgent: "storetest/1"},
		Written: func(ev keystore.Event) {
			a.mu.Lock()
			a.evs = append(a.evs, ev)
			a.mu.Unlock()
		},
	})
}

func (a *auditor) announced() []keystore.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.evs)
}

func events(t testing.TB, s keystore.Store, acct string) []keystore.Event {
	t.Helper()
	evs, err := s.Events(ctxFor(t), acct, keystore.EventQuery{Limit: keystore.MaxEventLimit})
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	return evs
}

func details(t testing.TB, ev keystore.Event) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(ev.Details, &m); err != nil {
		t.Fatalf("event %d details %s: %v", ev.ID, ev.Details, err)
	}
	return m
}

func mustPrefixes(ss ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}

func checkRestrictions(t testing.TB, what string, k keystore.Key, ips []netip.Prefix, rl *keystore.RateLimit) {
	t.Helper()
	if !slices.Equal(k.AllowedIPs, ips) {
		t.Errorf("%s: allowed_ips = %v, want %v", what, k.AllowedIPs, ips)
	}
	if (k.RateLimit == nil) != (rl == nil) || (rl != nil && *k.RateLimit != *rl) {
		t.Errorf("%s: rate_limit = %v, want %v", what, k.RateLimit, rl)
	}
}

func testRestrictions(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	ips := mustPrefixes("192.0.2.0/24", "2001:db8::/32", "198.51.100.7/32")
	rl := &keystore.RateLimit{Requests: 10, Window: time.Second}
	nk := CreateKeyParams(acct, "monitors:read")
	nk.AllowedIPs, nk.RateLimit = ips, rl
	k := create(t, s, nk)
	checkRestrictions(t, "CreateKey", k, ips, rl)
	plain := CreateKeyParams(acct)
	create(t, s, plain)

	g, err := s.GetKey(ctx, acct, nk.ID)
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	checkRestrictions(t, "GetKey", g, ips, rl)
	list, err := s.ListKeys(ctx, acct)
	if err != nil || len(list) != 2 {
		t.Fatalf("ListKeys = %d keys, %v", len(list), err)
	}
	for _, k := range list {
		if k.ID == nk.ID {
			checkRestrictions(t, "ListKeys", k, ips, rl)
		} else {
			checkRestrictions(t, "ListKeys(plain)", k, nil, nil)
		}
	}
	cred, err := s.LookupKey(ctx, nk.Hash)
	if err != nil {
		t.Fatalf("LookupKey: %v", err)
	}
	checkRestrictions(t, "LookupKey", cred.Key, ips, rl)
	cp, err := s.LookupKey(ctx, plain.Hash)
	if err != nil {
		t.Fatalf("LookupKey(plain): %v", err)
	}
	checkRestrictions(t, "LookupKey(plain)", cp.Key, nil, nil)
	found, err := s.LookupKeys(ctx, []keystore.Hash{nk.Hash, plain.Hash})
	if err != nil || len(found) != 2 {
		t.Fatalf("LookupKeys = %d, %v", len(found), err)
	}
	checkRestrictions(t, "LookupKeys", found[nk.Hash].Key, ips, rl)
	checkRestrictions(t, "LookupKeys(plain)", found[plain.Hash].Key, nil, nil)

	// A window below the stored precision (a microsecond) is refused.
	bad := CreateKeyParams(acct)
	bad.RateLimit = &keystore.RateLimit{Requests: 1, Window: time.Nanosecond}
	if _, err := s.CreateKey(ctx, bad); err == nil {
		t.Errorf("CreateKey with a 1ns window succeeded")
	}
	bad = CreateKeyParams(acct)
	bad.AllowedIPs = []netip.Prefix{{}}
	if _, err := s.CreateKey(ctx, bad); err == nil {
		t.Errorf("CreateKey with an invalid prefix succeeded")
	}
}

func testUpdateKey(t *testing.T, s keystore.Store) {
	var a auditor
	ctx := a.ctx(t, "alice", keystore.SourceConsole)
	acct := newAccount()
	nk := CreateKeyParams(acct, "monitors:read")
	create(t, s, nk)
	after, err := s.LastChange(ctx)
	if err != nil {
		t.Fatalf("LastChange: %v", err)
	}
	evsBefore := len(events(t, s, acct))

	exp := time.Now().Add(48 * time.Hour)
	ips := mustPrefixes("10.0.0.0/8", "::1/128")
	rl := &keystore.RateLimit{Requests: 5, Window: time.Minute}
	k, err := s.UpdateKey(ctx, acct, nk.ID, func(k *keystore.Key) error {
		if k.ID != nk.ID || k.Name != nk.Name || !slices.Equal(k.Scopes, nk.Scopes) {
			t.Errorf("edit got key %+v, want the stored one", *k)
		}
		k.Name = "renamed"
		k.Scopes = []string{"incidents:write", "monitors:read"}
		k.ExpiresAt = &exp
		k.AllowedIPs = ips
		k.RateLimit = rl
		k.ID, k.AccountID, k.Prefix = "key_other", "acct_other", "spk_other" // not editable: ignored
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateKey: %v", err)
	}
	want := nk
	want.Name, want.Scopes, want.ExpiresAt = "renamed", []string{"incidents:write", "monitors:read"}, &exp
	checkKey(t, k, want)
	checkRestrictions(t, "UpdateKey", k, ips, rl)
	g, err := s.GetKey(ctx, acct, nk.ID)
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	checkKey(t, g, want)
	checkRestrictions(t, "GetKey after update", g, ips, rl)
	cred, err := s.LookupKey(ctx, nk.Hash)
	if err != nil {
		t.Fatalf("LookupKey: %v", err)
	}
	checkCredential(t, cred, want)
	checkRestrictions(t, "LookupKey after update", cred.Key, ips, rl)

	cs, err := s.Changes(ctx, after, 10)
	if err != nil {
		t.Fatalf("Changes: %v", err)
	}
	if len(cs) != 1 || cs[0].Kind != keystore.ChangeUpdated || cs[0].Hash != nk.Hash || cs[0].AccountID != acct {
		t.Fatalf("update recorded changes %+v, want one ChangeUpdated of the key", cs)
	}

	evs := events(t, s, acct)
	if len(evs) != evsBefore+1 {
		t.Fatalf("%d events after the update, want %d", len(evs), evsBefore+1)
	}
	ev := evs[0]
	if ev.Action != keystore.ActionKeyUpdated || ev.Actor != "alice" || ev.Source != keystore.SourceConsole ||
		ev.IP != "192.0.2.7" || ev.UserAgent != "storetest/1" || ev.KeyID != nk.ID || ev.KeyPrefix != nk.Prefix ||
		ev.KeyName != "renamed" || ev.AccountID != acct {
		t.Errorf("update event = %+v", ev)
	}
	d := details(t, ev)
	for _, f := range []string{"name", "scopes", "expires_at", "allowed_ips", "rate_limit"} {
		ft, ok := d[f].(map[string]any)
		if !ok || len(ft) != 2 {
			t.Errorf("details[%s] = %v, want {from, to}", f, d[f])
		}
	}
	if got := d["name"].(map[string]any); got["from"] != "test key" || got["to"] != "renamed" {
		t.Errorf("details.name = %v", got)
	}
	if got := d["rate_limit"].(map[string]any)["to"]; !jsonEqual(got, map[string]any{"requests": 5.0, "window": "1m0s"}) {
		t.Errorf("details.rate_limit.to = %v", got)
	}
	if ann := a.announced(); len(ann) != 1 || ann[0].ID != ev.ID || ann[0].Action != keystore.ActionKeyUpdated {
		t.Errorf("announced %+v, want the update's event", ann)
	}

	// Only what changed is in the details; clearing works.
	k, err = s.UpdateKey(ctx, acct, nk.ID, func(k *keystore.Key) error {
		k.ExpiresAt, k.AllowedIPs, k.RateLimit = nil, nil, nil
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateKey(clear): %v", err)
	}
	checkRestrictions(t, "cleared", k, nil, nil)
	if k.ExpiresAt != nil {
		t.Errorf("expires_at = %v after clearing", k.ExpiresAt)
	}
	evs = events(t, s, acct)
	d = details(t, evs[0])
	if _, ok := d["name"]; ok || len(d) != 3 {
		t.Errorf("clearing details = %v, want expires_at, allowed_ips and rate_limit only", d)
	}

	// An edit that changes nothing writes nothing.
	last, _ := s.LastChange(ctx)
	n := len(events(t, s, acct))
	k, err = s.UpdateKey(ctx, acct, nk.ID, func(k *keystore.Key) error { k.Name = "renamed"; return nil })
	if err != nil || k.Name != "renamed" {
		t.Fatalf("UpdateKey(no change) = %q, %v", k.Name, err)
	}
	if l, _ := s.LastChange(ctx); l != last {
		t.Errorf("an edit without change recorded a change")
	}
	if len(events(t, s, acct)) != n {
		t.Errorf("an edit without change wrote an event")
	}
	// An empty account id edits any account's key (operator use).
	if _, err := s.UpdateKey(ctx, "", nk.ID, func(k *keystore.Key) error { k.Name = "by operator"; return nil }); err != nil {
		t.Errorf("UpdateKey(\"\"): %v", err)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// testUpdateKeyRefused: a failed edit changes nothing and writes no event.
func testUpdateKeyRefused(t *testing.T, s keystore.Store) {
	var a auditor
	ctx := a.ctx(t, "bob", keystore.SourceAdminAPI)
	acct := newAccount()
	nk := CreateKeyParams(acct, "monitors:read")
	create(t, s, nk)
	revoked := CreateKeyParams(acct)
	create(t, s, revoked)
	if _, _, err := s.RevokeKey(ctx, acct, revoked.ID); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	last, _ := s.LastChange(ctx)
	n := len(events(t, s, acct))

	errEdit := errors.New("edit refused")
	_, err := s.UpdateKey(ctx, acct, nk.ID, func(k *keystore.Key) error {
		k.Name = "half-done"
		return errEdit
	})
	if err != errEdit {
		t.Errorf("UpdateKey with a failing edit = %v, want the edit's error as it is", err)
	}
	called := false
	edit := func(k *keystore.Key) error { called = true; k.Name = "x"; return nil }
	_, err = s.UpdateKey(ctx, "acct_other", nk.ID, edit)
	wantErr(t, "UpdateKey(another account's key)", err, keystore.ErrNotFound)
	_, err = s.UpdateKey(ctx, acct, NewID(), edit)
	wantErr(t, "UpdateKey(unknown)", err, keystore.ErrNotFound)
	_, err = s.UpdateKey(ctx, acct, revoked.ID, edit)
	wantErr(t, "UpdateKey(revoked)", err, keystore.ErrNotFound)
	if called {
		t.Errorf("edit was called for a key it may not change")
	}
	_, err = s.UpdateKey(ctx, acct, nk.ID, func(k *keystore.Key) error {
		k.RateLimit = &keystore.RateLimit{Requests: 0, Window: time.Second}
		return nil
	})
	if err == nil {
		t.Errorf("UpdateKey to a rate of 0 requests succeeded")
	}

	g, err := s.GetKey(ctx, acct, nk.ID)
	if err != nil || g.Name != nk.Name || g.RateLimit != nil {
		t.Errorf("after refused edits the key is %+v, %v; want it unchanged", g, err)
	}
	if l, _ := s.LastChange(ctx); l != last {
		t.Errorf("a refused edit recorded a change")
	}
	if len(events(t, s, acct)) != n {
		t.Errorf("a refused edit wrote an event")
	}
	if ann := a.announced(); len(ann) != 1 {
		t.Errorf("announced %d events, want 1 (the revocation)", len(ann))
	}
}

func testRollKey(t *testing.T, s keystore.Store) {
	var a auditor
	ctx := a.ctx(t, "carol", keystore.SourceCLI)
	acct := newAccount()
	nk := CreateKeyParams(acct, "incidents:write")
	nk.Name = "ci-pipeline"
	nk.AllowedIPs = mustPrefixes("192.0.2.0/24")
	nk.RateLimit = &keystore.RateLimit{Requests: 3, Window: time.Second}
	exp := time.Now().Add(30 * 24 * time.Hour)
	nk.ExpiresAt = &exp
	create(t, s, nk)
	last, _ := s.LastChange(ctx)

	repl := CreateKeyParams(acct)
	at := time.Now()
	r := keystore.Roll{ID: repl.ID, Prefix: repl.Prefix, Hash: repl.Hash, At: at, Ends: at.Add(24 * time.Hour)}
	var checked keystore.Key
	old, nw, err := s.RollKey(ctx, acct, nk.ID, r, func(k keystore.Key) error { checked = k; return nil })
	if err != nil {
		t.Fatalf("RollKey: %v", err)
	}
	if checked.ID != nk.ID || checked.ExpiresAt == nil || !checked.ExpiresAt.Equal(micro(exp)) {
		t.Errorf("check got %+v, want the old key as stored", checked)
	}
	ends := micro(at.Add(24 * time.Hour))
	checkTime(t, "old key's end", old.ExpiresAt, &ends)
	if old.ReplacedBy != repl.ID || old.RevokedAt != nil {
		t.Errorf("old key replaced_by %q revoked_at %v, want %q and not revoked", old.ReplacedBy, old.RevokedAt, repl.ID)
	}
	want := nk
	want.ID, want.Prefix, want.Hash, want.CreatedAt = repl.ID, repl.Prefix, repl.Hash, at
	checkKey(t, nw, want)
	checkRestrictions(t, "new key", nw, nk.AllowedIPs, nk.RateLimit)

	cred, err := s.LookupKey(ctx, repl.Hash)
	if err != nil {
		t.Fatalf("LookupKey(new): %v", err)
	}
	checkCredential(t, cred, want)
	checkRestrictions(t, "new key's credential", cred.Key, nk.AllowedIPs, nk.RateLimit)
	oc, err := s.LookupKey(ctx, nk.Hash)
	if err != nil {
		t.Fatalf("LookupKey(old): %v", err)
	}
	if !oc.Usable(time.Now()) || oc.Usable(ends.Add(time.Microsecond)) || oc.Usable(ends) {
		t.Errorf("old key usable now %v, at its end %v: want usable only before it", oc.Usable(time.Now()), oc.Usable(ends))
	}
	g, err := s.GetKey(ctx, acct, nk.ID)
	if err != nil || g.ReplacedBy != repl.ID {
		t.Errorf("GetKey(old) replaced_by = %q, %v", g.ReplacedBy, err)
	}
	list, err := s.ListKeys(ctx, acct)
	if err != nil || len(list) != 2 {
		t.Errorf("ListKeys during the grace period = %d keys, %v; want both", len(list), err)
	}

	cs, err := s.Changes(ctx, last, 10)
	if err != nil {
		t.Fatalf("Changes: %v", err)
	}
	if len(cs) != 2 || countChanges(cs, keystore.ChangeCreated) != 1 || countChanges(cs, keystore.ChangeUpdated) != 1 {
		t.Fatalf("roll recorded %+v, want a ChangeCreated and a ChangeUpdated", cs)
	}
	for _, c := range cs {
		if (c.Kind == keystore.ChangeCreated && c.Hash != repl.Hash) || (c.Kind == keystore.ChangeUpdated && c.Hash != nk.Hash) {
			t.Errorf("change %s has the wrong hash", c.Kind)
		}
	}
	evs := events(t, s, acct)
	if len(evs) != 2 {
		t.Fatalf("%d events, want key.created and key.rolled", len(evs))
	}
	ev := evs[0]
	if ev.Action != keystore.ActionKeyRolled || ev.KeyID != nk.ID || ev.KeyName != "ci-pipeline" ||
		ev.Actor != "carol" || ev.Source != keystore.SourceCLI {
		t.Errorf("roll event = %+v", ev)
	}
	d := details(t, ev)
	if d["new_key_id"] != repl.ID || d["new_key_prefix"] != repl.Prefix || d["grace"] != "24h0m0s" {
		t.Errorf("roll details = %v", d)
	}

	// The old key cannot be edited or rolled again; its successor can.
	_, err = s.UpdateKey(ctx, acct, nk.ID, func(k *keystore.Key) error { k.Name = "x"; return nil })
	wantErr(t, "UpdateKey(rolled)", err, keystore.ErrKeyRolled)
	again := CreateKeyParams(acct)
	_, _, err = s.RollKey(ctx, acct, nk.ID, keystore.Roll{ID: again.ID, Prefix: again.Prefix, Hash: again.Hash, At: at, Ends: at}, nil)
	wantErr(t, "RollKey(rolled)", err, keystore.ErrKeyRolled)
	if _, _, err := s.RollKey(ctx, acct, repl.ID, keystore.Roll{ID: again.ID, Prefix: again.Prefix, Hash: again.Hash, At: at, Ends: at.Add(time.Hour)}, nil); err != nil {
		t.Errorf("RollKey(successor): %v", err)
	}

	// A grace period past the old key's own expiry keeps the expiry.
	short := CreateKeyParams(acct)
	soon := time.Now().Add(time.Hour)
	short.ExpiresAt = &soon
	create(t, s, short)
	r2 := CreateKeyParams(acct)
	old, nw, err = s.RollKey(ctx, acct, short.ID, keystore.Roll{ID: r2.ID, Prefix: r2.Prefix, Hash: r2.Hash, At: at, Ends: at.Add(7 * 24 * time.Hour)}, nil)
	if err != nil {
		t.Fatalf("RollKey(short): %v", err)
	}
	checkTime(t, "old key's end (its own expiry)", old.ExpiresAt, microPtr(&soon))
	checkTime(t, "new key's expiry", nw.ExpiresAt, microPtr(&soon))
	if ann := a.announced(); len(ann) != 3 || ann[0].Action != keystore.ActionKeyRolled || ann[0].KeyID != nk.ID {
		t.Errorf("announced %d events, want the 3 rolls", len(ann))
	}
}

func testRollKeyNoGrace(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	nk := CreateKeyParams(acct)
	create(t, s, nk)
	repl := CreateKeyParams(acct)
	at := time.Now()
	old, _, err := s.RollKey(ctx, acct, nk.ID, keystore.Roll{ID: repl.ID, Prefix: repl.Prefix, Hash: repl.Hash, At: at, Ends: at}, nil)
	if err != nil {
		t.Fatalf("RollKey: %v", err)
	}
	if old.RevokedAt == nil {
		t.Errorf("a roll without grace left the old key unrevoked")
	}
	cred, err := s.LookupKey(ctx, nk.Hash)
	if err != nil {
		t.Fatalf("LookupKey(old): %v", err)
	}
	if cred.Usable(time.Now()) {
		t.Errorf("the old key is usable after a roll without grace")
	}
	list, err := s.ListKeys(ctx, acct)
	if err != nil || len(list) != 1 || list[0].ID != repl.ID {
		t.Errorf("ListKeys after the roll = %v, %v; want only the new key", list, err)
	}
	evs := events(t, s, acct)
	if len(evs) != 2 || evs[0].Action != keystore.ActionKeyRolled || details(t, evs[0])["grace"] != "0s" {
		t.Errorf("events = %+v", evs)
	}
	if evs[0].Actor != "" || evs[0].Source != "" {
		t.Errorf("a change without an audit context has actor %q source %q, want empty", evs[0].Actor, evs[0].Source)
	}
}

// testRollKeyRefused: a failed roll creates no key and writes no change
// or event.
func testRollKeyRefused(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	nk := CreateKeyParams(acct)
	create(t, s, nk)
	taken := CreateKeyParams(acct)
	create(t, s, taken)
	revoked := CreateKeyParams(acct)
	create(t, s, revoked)
	if _, _, err := s.RevokeKey(ctx, acct, revoked.ID); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	last, _ := s.LastChange(ctx)
	n := len(events(t, s, acct))
	at := time.Now()
	roll := func(repl keystore.CreateKeyParams) keystore.Roll {
		return keystore.Roll{ID: repl.ID, Prefix: repl.Prefix, Hash: repl.Hash, At: at, Ends: at.Add(time.Hour)}
	}

	errCheck := errors.New("check refused")
	repl := CreateKeyParams(acct)
	_, _, err := s.RollKey(ctx, acct, nk.ID, roll(repl), func(keystore.Key) error { return errCheck })
	if err != errCheck {
		t.Errorf("RollKey with a failing check = %v, want its error as it is", err)
	}
	_, _, err = s.RollKey(ctx, "acct_other", nk.ID, roll(repl), nil)
	wantErr(t, "RollKey(another account's key)", err, keystore.ErrNotFound)
	_, _, err = s.RollKey(ctx, acct, revoked.ID, roll(repl), nil)
	wantErr(t, "RollKey(revoked)", err, keystore.ErrNotFound)
	_, _, err = s.RollKey(ctx, acct, NewID(), roll(repl), nil)
	wantErr(t, "RollKey(unknown)", err, keystore.ErrNotFound)
	clash := roll(repl)
	clash.Hash = taken.Hash
	_, _, err = s.RollKey(ctx, acct, nk.ID, clash, nil)
	wantErr(t, "RollKey(hash taken)", err, keystore.ErrConflict)
	backwards := roll(repl)
	backwards.Ends = at.Add(-time.Second)
	if _, _, err = s.RollKey(ctx, acct, nk.ID, backwards, nil); err == nil {
		t.Errorf("RollKey ending before the roll succeeded")
	}

	if _, err := s.LookupKey(ctx, repl.Hash); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("a refused roll stored the new key: %v", err)
	}
	g, err := s.GetKey(ctx, acct, nk.ID)
	if err != nil || g.ReplacedBy != "" || g.ExpiresAt != nil {
		t.Errorf("after refused rolls the old key is %+v, %v; want it unchanged", g, err)
	}
	if l, _ := s.LastChange(ctx); l != last {
		t.Errorf("a refused roll recorded a change")
	}
	if len(events(t, s, acct)) != n {
		t.Errorf("a refused roll wrote an event")
	}
}
