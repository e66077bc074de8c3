package storetest

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// The audit trail's conformance tests (listed in lifecycleTests).

func testEvents(t *testing.T, s keystore.Store) {
	var a auditor
	admin := a.ctx(t, "admin", keystore.SourceAdminAPI)
	acct, other := newAccount(), newAccount()
	k1, k2 := CreateKeyParams(acct, "monitors:read"), CreateKeyParams(acct)
	if _, err := s.CreateKey(admin, keystore.CreateKeyParams{AccountID: acct}); err == nil { // refused: no event
		t.Fatalf("CreateKey without id or hash succeeded")
	}
	if _, err := s.CreateKey(admin, k1); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if _, err := s.CreateKey(admin, k2); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if _, err := s.CreateKey(admin, CreateKeyParams(other)); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if _, _, err := s.RevokeKey(admin, acct, k1.ID); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	if _, err := s.SetPlan(admin, acct, "pro"); err != nil {
		t.Fatalf("SetPlan: %v", err)
	}
	if _, err := s.SetPlan(admin, acct, "business"); err != nil {
		t.Fatalf("SetPlan: %v", err)
	}
	if n, err := s.RevokeAccountKeys(admin, acct); err != nil || n != 1 {
		t.Fatalf("RevokeAccountKeys = %d, %v", n, err)
	}

	evs := events(t, s, acct)
	wantActions := []keystore.Action{
		keystore.ActionAccountKeysRevoked, keystore.ActionAccountPlanChanged, keystore.ActionAccountPlanChanged,
		keystore.ActionKeyRevoked, keystore.ActionKeyCreated, keystore.ActionKeyCreated,
	}
	if len(evs) != len(wantActions) {
		t.Fatalf("%d events, want %d: %+v", len(evs), len(wantActions), evs)
	}
	for i, ev := range evs {
		if ev.Action != wantActions[i] {
			t.Errorf("event %d = %s, want %s (newest first)", i, ev.Action, wantActions[i])
		}
		if i > 0 && ev.ID >= evs[i-1].ID {
			t.Errorf("event %d id %d not below the previous %d", i, ev.ID, evs[i-1].ID)
		}
		if ev.AccountID != acct || ev.Actor != "admin" || ev.Source != keystore.SourceAdminAPI ||
			ev.IP != "192.0.2.7" || ev.UserAgent != "storetest/1" {
			t.Errorf("event %d = %+v", i, ev)
		}
		if ev.At.Location() != time.UTC || time.Since(ev.At) > time.Minute {
			t.Errorf("event %d at %v, want about now in UTC", i, ev.At)
		}
		if !json.Valid(ev.Details) || !strings.HasPrefix(string(ev.Details), "{") {
			t.Errorf("event %d details %q, want a JSON object", i, ev.Details)
		}
	}
	if evs[3].KeyID != k1.ID || evs[3].KeyPrefix != k1.Prefix || evs[3].KeyName != k1.Name {
		t.Errorf("revocation event names key %q %q %q", evs[3].KeyID, evs[3].KeyPrefix, evs[3].KeyName)
	}
	if evs[0].KeyID != "" || details(t, evs[0])["revoked"] != 1.0 {
		t.Errorf("account.keys_revoked event = %+v %s", evs[0], evs[0].Details)
	}
	if d := details(t, evs[1]); d["from"] != "pro" || d["to"] != "business" {
		t.Errorf("plan change details = %v", d)
	}
	if d := details(t, evs[5]); !jsonEqual(d["scopes"], []string{"monitors:read"}) {
		t.Errorf("creation details = %v", d)
	}
	if o := events(t, s, other); len(o) != 1 || o[0].AccountID != other {
		t.Errorf("the other account has events %+v, want its one creation", o)
	}
	ann := a.announced()
	if len(ann) != 7 {
		t.Errorf("announced %d events, want 7", len(ann))
	}

	// Paging: limit and before.
	page, err := s.Events(admin, acct, keystore.EventQuery{Limit: 2})
	if err != nil || len(page) != 2 || page[0].ID != evs[0].ID || page[1].ID != evs[1].ID {
		t.Fatalf("first page = %+v, %v", page, err)
	}
	page, err = s.Events(admin, acct, keystore.EventQuery{Limit: 2, Before: page[1].ID})
	if err != nil || len(page) != 2 || page[0].ID != evs[2].ID || page[1].ID != evs[3].ID {
		t.Fatalf("second page = %+v, %v", page, err)
	}
	page, err = s.Events(admin, acct, keystore.EventQuery{Before: evs[len(evs)-1].ID})
	if err != nil || len(page) != 0 {
		t.Errorf("page before the oldest = %d events, %v", len(page), err)
	}
	none, err := s.Events(admin, newAccount(), keystore.EventQuery{})
	if err != nil || none == nil || len(none) != 0 {
		t.Errorf("events of an unknown account = %v, %v; want an empty list", none, err)
	}
}

// testEventsOnlyForChanges: a call that changes nothing writes no event.
func testEventsOnlyForChanges(t *testing.T, s keystore.Store) {
	var a auditor
	ctx := a.ctx(t, "admin", keystore.SourceAdminAPI)
	acct := newAccount()
	nk := CreateKeyParams(acct)
	if _, err := s.CreateKey(ctx, nk); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if _, err := s.CreateKey(ctx, nk); !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("CreateKey(again) = %v, want ErrConflict", err)
	}
	if _, _, err := s.RevokeKey(ctx, acct, NewID()); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("RevokeKey(unknown) = %v", err)
	}
	if _, err := s.SetPlan(ctx, acct, "pro"); err != nil {
		t.Fatalf("SetPlan: %v", err)
	}
	if _, err := s.SetPlan(ctx, acct, "pro"); err != nil {
		t.Fatalf("SetPlan(same): %v", err)
	}
	empty := newAccount()
	if n, err := s.RevokeAccountKeys(ctx, empty); err != nil || n != 0 {
		t.Fatalf("RevokeAccountKeys(empty) = %d, %v", n, err)
	}
	if evs := events(t, s, acct); len(evs) != 2 {
		t.Errorf("%d events, want 2 (the creation and the first plan change): %+v", len(evs), evs)
	}
	if evs := events(t, s, empty); len(evs) != 0 {
		t.Errorf("revoking no keys wrote %d events", len(evs))
	}
	if ann := a.announced(); len(ann) != 2 {
		t.Errorf("announced %d events, want 2", len(ann))
	}
}

func testPruneEvents(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	for range 3 {
		create(t, s, CreateKeyParams(acct))
	}
	n, err := s.PruneEvents(ctx, time.Now().Add(-time.Hour))
	if err != nil || n != 0 {
		t.Errorf("PruneEvents(an hour ago) = %d, %v; want 0", n, err)
	}
	if evs := events(t, s, acct); len(evs) != 3 {
		t.Errorf("%d events left, want 3", len(evs))
	}
	n, err = s.PruneEvents(ctx, time.Now().Add(time.Hour))
	if err != nil || n != 3 {
		t.Errorf("PruneEvents(future) = %d, %v; want 3", n, err)
	}
	if evs := events(t, s, acct); len(evs) != 0 {
		t.Errorf("%d events left after pruning all", len(evs))
	}
	create(t, s, CreateKeyParams(acct))
	if evs := events(t, s, acct); len(evs) != 1 {
		t.Errorf("%d events after pruning and one creation, want 1", len(evs))
	}
}
