package caddymodule_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestSecurityConsoleAccountIsolation fills the one gap the console's own
// tests leave: with keys in two accounts, the console shows account A
// nothing of B's keys (JSON list, key list page, confirmation page) and
// cannot revoke them; B's key keeps working. (Cross-site requests, XSS in
// names and API keys at the console are covered in console/console_test.go
// and TestConsoleThroughCaddy.)
func TestSecurityConsoleAccountIsolation(t *testing.T) {
	s := startConsole(t)
	s.setPlan(freeUser, "business") // B: another account, with API access
	b := s.createKey(freeUser)
	r := s.call(proUser, "POST", "/user/api-console/api/keys", `{"name":"mine"}`, "Sec-Fetch-Site", "same-origin")
	wantStatus(t, "A creates a key", r, http.StatusCreated)

	seen := func(what string, r result) {
		t.Helper()
		for _, leak := range []string{b.ID, b.Prefix, b.Secret[10:], "test " + freeUser} {
			if strings.Contains(r.body, leak) {
				t.Errorf("%s shows account B's key (%q): %d", what, leak, r.status)
			}
		}
	}
	r = s.call(proUser, "GET", "/user/api-console/api/keys", "")
	wantStatus(t, "A lists", r, 200)
	if !strings.Contains(r.body, `"mine"`) {
		t.Fatalf("A's list lacks A's key: %s", r.body)
	}
	seen("A's JSON list", r)
	r = s.call(proUser, "GET", "/user/api-console", "")
	wantStatus(t, "A's page", r, 200)
	seen("A's key list page", r)
	for _, c := range []struct{ method, path string }{
		{"GET", "/user/api-console/keys/" + b.ID + "/revoke"},
		{"POST", "/user/api-console/keys/" + b.ID + "/revoke"},
		{"DELETE", "/user/api-console/api/keys/" + b.ID},
	} {
		req, _ := http.NewRequest(c.method, s.console+c.path, strings.NewReader("confirm=yes"))
		req.SetBasicAuth(proUser, proPassword)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r := s.send(req, "Sec-Fetch-Site", "same-origin")
		if r.status != http.StatusNotFound {
			t.Errorf("A: %s %s: %d, want 404", c.method, c.path, r.status)
		}
		seen("A: "+c.method+" "+c.path, r)
	}
	wantStatus(t, "B's key still works", s.do("GET", "/v1/monitors", "X-API-Key", b.Secret), 200)
}
