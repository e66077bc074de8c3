package keys_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/sqlitestore"
)

var testActor = keys.Actor{Name: "tester", Source: keys.SourceCLI}

func manager(t *testing.T) *keys.Manager {
	t.Helper()
	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "spk.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &keys.Manager{Store: st}
}

func TestValidate(t *testing.T) {
	m := &keys.Manager{Now: func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }}
	past := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	future := time.Date(2027, 1, 1, 0, 0, 0, 123456789, time.UTC)
	for _, tc := range []struct {
		name  string
		req   keys.CreateRequest
		field string // "" = valid
	}{
		{"trimmed", keys.CreateRequest{Name: "  ci  "}, ""},
		{"100 characters", keys.CreateRequest{Name: strings.Repeat("é", 100)}, ""},
		{"101 characters", keys.CreateRequest{Name: strings.Repeat("é", 101)}, "name"},
		{"empty", keys.CreateRequest{Name: "   "}, "name"},
		{"control", keys.CreateRequest{Name: "a\nb"}, "name"},
		{"invalid utf-8", keys.CreateRequest{Name: "a\xffb"}, "name"},
		{"unknown scope", keys.CreateRequest{Name: "x", Scopes: []string{"monitors:read", "root"}}, "scopes"},
		{"past expiry", keys.CreateRequest{Name: "x", ExpiresAt: &past}, "expires_at"},
		{"future expiry", keys.CreateRequest{Name: "x", ExpiresAt: &future}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := m.Validate(&tc.req)
			var fe *keys.FieldError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field):
				t.Fatalf("got %v, want a %s error", err, tc.field)
			}
		})
	}
	req := keys.CreateRequest{Name: "  ci  ", ExpiresAt: &future}
	m.Validate(&req)
	if req.Name != "ci" || req.ExpiresAt.Nanosecond()%1000 != 0 {
		t.Fatalf("not normalised: %q %v", req.Name, req.ExpiresAt)
	}
}

func TestAccountsAreIsolated(t *testing.T) {
	m := manager(t)
	ctx := context.Background()
	a, err := m.Create(ctx, testActor, "acct_a", keys.CreateRequest{Name: "a", Scopes: []string{"incidents:write", "monitors:read"}})
	if err != nil {
		t.Fatal(err)
	}
	if apikey.Check(a.Secret) != nil || a.Prefix != a.Secret[:10] || strings.Join(a.Scopes, ",") != "monitors:read,incidents:write" {
		t.Fatalf("created %+v", a.Key)
	}
	if _, err := m.Revoke(ctx, testActor, "acct_b", a.ID); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("another account revoked it: %v", err)
	}
	if ks, _ := m.List(ctx, "acct_b"); len(ks) != 0 {
		t.Fatal("another account lists it")
	}
	if ks, _ := m.List(ctx, "acct_a"); len(ks) != 1 || ks[0].ID != a.ID {
		t.Fatalf("own list %+v", ks)
	}
	if _, err := m.Revoke(ctx, testActor, "acct_a", a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, testActor, "", keys.CreateRequest{Name: "x"}); err == nil {
		t.Fatal("empty account accepted")
	}
	if err := m.SetPlan(ctx, testActor, "acct_a", " "); err == nil {
		t.Fatal("empty plan accepted")
	}
}

func TestDecodeJSON(t *testing.T) {
	for body, wantOK := range map[string]bool{
		`{"name":"x","scopes":[]}`:  true,
		`{"name":"x","admin":true}`: false,
		`{"name":"x"} {"name":"y"}`: false,
		`not json`:                  false,
		`{"name":"` + strings.Repeat("x", keys.MaxBodyBytes) + `"}`: false,
	} {
		r := httptest.NewRequest("POST", "/", strings.NewReader(body))
		var req keys.CreateRequest
		err := keys.DecodeJSON(httptest.NewRecorder(), r, &req)
		if (err == nil) != wantOK {
			t.Errorf("%.40s: %v", body, err)
		}
	}
}
