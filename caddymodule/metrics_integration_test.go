package caddymodule_test

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var (
	resultLine   = regexp.MustCompile(`(?m)^spk_auth_results_total\{result="(\w+)"\} ([0-9.e+]+)$`)
	durationLine = regexp.MustCompile(`(?m)^spk_auth_check_duration_seconds_count ([0-9.e+]+)$`)
)

// authMetrics reads spk_auth's result counters and the number of checks
// the duration histogram observed from the admin endpoint's /metrics.
func authMetrics(t *testing.T, g *gateway) (map[string]float64, float64, string) {
	t.Helper()
	resp, err := g.client.Get(g.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	results := map[string]float64{}
	for _, m := range resultLine.FindAllStringSubmatch(string(b), -1) {
		results[m[1]], _ = strconv.ParseFloat(m[2], 64)
	}
	m := durationLine.FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("/metrics has no spk_auth_check_duration_seconds:\n%s", b)
	}
	n, _ := strconv.ParseFloat(m[1], 64)
	return results, n, string(b)
}

// TestAuthMetrics: /metrics counts every check by result, with the six
// results always present and no other label (no account, no key), and
// observes each check's duration once.
func TestAuthMetrics(t *testing.T) {
	g := startGateway(t, "", "policy statuspage\n\t\tfailure_limit 1 1h")
	g.setPlan("acct_m", "pro")
	reader := g.createKey("acct_m", "monitors:read")
	before, checksBefore, _ := authMetrics(t, g)
	if len(before) != 6 {
		t.Fatalf("result series %v, want the six results", before)
	}

	wantStatus(t, "ok", g.do("GET", "/v1/monitors", "X-API-Key", reader.Secret), 200)
	wantStatus(t, "ok", g.do("GET", "/v1/monitors", "Authorization", "Bearer "+reader.Secret), 200)
	wantStatus(t, "forbidden", g.do("POST", "/v1/monitors", "X-API-Key", reader.Secret), 403)
	wantStatus(t, "bad request", g.do("GET", "/v1/monitors?key="+reader.Secret), 400)
	wantStatus(t, "bad path", g.do("GET", "/v1/monitors/%2e%2e/incidents", "X-API-Key", reader.Secret), 400)
	wantStatus(t, "unauthorized", g.do("GET", "/v1/monitors"), 401)
	wantStatus(t, "unauthorized", g.do("GET", "/v1/monitors", "X-API-Key", mustGenerate(t).Secret), 401)
	wantStatus(t, "limited", g.do("GET", "/v1/monitors", "X-API-Key", mustGenerate(t).Secret), http.StatusTooManyRequests)

	after, checksAfter, body := authMetrics(t, g)
	if len(after) != 6 {
		t.Fatalf("result series %v, want the six results and no others", after)
	}
	want := map[string]float64{"ok": 2, "forbidden": 1, "bad_request": 2, "unauthorized": 2, "limited": 1, "unavailable": 0}
	for res, n := range want {
		if got := after[res] - before[res]; got != n {
			t.Errorf("result %s: counted %v, want %v", res, got, n)
		}
	}
	if got := checksAfter - checksBefore; got != 8 {
		t.Errorf("check durations observed %v times, want 8", got)
	}
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "spk_auth") && (strings.Contains(l, "acct_m") || strings.Contains(l, reader.ID) || strings.Contains(l, reader.Secret[4:])) {
			t.Errorf("an account, key id or key in /metrics: %s", l)
		}
	}
}
