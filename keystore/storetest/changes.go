package storetest

import (
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// changesTests: the change log that every instance follows.
var changesTests = []test{
	{"ChangesLog", testChangesLog},
	{"ChangesEmpty", testChangesEmpty},
	{"PruneChanges", testPruneChanges},
}

func testChangesLog(t *testing.T, s keystore.Store) {
	ctx := ctxFor(t)
	acct := newAccount()
	k1, k2 := CreateKeyParams(acct), CreateKeyParams(acct)
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
		create(t, s, CreateKeyParams(acct))
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
	create(t, s, CreateKeyParams(acct))
	got = changesOf(t, s)
	if len(got) == 0 || got[len(got)-1].Seq <= last {
		t.Errorf("change after pruning has seq %v, want > %d", got, last)
	}
}
