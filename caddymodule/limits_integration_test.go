package caddymodule_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/spkgate/spkgate/caddymodule"
	"github.com/spkgate/spkgate/internal/pgtest"
	"github.com/spkgate/spkgate/keys"
)

// testClock is a settable clock for the limiters of one test.
type testClock struct{ ns atomic.Int64 }

func useTestClock(t *testing.T, start time.Time) *testClock {
	c := &testClock{}
	c.ns.Store(start.UnixNano())
	caddymodule.SetLimitsClock(func() time.Time { return time.Unix(0, c.ns.Load()).UTC() })
	t.Cleanup(func() { caddymodule.SetLimitsClock(nil) })
	return c
}

func (c *testClock) add(d time.Duration) { c.ns.Add(int64(d)) }

// limitsOption is the spk option's storage line followed by limits.
func limitsOption(storage, limits string) string {
	return storage + "\n\t\tlimit_sync_interval 100ms\n\t\tusage_flush_interval 200ms\n\t\t" + limits
}

func bearer(k keys.Created) []string { return []string{"Authorization", "Bearer " + k.Secret} }

type limitBody struct {
	Error      string `json:"error"`
	Message    string `json:"message"`
	RetryAfter int64  `json:"retry_after"`
	ResetsAt   string `json:"resets_at"`
}

func want429(t *testing.T, what string, r result, kind string) limitBody {
	t.Helper()
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("%s: status %d (%s), want 429", what, r.status, r.body)
	}
	var b limitBody
	if err := json.Unmarshal([]byte(r.body), &b); err != nil || b.Error != kind || b.Message == "" {
		t.Fatalf("%s: body %s, want error %q", what, r.body, kind)
	}
	ra, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || ra < 1 {
		t.Fatalf("%s: Retry-After %q", what, r.header.Get("Retry-After"))
	}
	if kind == "rate_limited" && int64(ra) != b.RetryAfter {
		t.Fatalf("%s: Retry-After %d but retry_after %d", what, ra, b.RetryAfter)
	}
	if r.header.Get("WWW-Authenticate") != "" {
		t.Fatalf("%s: a limit answered like an authentication failure", what)
	}
	return b
}

func TestLimitsPlanRateSharedByKeys(t *testing.T) {
	clock := useTestClock(t, time.Date(2026, 12, 4, 10, 30, 0, 0, time.UTC))
	storage := "storage sqlite " + filepath.Join(t.TempDir(), "spk.db")
	g := startGateway(t, limitsOption(storage, "limits pro {\n\t\t\trate 3 1m\n\t\t}"), "policy statuspage")
	g.setPlan("acct_rate", "pro")
	k1, k2 := g.createKey("acct_rate"), g.createKey("acct_rate", "monitors:read")
	other := g.createKey("acct_other")
	g.setPlan("acct_other", "pro")

	r := g.do("GET", "/v1/monitors", bearer(k1)...)
	wantStatus(t, "first", r, http.StatusOK)
	if got := r.header.Get("RateLimit-Policy"); got != `"account";q=3;w=60` {
		t.Fatalf("RateLimit-Policy %q", got)
	}
	if got := r.header.Get("RateLimit"); got != `"account";r=2;t=20` {
		t.Fatalf("RateLimit on a 200: %q", got)
	}
	// A 403 for scope takes a token too and carries the headers.
	r = g.do("POST", "/v1/monitors", bearer(k2)...)
	wantStatus(t, "forbidden", r, http.StatusForbidden)
	if got := r.header.Get("RateLimit"); got != `"account";r=1;t=40` {
		t.Fatalf("RateLimit on a 403: %q", got)
	}
	wantStatus(t, "third, other key", g.do("GET", "/v1/monitors", bearer(k2)...), http.StatusOK)
	// The account's keys share its bucket: the fourth request is refused.
	before := g.upstream.count.Load()
	r = g.do("GET", "/v1/monitors", bearer(k1)...)
	b := want429(t, "fourth", r, "rate_limited")
	if b.RetryAfter != 20 {
		t.Fatalf("retry_after %d, want 20 (one token every 20s)", b.RetryAfter)
	}
	if got := r.header.Get("RateLimit"); got != `"account";r=0;t=60` {
		t.Fatalf("RateLimit on a 429: %q", got)
	}
	if g.upstream.count.Load() != before {
		t.Fatal("a limited request reached the upstream")
	}
	// Another account is not limited by this one.
	wantStatus(t, "other account", g.do("GET", "/v1/monitors", bearer(other)...), http.StatusOK)
	// Many 429s are not failed authentications: the key still works once
	// a token is back (the failure limit is 20 per address).
	for i := range 25 {
		want429(t, fmt.Sprintf("flood %d", i), g.do("GET", "/v1/monitors", bearer(k2)...), "rate_limited")
	}
	clock.add(20 * time.Second)
	wantStatus(t, "after a token came back", g.do("GET", "/v1/monitors", bearer(k1)...), http.StatusOK)
	// A plan without limits gets no RateLimit headers.
	g.setPlan("acct_other", "business")
	waitFor(t, "plan change", func() bool { return g.do("GET", "/v1/monitors", bearer(other)...).header.Get("RateLimit-Policy") == "" })
}

func TestLimitsKeyRate(t *testing.T) {
	useTestClock(t, time.Date(2026, 12, 4, 10, 30, 0, 0, time.UTC))
	storage := "storage sqlite " + filepath.Join(t.TempDir(), "spk.db")
	g := startGateway(t, limitsOption(storage, "limits pro {\n\t\t\trate 100 1s\n\t\t}"), "policy statuspage")
	g.setPlan("acct_kr", "pro")
	var slow keys.Created
	if st := g.adminJSON("POST", "/spk/accounts/acct_kr/keys", keys.CreateRequest{Name: "slow", Scopes: []string{},
		RateLimit: &keys.RateLimitSpec{Requests: 2, Window: "1m"}}, &slow); st != http.StatusCreated {
		t.Fatalf("create with rate_limit: %d", st)
	}
	fast := g.createKey("acct_kr")
	for i := range 2 {
		r := g.do("GET", "/v1/monitors", bearer(slow)...)
		wantStatus(t, fmt.Sprintf("slow key %d", i), r, http.StatusOK)
		if p := r.header.Get("RateLimit-Policy"); p != `"key";q=2;w=60, "account";q=100;w=1` {
			t.Fatalf("RateLimit-Policy %q", p)
		}
	}
	r := want429(t, "slow key over its own rate", g.do("GET", "/v1/monitors", bearer(slow)...), "rate_limited")
	if !strings.Contains(r.Message, "key") || r.RetryAfter != 30 {
		t.Fatalf("key limit body %+v", r)
	}
	wantStatus(t, "the account's other key", g.do("GET", "/v1/monitors", bearer(fast)...), http.StatusOK)
	// A rate above what a key may have is refused with the field, and no
	// key is created.
	var e keys.ErrorResponse
	if st := g.adminJSON("POST", "/spk/accounts/acct_kr/keys", keys.CreateRequest{Name: "too fast", Scopes: []string{},
		RateLimit: &keys.RateLimitSpec{Requests: 1_000_000, Window: "1s"}}, &e); st != http.StatusBadRequest ||
		len(e.Fields) != 1 || e.Fields[0].Field != "rate_limit" {
		t.Fatalf("too fast a key: %d %+v", st, e)
	}
	var list keys.ListResponse
	if g.adminJSON("GET", "/spk/accounts/acct_kr/keys", nil, &list); len(list.Keys) != 2 {
		t.Fatalf("%d keys after a refused create, want 2", len(list.Keys))
	}
}

func TestLimitsQuotaExhaustionAndReset(t *testing.T) {
	clock := useTestClock(t, time.Date(2026, 12, 4, 23, 59, 0, 0, time.UTC))
	storage := "storage sqlite " + filepath.Join(t.TempDir(), "spk.db")
	g := startGateway(t, limitsOption(storage, "limits pro {\n\t\t\tquota 2 day\n\t\t}"), "policy statuspage")
	g.setPlan("acct_q", "pro")
	k := g.createKey("acct_q", "monitors:read")
	wantStatus(t, "1", g.do("GET", "/v1/monitors", bearer(k)...), http.StatusOK)
	// A refusal for scope does not use the quota.
	wantStatus(t, "forbidden", g.do("DELETE", "/v1/monitors/1", bearer(k)...), http.StatusForbidden)
	r := g.do("GET", "/v1/monitors", bearer(k)...)
	wantStatus(t, "2", r, http.StatusOK)
	if got := r.header.Get("RateLimit"); got != `"quota";r=0;t=60` {
		t.Fatalf("RateLimit %q", got)
	}
	r = g.do("GET", "/v1/monitors", bearer(k)...)
	b := want429(t, "3", r, "quota_exceeded")
	if b.ResetsAt != "2026-12-05T00:00:00Z" || r.header.Get("Retry-After") != "60" {
		t.Fatalf("resets_at %q, Retry-After %q", b.ResetsAt, r.header.Get("Retry-After"))
	}
	clock.add(time.Minute)
	wantStatus(t, "next day", g.do("GET", "/v1/monitors", bearer(k)...), http.StatusOK)
}

// TestLimitsReload checks that a reload keeps the buckets and applies a
// changed limit.
func TestLimitsReload(t *testing.T) {
	useTestClock(t, time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC))
	storage := "storage sqlite " + filepath.Join(t.TempDir(), "spk.db")
	g := startGateway(t, limitsOption(storage, "limits pro {\n\t\t\trate 2 1h\n\t\t}"), "policy statuspage")
	g.setPlan("acct_rl", "pro")
	k := g.createKey("acct_rl")
	for range 2 {
		wantStatus(t, "within", g.do("GET", "/v1/monitors", bearer(k)...), http.StatusOK)
	}
	want429(t, "over", g.do("GET", "/v1/monitors", bearer(k)...), "rate_limited")
	// The same limits with another setting changed: the bucket stays empty.
	g.caddyCfg = strings.Replace(g.caddyCfg, "usage_flush_interval 200ms", "usage_flush_interval 300ms", 1)
	g.load()
	want429(t, "after a reload", g.do("GET", "/v1/monitors", bearer(k)...), "rate_limited")
	// A higher limit applies at once; the two used stay used.
	g.caddyCfg = strings.Replace(g.caddyCfg, "rate 2 1h", "rate 3 1h", 1)
	g.load()
	r := g.do("GET", "/v1/monitors", bearer(k)...)
	wantStatus(t, "after raising the limit", r, http.StatusOK)
	if p := r.header.Get("RateLimit-Policy"); p != `"account";q=3;w=3600` {
		t.Fatalf("policy after reload %q", p)
	}
	want429(t, "over the new limit", g.do("GET", "/v1/monitors", bearer(k)...), "rate_limited")
}

func TestLimitsRestartKeepsQuotaSQLite(t *testing.T) {
	testRestartKeepsQuota(t, "storage sqlite "+filepath.Join(t.TempDir(), "spk.db"))
}

func TestLimitsRestartKeepsQuotaPostgres(t *testing.T) {
	testRestartKeepsQuota(t, "storage postgres "+pgtest.DSN(t))
}

func testRestartKeepsQuota(t *testing.T, storage string) {
	useTestClock(t, time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC))
	opt := limitsOption(storage, "limits pro {\n\t\t\tquota 3 month\n\t\t}")
	g := startGateway(t, opt, "policy statuspage")
	g.setPlan("acct_restart", "pro")
	k := g.createKey("acct_restart")
	for range 3 {
		wantStatus(t, "within", g.do("GET", "/v1/monitors", bearer(k)...), http.StatusOK)
	}
	stopCaddy(t) // its last counts go to the store as it stops
	g2 := startGateway(t, opt, "policy statuspage")
	b := want429(t, "after a restart", g2.do("GET", "/v1/monitors", bearer(k)...), "quota_exceeded")
	if b.ResetsAt != "2027-01-01T00:00:00Z" {
		t.Fatalf("resets_at %q", b.ResetsAt)
	}
	var u caddymodule.UsageResponse
	if st := g2.adminJSON("GET", "/spk/accounts/acct_restart/usage", nil, &u); st != http.StatusOK || u.Quota == nil ||
		u.Quota.Limit != 3 || u.Quota.Used != 3 {
		t.Fatalf("usage after a restart: %d %+v", st, u.Quota)
	}
}

func TestLimitsUsageEndpoints(t *testing.T) {
	useTestClock(t, time.Date(2026, 12, 4, 10, 30, 0, 0, time.UTC))
	storage := "storage sqlite " + filepath.Join(t.TempDir(), "spk.db")
	g := startGateway(t, limitsOption(storage, "limits pro {\n\t\t\trate 2 1h\n\t\t\tquota 1000 month\n\t\t}"), "policy statuspage")
	g.setPlan("acct_u", "pro")
	k1, k2 := g.createKey("acct_u", "monitors:read"), g.createKey("acct_u")
	wantStatus(t, "allowed", g.do("GET", "/v1/monitors", bearer(k1)...), http.StatusOK)
	wantStatus(t, "forbidden", g.do("POST", "/v1/monitors", bearer(k1)...), http.StatusForbidden)
	want429(t, "limited", g.do("GET", "/v1/monitors", bearer(k2)...), "rate_limited")

	type row struct {
		PeriodStart time.Time `json:"period_start"`
		KeyID       string    `json:"key_id"`
		Allowed     int64     `json:"allowed"`
		Forbidden   int64     `json:"forbidden"`
		Limited     int64     `json:"limited"`
	}
	var resp struct {
		Usage []row `json:"usage"`
		Quota *struct {
			Limit    int64     `json:"limit"`
			Used     int64     `json:"used"`
			ResetsAt time.Time `json:"resets_at"`
		} `json:"quota"`
	}
	q := "?from=2026-12-04T00:00:00Z&to=2026-12-05T00:00:00Z"
	waitFor(t, "usage flush", func() bool {
		resp.Usage = nil
		return g.adminJSON("GET", "/spk/accounts/acct_u/usage"+q, nil, &resp) == http.StatusOK && len(resp.Usage) == 2
	})
	hour := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	want := map[string]row{k1.ID: {hour, k1.ID, 1, 1, 0}, k2.ID: {hour, k2.ID, 0, 0, 1}}
	for _, r := range resp.Usage {
		if w := want[r.KeyID]; r != w {
			t.Errorf("row %+v, want %+v", r, w)
		}
	}
	if resp.Quota == nil || resp.Quota.Limit != 1000 || resp.Quota.Used != 1 || !resp.Quota.ResetsAt.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("quota %+v", resp.Quota)
	}
	// Daily, one key.
	resp.Usage, resp.Quota = nil, nil
	if st := g.adminJSON("GET", "/spk/keys/"+k1.ID+"/usage"+q+"&granularity=day", nil, &resp); st != http.StatusOK ||
		len(resp.Usage) != 1 || resp.Usage[0].Allowed != 1 || !resp.Usage[0].PeriodStart.Equal(hour.Truncate(24*time.Hour)) || resp.Quota != nil {
		t.Fatalf("key usage by day: %d %+v", st, resp)
	}
	// Bad input: 400 with the field; an unknown key: 404.
	for _, bad := range []struct{ query, field string }{
		{"?from=yesterday", "from"},
		{"?granularity=week", "granularity"},
		{"?from=2026-12-05T00:00:00Z&to=2026-12-04T00:00:00Z", "from"},
		{"?from=2025-01-01T00:00:00Z&to=2026-12-04T00:00:00Z", "from"},
	} {
		var e keys.ErrorResponse
		if st := g.adminJSON("GET", "/spk/accounts/acct_u/usage"+bad.query, nil, &e); st != http.StatusBadRequest ||
			len(e.Fields) != 1 || e.Fields[0].Field != bad.field {
			t.Errorf("%s: %d %+v", bad.query, st, e)
		}
	}
	if st := g.adminJSON("GET", "/spk/keys/key_unknown/usage", nil, nil); st != http.StatusNotFound {
		t.Errorf("unknown key: %d", st)
	}
}

// waitFor polls cond (the gateway's background work is asynchronous) for
// up to ten seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopCaddy stops the in-process Caddy, as a process shutting down would.
func stopCaddy(t *testing.T) {
	t.Helper()
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
}
