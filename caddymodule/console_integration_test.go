package caddymodule_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/crypto/bcrypt"

	"github.com/spkgate/spkgate/internal/testkit"
	"github.com/spkgate/spkgate/keys"
)

// consoleSetup is a real Caddy with the console behind basic_auth (two
// demo accounts, the plan from a map, as in Caddyfile.example), the gateway
// in front of an upstream, and a site that wrongly puts spk_auth in front
// of the console.
type consoleSetup struct {
	*gateway
	console  string // http://127.0.0.1:port
	keyFront string // the site with spk_auth in front of the console
}

const (
	proUser, proPassword   = "demo-pro", "pro-password"
	freeUser, freePassword = "demo-free", "free-password"
)

func startConsole(t *testing.T) *consoleSetup {
	t.Helper()
	hash := func(pw string) string {
		// The lowest cost keeps the test fast; basic_auth caches it anyway.
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	up := startUpstream(t)
	port, adminPort, consolePort, frontPort := testkit.FreePort(t), testkit.FreePort(t), testkit.FreePort(t), testkit.FreePort(t)
	s := &consoleSetup{
		gateway: &gateway{
			t:        t,
			base:     fmt.Sprintf("http://127.0.0.1:%d", port),
			admin:    fmt.Sprintf("http://127.0.0.1:%d", adminPort),
			upstream: up,
			client:   &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		},
		console:  fmt.Sprintf("http://127.0.0.1:%d", consolePort),
		keyFront: fmt.Sprintf("http://127.0.0.1:%d", frontPort),
	}
	s.caddyCfg = fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	storage file_system %s
	spk {
		storage sqlite %s
	}
}
http://127.0.0.1:%d {
	spk_auth {
		policy statuspage
	}
	reverse_proxy %s
}
http://127.0.0.1:%d {
	basic_auth {
		%s %s
		%s %s
	}
	map {http.auth.user.id} {spk_plan} {
		%s pro
		default free
	}
	spk_console {
		plan {spk_plan}
		base_url http://127.0.0.1:%d/v1
		upgrade_url https://example.com/upgrade
	}
	respond "rest of the dashboard"
}
http://127.0.0.1:%d {
	spk_auth
	spk_console {
		plan pro
	}
}
`, adminPort, t.TempDir(), filepath.Join(t.TempDir(), "spk.db"), port, up.addr,
		consolePort, proUser, hash(proPassword), freeUser, hash(freePassword), proUser, port, frontPort)
	s.load()
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Logf("stopping caddy: %v", err)
		}
	})
	return s
}

// call sends a request to the console as user (none if empty).
func (s *consoleSetup) call(user, method, path, body string, hdr ...string) result {
	s.t.Helper()
	req, err := http.NewRequest(method, s.console+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	switch user {
	case proUser:
		req.SetBasicAuth(proUser, proPassword)
	case freeUser:
		req.SetBasicAuth(freeUser, freePassword)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return s.send(req, hdr...)
}

func TestConsoleThroughCaddy(t *testing.T) {
	s := startConsole(t)

	r := s.call("", "GET", "/user/api-console", "")
	if r.status != 401 || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("without login: %d %v", r.status, r.header)
	}
	r = s.call(proUser, "GET", "/user/api-console", "")
	wantStatus(t, "pro home", r, 200)
	for _, want := range []string{"No API keys yet", s.base + "/v1", "Pro plan", proUser} {
		if !strings.Contains(r.body, want) {
			t.Fatalf("home lacks %q:\n%s", want, r.body)
		}
	}
	if r.header.Get("X-Content-Type-Options") != "nosniff" || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("home headers %v", r.header)
	}
	// The rest of the site is not the console's.
	if r := s.call(proUser, "GET", "/user/api-consoles", ""); r.body != "rest of the dashboard" {
		t.Fatalf("other path: %d %q", r.status, r.body)
	}

	// Create through the JSON API; the console recorded the plan, so the
	// key works at the gateway within its scopes.
	r = s.call(proUser, "POST", "/user/api-console/api/keys", `{"name":"ci-pipeline","scopes":["monitors:read","incidents:read"]}`)
	wantStatus(t, "create", r, 201)
	var k keys.Created
	if err := json.Unmarshal([]byte(r.body), &k); err != nil || !strings.HasPrefix(k.Secret, "spk_") || k.AccountID != proUser {
		t.Fatalf("create: %v %s", err, r.body)
	}
	wantStatus(t, "inside scopes", s.do("GET", "/v1/monitors", "Authorization", "Bearer "+k.Secret), 200)
	wantStatus(t, "inside scopes", s.do("GET", "/v1/incidents/4", "X-API-Key", k.Secret), 200)
	r = s.do("POST", "/v1/incidents", "X-API-Key", k.Secret)
	wantStatus(t, "outside scopes", r, 403)
	if !strings.Contains(r.body, `"required_scope":"incidents:write"`) {
		t.Fatalf("outside scopes: %s", r.body)
	}
	var plan keys.PlanRequest
	if st := s.adminJSON("GET", "/spk/accounts/"+proUser+"/plan", nil, &plan); st != 200 || plan.Plan != "pro" {
		t.Fatalf("recorded plan: %d %q", st, plan.Plan)
	}

	// A key cannot use the console, neither sent along with a login nor
	// through a site that authenticates with spk_auth.
	r = s.call(proUser, "GET", "/user/api-console/api/keys", "", "X-API-Key", k.Secret)
	wantStatus(t, "key next to a login", r, 403)
	full := s.createKey(proUser)
	for _, path := range []string{"/user/api-console", "/user/api-console/api/keys"} {
		req, _ := http.NewRequest("GET", s.keyFront+path, nil)
		r = s.send(req, "Authorization", "Bearer "+full.Secret)
		if r.status != 403 || strings.Contains(r.body, "ci-pipeline") {
			t.Fatalf("console behind spk_auth: %d %s", r.status, r.body)
		}
	}

	// Cross-origin writes are refused and change nothing.
	r = s.call(proUser, "DELETE", "/user/api-console/api/keys/"+k.ID, "", "Sec-Fetch-Site", "cross-site")
	wantStatus(t, "cross-site delete", r, 403)
	r = s.call(proUser, "POST", "/user/api-console/api/keys", `{"name":"csrf"}`, "Origin", "https://evil.example")
	wantStatus(t, "cross-origin create", r, 403)
	var list keys.ListResponse
	if r := s.call(proUser, "GET", "/user/api-console/api/keys", ""); json.Unmarshal([]byte(r.body), &list) != nil || len(list.Keys) != 2 {
		t.Fatalf("after refused writes: %s", r.body)
	}

	// The free account sees the upgrade prompt and none of demo-pro's keys.
	r = s.call(freeUser, "GET", "/user/api-console", "")
	if r.status != 403 || !strings.Contains(r.body, `href="https://example.com/upgrade"`) || strings.Contains(r.body, "ci-pipeline") {
		t.Fatalf("free home: %d %s", r.status, r.body)
	}
	r = s.call(freeUser, "GET", "/user/api-console/api/keys", "")
	if r.status != 403 || !strings.Contains(r.body, `"error":"plan_upgrade_required"`) {
		t.Fatalf("free api: %d %s", r.status, r.body)
	}
	r = s.call(freeUser, "DELETE", "/user/api-console/api/keys/"+k.ID, "")
	wantStatus(t, "free deletes pro's key", r, 403)

	// Revoke through the confirmation page: immediate 401 at the gateway.
	confirm := "/user/api-console/keys/" + k.ID + "/revoke"
	wantStatus(t, "confirm page", s.call(proUser, "GET", confirm, ""), 200)
	wantStatus(t, "still works after the confirm page", s.do("GET", "/v1/monitors", "X-API-Key", k.Secret), 200)
	req, _ := http.NewRequest("POST", s.console+confirm, strings.NewReader("confirm=yes"))
	req.SetBasicAuth(proUser, proPassword)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r = s.send(req, "Origin", s.console, "Sec-Fetch-Site", "same-origin")
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/user/api-console?revoked="+k.ID {
		t.Fatalf("revoke: %d %v", r.status, r.header)
	}
	wantInvalid(t, "revoked", s.do("GET", "/v1/monitors", "X-API-Key", k.Secret))
}

func TestConsoleJSONDocsFields(t *testing.T) {
	// The JSON config names the Caddyfile's subdirectives.
	cfg := adapt(t, ":80 {\n\tspk_console {\n\t\tbase_path /dev/api\n\t\taccount {http.request.header.X-Account}\n\t\tplan {http.request.header.X-Plan}\n\t\tuser {http.request.header.X-User}\n\t\tbase_url https://api.example.com/v1\n\t\tupgrade_url /billing\n\t}\n}\n")
	var v struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []map[string]any `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfg, &v); err != nil {
		t.Fatal(err)
	}
	h := v.Apps.HTTP.Servers["srv0"].Routes[0].Handle[0]
	for k, want := range map[string]string{
		"handler": "spk_console", "base_path": "/dev/api", "account": "{http.request.header.X-Account}",
		"plan": "{http.request.header.X-Plan}", "user": "{http.request.header.X-User}", "base_url": "https://api.example.com/v1", "upgrade_url": "/billing",
	} {
		if h[k] != want {
			t.Errorf("%s = %v, want %q", k, h[k], want)
		}
	}
}
