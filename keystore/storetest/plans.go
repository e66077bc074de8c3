package storetest

import (
	"testing"

	"github.com/spkgate/spkgate/keystore"
)

// plansTests: the plan recorded per account.
var plansTests = []test{
	{"Plan", testPlan},
	{"PlanVisibleInLookup", testPlanVisibleInLookup},
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
	nk := CreateKeyParams(acct)
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
