package caddymodule_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spkgate/spkgate/internal/pgtest"
	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
)

// The key lifecycle through a real Caddy, on each store: edits that take
// effect on the next request, rolls with and without a grace period, IP
// restrictions with and without a trusted proxy, and the audit trail of
// all of it.

func TestLifecycleSQLite(t *testing.T) { testLifecycle(t, "") }

func TestLifecyclePostgres(t *testing.T) {
	testLifecycle(t, "storage postgres "+pgtest.DSN(t))
}

func testLifecycle(t *testing.T, storage string) {
	g := startGateway(t, storage, "policy statuspage\n\t\tfailure_limit off")
	g.setPlan("acct_lc", "pro")
	t.Run("edit", func(t *testing.T) { lifecycleEdit(t, g) })
	t.Run("refused", func(t *testing.T) { lifecycleRefused(t, g) })
	t.Run("roll", func(t *testing.T) { lifecycleRoll(t, g) })
	t.Run("ip", func(t *testing.T) { lifecycleIP(t, g) })
	t.Run("events", func(t *testing.T) { lifecycleEvents(t, g) })
}

// get sends GET path with key and returns the status and body.
func (g *gateway) get(path, key string, hdr ...string) (int, string) {
	g.t.Helper()
	r := g.do("GET", path, append([]string{"Authorization", "Bearer " + key}, hdr...)...)
	return r.status, r.body
}

// patch edits a key through the admin API.
func (g *gateway) patch(id string, body any) (int, keystore.Key, keys.ErrorResponse) {
	g.t.Helper()
	var raw json.RawMessage
	st := g.adminJSON("PATCH", "/spk/keys/"+id, body, &raw)
	var (
		k keystore.Key
		e keys.ErrorResponse
	)
	if st == 200 {
		if strings.Contains(string(raw), `"key"`) {
			g.t.Errorf("an edit answered with a secret: %s", raw)
		}
		if err := json.Unmarshal(raw, &k); err != nil {
			g.t.Fatal(err)
		}
	} else {
		json.Unmarshal(raw, &e)
	}
	return st, k, e
}

func (g *gateway) events(account string, query string) []keystore.Event {
	g.t.Helper()
	var resp keys.EventsResponse
	if st := g.adminJSON("GET", "/spk/accounts/"+account+"/events"+query, nil, &resp); st != 200 {
		g.t.Fatalf("events: %d", st)
	}
	return resp.Events
}

func lifecycleEdit(t *testing.T, g *gateway) {
	k := g.createKey("acct_lc", "monitors:write")
	if st, body := g.get("/v1/monitors", k.Secret); st != 200 {
		t.Fatalf("before the edit: %d %s", st, body)
	}
	if st, _ := g.get("/v1/incidents", k.Secret); st != 403 {
		t.Fatalf("incidents before the edit: %d", st)
	}
	// Widening and narrowing the scopes: the next request sees it.
	st, ek, _ := g.patch(k.ID, map[string]any{"scopes": []string{"incidents:read"}, "name": "narrowed"})
	if st != 200 || ek.Name != "narrowed" || strings.Join(ek.Scopes, ",") != "incidents:read" || ek.ID != k.ID {
		t.Fatalf("edit: %d %+v", st, ek)
	}
	if st, body := g.get("/v1/monitors", k.Secret); st != 403 || !strings.Contains(body, `"required_scope":"monitors:read"`) {
		t.Fatalf("monitors after narrowing: %d %s, want 403 at once", st, body)
	}
	if st, _ := g.get("/v1/incidents", k.Secret); st != 200 {
		t.Fatalf("incidents after the edit: %d", st)
	}
	if seen := g.upstream.lastSeen(); seen.Header.Get("X-Spk-Scopes") != "incidents:read" {
		t.Errorf("upstream saw scopes %q", seen.Header.Get("X-Spk-Scopes"))
	}
	// An expiry set in the near future, then cleared: full access again.
	st, ek, _ = g.patch(k.ID, map[string]any{"scopes": nil, "expires_at": time.Now().Add(time.Hour)})
	if st != 200 || len(ek.Scopes) != 0 || ek.ExpiresAt == nil {
		t.Fatalf("edit to full access: %d %+v", st, ek)
	}
	if st, _ := g.get("/v1/monitors", k.Secret); st != 200 {
		t.Fatalf("full access after the edit: %d", st)
	}
	if st, ek, _ = g.patch(k.ID, map[string]any{"expires_at": nil}); st != 200 || ek.ExpiresAt != nil {
		t.Fatalf("clearing the expiry: %d %+v", st, ek)
	}
	// The key's own rate limit is stored and shown.
	st, ek, _ = g.patch(k.ID, map[string]any{"rate_limit": map[string]any{"requests": 10, "window": "1s"}})
	if st != 200 || ek.RateLimit == nil || ek.RateLimit.Requests != 10 || ek.RateLimit.Window != time.Second {
		t.Fatalf("rate limit: %d %+v", st, ek)
	}
	var list keys.ListResponse
	g.adminJSON("GET", "/spk/accounts/acct_lc/keys", nil, &list)
	for _, lk := range list.Keys {
		if lk.ID == k.ID && (lk.Name != "narrowed" || lk.RateLimit == nil) {
			t.Errorf("listing shows %+v", lk)
		}
	}
}

// lifecycleRefused: bad edits and rolls answer 400, 404 or 409 with the
// field named, and change nothing: the key works as before and no event
// is written.
func lifecycleRefused(t *testing.T, g *gateway) {
	k := g.createKey("acct_lc", "monitors:read")
	revoked := g.createKey("acct_lc")
	if st := g.adminJSON("DELETE", "/spk/keys/"+revoked.ID, nil, nil); st != 204 {
		t.Fatalf("revoke: %d", st)
	}
	before := len(g.events("acct_lc", "?limit=500"))
	for _, tc := range []struct {
		body  any
		field string
	}{
		{map[string]any{"scopes": []string{"monitors:admin"}}, "scopes"},
		{map[string]any{"allowed_ips": []string{"10.0.0.0/40"}}, "allowed_ips"},
		{map[string]any{"allowed_ips": []string{"not an address"}}, "allowed_ips"},
		{map[string]any{"rate_limit": map[string]any{"requests": 1000000, "window": "1s"}}, "rate_limit"},
		{map[string]any{"expires_at": time.Now().Add(-time.Hour)}, "expires_at"},
		{map[string]any{"name": ""}, "name"},
		{map[string]any{"owner": "someone"}, "owner"},
	} {
		st, _, e := g.patch(k.ID, tc.body)
		if st != 400 || len(e.Fields) != 1 || e.Fields[0].Field != tc.field {
			t.Errorf("%v: %d %+v, want 400 naming %s", tc.body, st, e, tc.field)
		}
	}
	for _, id := range []string{revoked.ID, "key_unknown"} {
		if st, _, e := g.patch(id, map[string]any{"name": "x"}); st != 404 || e.Error != "not_found" {
			t.Errorf("edit of %s: %d %+v, want 404", id, st, e)
		}
		if st := g.adminJSON("POST", "/spk/keys/"+id+"/roll", map[string]string{"grace": "1h"}, nil); st != 404 {
			t.Errorf("roll of %s: %d, want 404", id, st)
		}
	}
	for _, grace := range []string{"-1s", "169h", "8d", "a while"} {
		var e keys.ErrorResponse
		if st := g.adminJSON("POST", "/spk/keys/"+k.ID+"/roll", map[string]string{"grace": grace}, &e); st != 400 || len(e.Fields) != 1 || e.Fields[0].Field != "grace" {
			t.Errorf("grace %q: %d %+v", grace, st, e)
		}
	}
	var e keys.ErrorResponse
	if st := g.adminJSON("POST", "/spk/keys/"+k.ID+"/roll", map[string]any{"grace": "1h", "keep_old": true}, &e); st != 400 || len(e.Fields) != 1 || e.Fields[0].Field != "keep_old" {
		t.Errorf("roll with an unknown field: %d %+v", st, e)
	}
	if st, body := g.get("/v1/monitors", k.Secret); st != 200 {
		t.Errorf("the key after refused changes: %d %s", st, body)
	}
	var list keys.ListResponse
	g.adminJSON("GET", "/spk/accounts/acct_lc/keys", nil, &list)
	for _, lk := range list.Keys {
		if lk.ID == k.ID && (lk.Name != "test acct_lc" || lk.AllowedIPs != nil || lk.RateLimit != nil || lk.ReplacedBy != "") {
			t.Errorf("the key changed: %+v", lk)
		}
	}
	if after := len(g.events("acct_lc", "?limit=500")); after != before {
		t.Errorf("refused changes wrote %d events", after-before)
	}
}

func lifecycleRoll(t *testing.T, g *gateway) {
	// Grace 0: the old key stops at once, the new one works at once.
	old := g.createKey("acct_lc", "incidents:write")
	if st, _ := g.get("/v1/incidents", old.Secret); st != 200 {
		t.Fatalf("before the roll: %d", st)
	}
	var r keys.Rolled
	if st := g.adminJSON("POST", "/spk/keys/"+old.ID+"/roll", map[string]string{"grace": "0s"}, &r); st != 201 ||
		!strings.HasPrefix(r.Secret, "spk_") || r.Replaces != old.ID || r.Name != old.Name || strings.Join(r.Scopes, ",") != "incidents:write" {
		t.Fatalf("roll: %d %+v", st, r)
	}
	if st, body := g.get("/v1/incidents", old.Secret); st != 401 || body != `{"error":"unauthorized","message":"the API key is invalid, expired or revoked"}` {
		t.Fatalf("old key after a roll without grace: %d %s", st, body)
	}
	if st, _ := g.get("/v1/incidents", r.Secret); st != 200 {
		t.Fatalf("new key: %d", st)
	}
	if seen := g.upstream.lastSeen(); seen.Header.Get("X-Spk-Key-Id") != r.ID {
		t.Errorf("upstream saw key id %q, want the new key's", seen.Header.Get("X-Spk-Key-Id"))
	}

	// A day of grace: both keys work; the new one has the old one's
	// restrictions.
	st, _, _ := g.patch(r.ID, map[string]any{"allowed_ips": []string{"127.0.0.0/8", "::1"}})
	if st != 200 {
		t.Fatalf("restricting: %d", st)
	}
	var r2 keys.Rolled
	if st := g.adminJSON("POST", "/spk/keys/"+r.ID+"/roll", map[string]string{"grace": "24h"}, &r2); st != 201 {
		t.Fatalf("roll with grace: %d", st)
	}
	if want := time.Now().Add(24 * time.Hour); r2.OldKeyExpiresAt.Before(want.Add(-time.Minute)) || r2.OldKeyExpiresAt.After(want) {
		t.Errorf("old key expires at %v, want about %v", r2.OldKeyExpiresAt, want)
	}
	if len(r2.AllowedIPs) != 2 {
		t.Errorf("new key allowed_ips %v, want the old key's", r2.AllowedIPs)
	}
	for _, key := range []string{r.Secret, r2.Secret} {
		if st, body := g.get("/v1/incidents", key); st != 200 {
			t.Fatalf("during the grace period: %d %s", st, body)
		}
	}
	// A rolled key is not rolled or edited again.
	if st := g.adminJSON("POST", "/spk/keys/"+r.ID+"/roll", map[string]string{"grace": "1h"}, nil); st != 409 {
		t.Errorf("second roll: %d, want 409", st)
	}

	// A short grace period ends on time: the old key works until its end,
	// then gets the same 401 as a revoked key; the new key never stops.
	const grace = 3 * time.Second
	var r3 keys.Rolled
	if st := g.adminJSON("POST", "/spk/keys/"+r2.ID+"/roll", map[string]string{"grace": grace.String()}, &r3); st != 201 {
		t.Fatalf("short roll: %d", st)
	}
	end := r3.OldKeyExpiresAt
	deadline := end.Add(5 * time.Second)
	sawWorking := false
	for {
		st, body := g.get("/v1/incidents", r2.Secret)
		now := time.Now()
		if st == 200 {
			if !now.Before(end.Add(100 * time.Millisecond)) {
				t.Fatalf("the old key still worked %v after its end", now.Sub(end))
			}
			sawWorking = true
		} else {
			if st != 401 || !strings.Contains(body, "invalid, expired or revoked") {
				t.Fatalf("old key: %d %s", st, body)
			}
			if now.Before(end) {
				t.Fatalf("the old key stopped %v before its end", end.Sub(now))
			}
			break
		}
		if now.After(deadline) {
			t.Fatal("the old key kept working")
		}
		if st, _ := g.get("/v1/incidents", r3.Secret); st != 200 {
			t.Fatalf("the new key: %d", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !sawWorking {
		t.Logf("the old key was not tried before its end (a slow machine)")
	}
	if st, _ := g.get("/v1/incidents", r3.Secret); st != 200 {
		t.Fatalf("the new key after the old one's end: %d", st)
	}
}

func lifecycleIP(t *testing.T, g *gateway) {
	k := g.createKey("acct_lc")
	ipNotAllowed := `{"error":"ip_not_allowed","message":"this API key cannot be used from your address"}`
	check := func(what string, want int, hdr ...string) {
		t.Helper()
		st, body := g.get("/v1/monitors", k.Secret, hdr...)
		if st != want || (want == 403 && body != ipNotAllowed) {
			t.Errorf("%s: %d %s, want %d", what, st, body, want)
		}
	}
	allow := func(ips ...string) {
		t.Helper()
		if st, _, e := g.patch(k.ID, map[string]any{"allowed_ips": ips}); st != 200 {
			t.Fatalf("allowed_ips %v: %d %+v", ips, st, e)
		}
	}

	// Without trusted proxies the peer's address counts, whatever
	// X-Forwarded-For says.
	allow("127.0.0.1")
	check("loopback allowed", 200)
	check("loopback allowed, a forged X-Forwarded-For", 200, "X-Forwarded-For", "198.51.100.1")
	allow("10.0.0.0/8", "2001:db8::/32")
	check("loopback not in the list", 403)
	check("X-Forwarded-For not trusted", 403, "X-Forwarded-For", "10.1.2.3")

	// With the loopback trusted as a proxy, the forwarded address counts.
	g.caddyCfg = strings.Replace(g.caddyCfg, "persist_config off",
		"persist_config off\n\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}", 1)
	g.load()
	// The reload replaced the admin server and restarted the site's (its
	// options changed): wait until the new one accepts connections.
	g.client.CloseIdleConnections()
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := g.client.Get(g.base + "/v1/monitors")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway does not answer after the reload: %v", err)
		}
		g.client.CloseIdleConnections()
		time.Sleep(20 * time.Millisecond)
	}
	check("forwarded IPv4 in the list", 200, "X-Forwarded-For", "10.1.2.3")
	check("forwarded IPv6 in the list", 200, "X-Forwarded-For", "2001:db8::7")
	check("forwarded address outside the list", 403, "X-Forwarded-For", "192.0.2.1")
	check("no X-Forwarded-For: the proxy's own address", 403)
	allow("127.0.0.1")
	check("the proxy allowed, the client not", 403, "X-Forwarded-For", "10.1.2.3")
	check("the proxy allowed, no X-Forwarded-For", 200)

	// Clearing the restriction: any address.
	if st, _, _ := g.patch(k.ID, map[string]any{"allowed_ips": nil}); st != 200 {
		t.Fatal("clearing allowed_ips")
	}
	check("unrestricted", 200, "X-Forwarded-For", "192.0.2.1")
}

// lifecycleEvents: every change made above is in the account's audit
// trail, newest first, by "admin" through admin_api, with no secret.
func lifecycleEvents(t *testing.T, g *gateway) {
	evs := g.events("acct_lc", "?limit=500")
	count := map[keystore.Action]int{}
	for i, ev := range evs {
		count[ev.Action]++
		if ev.Actor != "admin" || ev.Source != "admin_api" || ev.IP != "127.0.0.1" || ev.AccountID != "acct_lc" {
			t.Errorf("event %d = %+v", i, ev)
		}
		if i > 0 && ev.ID >= evs[i-1].ID {
			t.Errorf("events not newest first at %d", i)
		}
		if !strings.HasPrefix(ev.UserAgent, "Go-http-client") {
			t.Errorf("event %d user agent %q", i, ev.UserAgent)
		}
	}
	for _, a := range []keystore.Action{keystore.ActionKeyCreated, keystore.ActionKeyUpdated, keystore.ActionKeyRolled,
		keystore.ActionKeyRevoked, keystore.ActionAccountPlanChanged} {
		if count[a] == 0 {
			t.Errorf("no %s event among %v", a, count)
		}
	}
	// No event holds more of a key than its display prefix.
	wholeKey := regexp.MustCompile(`spk_[0-9A-Za-z]{36}`)
	raw := func(q string) string {
		var m json.RawMessage
		g.adminJSON("GET", "/spk/accounts/acct_lc/events"+q, nil, &m)
		return string(m)
	}
	all := raw("?limit=500")
	if m := wholeKey.FindString(all); m != "" {
		t.Errorf("an event carries a whole key: %.14s...", m)
	}
	for _, ev := range evs {
		if ev.KeyPrefix != "" && strings.Count(all, ev.KeyPrefix) == 0 {
			t.Errorf("prefix %q missing", ev.KeyPrefix)
		}
	}
	for _, field := range []string{`"id"`, `"at"`, `"action"`, `"actor"`, `"source"`, `"ip"`, `"user_agent"`, `"key_id"`, `"key_prefix"`, `"key_name"`, `"details"`} {
		if !strings.Contains(all, field) {
			t.Errorf("events JSON lacks %s", field)
		}
	}
	// Paging.
	page := g.events("acct_lc", "?limit=2")
	next := g.events("acct_lc", fmt.Sprintf("?limit=2&before=%d", page[1].ID))
	if len(page) != 2 || len(next) != 2 || page[0].ID != evs[0].ID || next[0].ID != evs[2].ID {
		t.Errorf("paging: %d %d", len(page), len(next))
	}
	var e keys.ErrorResponse
	if st := g.adminJSON("GET", "/spk/accounts/acct_lc/events?limit=0", nil, &e); st != 400 || e.Fields[0].Field != "limit" {
		t.Errorf("limit=0: %d %+v", st, e)
	}
	if evs := g.events("acct_other", ""); len(evs) != 0 {
		t.Errorf("another account sees %d events", len(evs))
	}
}

// TestConsoleChangesAreAudited: keys created and revoked in the console
// (signed in with basic_auth) are in the account's audit trail with the
// source console, the signed-in user as the actor, and the client's address.
func TestConsoleChangesAreAudited(t *testing.T) {
	s := startConsole(t)
	r := s.call(proUser, "POST", "/user/api-console/api/keys", `{"name":"from-console"}`)
	if r.status != 201 {
		t.Fatalf("create in the console: %d %s", r.status, r.body)
	}
	var k keys.Created
	if err := json.Unmarshal([]byte(r.body), &k); err != nil {
		t.Fatal(err)
	}
	if r := s.call(proUser, "DELETE", "/user/api-console/api/keys/"+k.ID, ""); r.status != 204 {
		t.Fatalf("revoke in the console: %d %s", r.status, r.body)
	}
	evs := s.events(proUser, "")
	var created, revoked bool
	for _, ev := range evs {
		if ev.KeyID != k.ID {
			continue
		}
		if ev.Source != "console" || ev.Actor != proUser || ev.IP != "127.0.0.1" || ev.UserAgent == "" {
			t.Errorf("console event = %+v", ev)
		}
		created = created || ev.Action == keystore.ActionKeyCreated
		revoked = revoked || ev.Action == keystore.ActionKeyRevoked
	}
	if !created || !revoked {
		t.Errorf("events %+v, want the key's creation and revocation", evs)
	}
	if strings.Contains(s.adminBody("/spk/accounts/"+proUser+"/events"), k.Secret) {
		t.Error("an event carries the key")
	}
}

func (g *gateway) adminBody(path string) string {
	g.t.Helper()
	var raw json.RawMessage
	g.adminJSON("GET", path, nil, &raw)
	return string(raw)
}
