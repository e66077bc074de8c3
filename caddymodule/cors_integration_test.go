package caddymodule_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

const consoleOrigin = "http://localhost:8082"

// TestCORSForListedOriginsOnly drives spk_auth's cors option through a real
// Caddy: preflights from a listed origin are answered without a key and
// never forwarded; every answer to that origin, refusals included, carries
// the CORS headers (once, even where the upstream sets its own); other
// origins get none.
func TestCORSForListedOriginsOnly(t *testing.T) {
	g := startGateway(t, "", "policy statuspage\n\t\tcors "+consoleOrigin+" https://app.example.com")
	g.setPlan("acct_c", "pro")
	scoped := g.createKey("acct_c", "monitors:read")

	wantCORS := func(what string, r result) {
		t.Helper()
		if got := r.header.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != consoleOrigin {
			t.Fatalf("%s: Access-Control-Allow-Origin %q", what, got)
		}
		if got := r.header.Get("Access-Control-Expose-Headers"); got != "RateLimit, RateLimit-Policy, Retry-After, WWW-Authenticate" {
			t.Fatalf("%s: Access-Control-Expose-Headers %q", what, got)
		}
		if r.header.Get("Access-Control-Allow-Credentials") != "" {
			t.Fatalf("%s: credentials allowed", what)
		}
	}
	wantNone := func(what string, r result) {
		t.Helper()
		for name := range r.header {
			if strings.HasPrefix(name, "Access-Control-") {
				t.Fatalf("%s: %s: %q for an origin that is not listed", what, name, r.header.Get(name))
			}
		}
		if !strings.Contains(strings.Join(r.header.Values("Vary"), ","), "Origin") {
			t.Fatalf("%s: no Vary: Origin (a cache could serve one origin's answer to another)", what)
		}
	}

	// A preflight carries no key: answered here, not forwarded.
	before := g.upstream.count.Load()
	r := g.do("OPTIONS", "/v1/monitors/7", "Origin", consoleOrigin,
		"Access-Control-Request-Method", "PATCH", "Access-Control-Request-Headers", "authorization,content-type")
	wantStatus(t, "preflight", r, http.StatusNoContent)
	if r.header.Get("Access-Control-Allow-Origin") != consoleOrigin ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "PATCH") ||
		!strings.Contains(strings.ToLower(r.header.Get("Access-Control-Allow-Headers")), "authorization") ||
		r.header.Get("Access-Control-Max-Age") == "" {
		t.Fatalf("preflight headers %v", r.header)
	}
	if g.upstream.count.Load() != before {
		t.Fatal("the preflight was forwarded")
	}

	// Answers to the listed origin: success and every refusal.
	r = g.do("GET", "/v1/monitors", "Origin", consoleOrigin, "Authorization", "Bearer "+scoped.Secret)
	wantStatus(t, "allowed", r, 200)
	wantCORS("allowed", r)
	r = g.do("POST", "/v1/monitors", "Origin", consoleOrigin, "Authorization", "Bearer "+scoped.Secret)
	wantStatus(t, "out of scope", r, 403)
	wantCORS("403", r)
	if !strings.Contains(r.header.Get("WWW-Authenticate"), `scope="monitors:write"`) {
		t.Fatalf("403 without its WWW-Authenticate: %v", r.header)
	}
	r = g.do("GET", "/v1/monitors", "Origin", consoleOrigin)
	wantStatus(t, "no key", r, 401)
	wantCORS("401", r)
	r = g.do("GET", "/v1/monitors", "Origin", consoleOrigin, "Authorization", "Bearer spk_000000000000000000000000000000000000")
	wantStatus(t, "bad key", r, 401)
	wantCORS("bad key", r)

	// Other origins, and requests without one, get no CORS headers.
	evil := "https://evil.example.net"
	r = g.do("OPTIONS", "/v1/monitors", "Origin", evil, "Access-Control-Request-Method", "GET")
	wantStatus(t, "preflight from another origin", r, 401)
	wantNone("preflight from another origin", r)
	r = g.do("GET", "/v1/monitors", "Origin", evil, "Authorization", "Bearer "+scoped.Secret)
	wantStatus(t, "another origin", r, 200)
	wantNone("another origin", r)
	r = g.do("GET", "/v1/monitors", "Authorization", "Bearer "+scoped.Secret)
	wantNone("no origin", r)
	// Origins match exactly: scheme, host and port.
	wantNone("other port", g.do("GET", "/v1/monitors", "Origin", "http://localhost:8083", "Authorization", "Bearer "+scoped.Secret))
}

// TestCORSReplacesTheUpstreamsOwn: a browser refuses an answer with two
// Access-Control-Allow-Origin values, so the upstream's are replaced.
func TestCORSReplacesTheUpstreamsOwn(t *testing.T) {
	g := startSite(t, "", `spk_auth {
		policy statuspage
		cors `+consoleOrigin+`
	}
	header Access-Control-Allow-Origin "*"
	header Access-Control-Expose-Headers "X-Upstream"
	respond "ok" 200`)
	g.setPlan("acct_c", "pro")
	k := g.createKey("acct_c")
	r := g.do("GET", "/v1/monitors", "Origin", consoleOrigin, "X-API-Key", k.Secret)
	wantStatus(t, "upstream answer", r, 200)
	if got := r.header.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != consoleOrigin {
		t.Fatalf("Access-Control-Allow-Origin %q", got)
	}
}

func TestCORSCaddyfileErrors(t *testing.T) {
	for _, c := range []struct{ block, want string }{
		{"cors", "at least one origin"},
		{"cors https://app.example.com/", "scheme://host"},
		{"cors app.example.com", "scheme://host"},
		{"cors https://App.example.com", "lower case"},
		{"cors ftp://app.example.com", "scheme://host"},
	} {
		_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(":8080 {\n\tspk_auth {\n\t\t"+c.block+"\n\t}\n}\n"), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.block, err, c.want)
		}
	}
}
