package caddymodule_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/keys"
)

func mustGenerate(t *testing.T) apikey.Generated {
	t.Helper()
	g, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestAdminAPI(t *testing.T) {
	g := startGateway(t, "", "policy statuspage")

	// Create: 201, the key once, the shape of the console API.
	var k keys.Created
	future := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	st := g.adminJSON("POST", "/spk/accounts/acct_1/keys", map[string]any{
		"name": "  ci-pipeline  ", "scopes": []string{"incidents:read", "monitors:read"}, "expires_at": future,
	}, &k)
	if st != 201 || apikey.Check(k.Secret) != nil || k.Name != "ci-pipeline" || k.AccountID != "acct_1" ||
		k.Prefix != k.Secret[:10] || strings.Join(k.Scopes, ",") != "monitors:read,incidents:read" ||
		k.ExpiresAt == nil || !k.ExpiresAt.Equal(future) || !strings.HasPrefix(k.ID, "key_") {
		t.Fatalf("create: %d %+v", st, k.Key)
	}

	// List: the key without its secret.
	var list keys.ListResponse
	if st := g.adminJSON("GET", "/spk/accounts/acct_1/keys", nil, &list); st != 200 || len(list.Keys) != 1 || list.Keys[0].ID != k.ID {
		t.Fatalf("list: %d %+v", st, list)
	}
	var raw map[string][]map[string]any
	g.adminJSON("GET", "/spk/accounts/acct_1/keys", nil, &raw)
	if _, has := raw["keys"][0]["key"]; has {
		t.Fatal("a listing must never carry the key")
	}
	if st := g.adminJSON("GET", "/spk/accounts/acct_2/keys", nil, &list); st != 200 || len(list.Keys) != 0 {
		t.Fatalf("other account sees %d keys", len(list.Keys))
	}

	// Bad input: 400 with the field named, nothing created.
	for _, body := range []map[string]any{
		{"name": "", "scopes": []string{}},
		{"name": strings.Repeat("x", 101)},
		{"name": "ok", "scopes": []string{"monitors:admin"}},
		{"name": "ok", "expires_at": time.Now().Add(-time.Hour)},
		{"name": "ok", "unknown_field": 1},
	} {
		var e keys.ErrorResponse
		if st := g.adminJSON("POST", "/spk/accounts/acct_1/keys", body, &e); st != 400 || e.Error != "invalid_request" || e.Message == "" {
			t.Errorf("%v: %d %+v", body, st, e)
		}
	}
	var e keys.ErrorResponse
	if st := g.adminJSON("POST", "/spk/accounts/acct_1/keys", map[string]any{"name": "x", "scopes": []string{"nope:read"}}, &e); len(e.Fields) != 1 || e.Fields[0].Field != "scopes" || st != 400 {
		t.Errorf("unknown scope: %d %+v", st, e)
	}
	g.adminJSON("GET", "/spk/accounts/acct_1/keys", nil, &list)
	if len(list.Keys) != 1 {
		t.Fatalf("bad requests created keys: %d", len(list.Keys))
	}

	// Plans.
	if st := g.adminJSON("PUT", "/spk/accounts/acct_1/plan", map[string]string{"plan": ""}, nil); st != 400 {
		t.Fatalf("empty plan: %d", st)
	}
	g.setPlan("acct_1", "enterprise")
	var plan keys.PlanRequest
	if st := g.adminJSON("GET", "/spk/accounts/acct_1/plan", nil, &plan); st != 200 || plan.Plan != "enterprise" {
		t.Fatalf("get plan: %d %+v", st, plan)
	}
	wantStatus(t, "key made by the admin API", g.do("GET", "/v1/incidents", "Authorization", "Bearer "+k.Secret), 200)

	// Revoke: 204, then 404; unknown ids 404.
	for _, tc := range []struct {
		id   string
		want int
	}{{k.ID, 204}, {k.ID, 404}, {"key_doesnotexist", 404}} {
		if st := g.adminJSON("DELETE", "/spk/keys/"+tc.id, nil, nil); st != tc.want {
			t.Errorf("delete %s: %d, want %d", tc.id, st, tc.want)
		}
	}
	g.adminJSON("GET", "/spk/accounts/acct_1/keys", nil, &list)
	if len(list.Keys) != 0 {
		t.Fatal("revoked key still listed")
	}
	// A body not declared as JSON (what a cross-site form could send) is refused.
	for _, path := range []string{"/spk/accounts/acct_1/keys", "/spk/accounts/acct_1/plan"} {
		method := map[bool]string{true: "POST", false: "PUT"}[strings.HasSuffix(path, "keys")]
		req, _ := http.NewRequest(method, g.admin+path, strings.NewReader(`{"name":"x","plan":"free"}`))
		req.Header.Set("Content-Type", "text/plain")
		resp, err := g.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("%s %s as text/plain: %d", method, path, resp.StatusCode)
		}
	}
	if st := g.adminJSON("PUT", "/spk/keys/"+k.ID, nil, nil); st != http.StatusMethodNotAllowed {
		t.Errorf("wrong method: %d", st)
	}
}
