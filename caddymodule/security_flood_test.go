package caddymodule_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spkgate/spkgate/internal/pgtest"
	"github.com/spkgate/spkgate/keystore/pgstore"
)

// floodRequests is how many requests with random well-formed keys
// TestSecurityFlood sends (fewer with -short).
const floodRequests = 100_000

// TestSecurityFlood sends 100,000 requests with random well-formed keys
// (each one a cache miss and a store lookup) from many goroutines against
// the PostgreSQL store, with the failure limit off, while legitimate
// clients keep working: cached keys answer 200 throughout, keys never seen
// before still get their store lookup (200, never 503), no lookup fails
// for want of a connection, and the store's pool stays within its size.
func TestSecurityFlood(t *testing.T) {
	dsn := pgtest.DSN(t)
	g := startSecGateway(t, secOptions{storage: "storage postgres " + dsn, auth: "policy statuspage\nfailure_limit off"})
	g.setPlan("acct_fl", "pro")
	var cached []string
	for range 4 {
		k := g.createKey("acct_fl", "monitors:read")
		wantStatus(t, "warm", g.do("GET", "/v1/monitors", "X-API-Key", k.Secret), 200)
		cached = append(cached, k.Secret)
	}
	var fresh []string
	for range 40 {
		fresh = append(fresh, g.createKey("acct_fl", "monitors:read").Secret)
	}

	n := floodRequests
	if testing.Short() {
		n = 10_000
	}
	const workers = 48
	transport := &http.Transport{MaxIdleConnsPerHost: workers + 8, MaxConnsPerHost: workers + 8}
	defer transport.CloseIdleConnections()
	client := &http.Client{Timeout: 30 * time.Second, Transport: transport}
	get := func(key string) (int, time.Duration, error) {
		req, _ := http.NewRequest("GET", g.base+"/v1/monitors", nil)
		req.Header.Set("X-API-Key", key)
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, time.Since(t0), nil
	}
	latencies := func(k int) []time.Duration {
		var out []time.Duration
		for i := range k {
			st, d, err := get(cached[i%len(cached)])
			if err != nil || st != 200 {
				t.Fatalf("legitimate cached key: %d %v", st, err)
			}
			out = append(out, d)
		}
		return out
	}
	before := latencies(300)
	c0 := g.counters()

	// The flood: random keys, made ahead so that making them does not
	// compete with the gateway for the CPU.
	floodKeys := make([]string, n)
	for i := range floodKeys {
		floodKeys[i] = mustGenerate(t).Secret
	}
	var next, done atomic.Int64
	var mu sync.Mutex
	statuses := map[int]int{}
	var errs []string
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			local := map[int]int{}
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					break
				}
				st, _, err := get(floodKeys[i])
				if err != nil {
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
					continue
				}
				local[st]++
				done.Add(1)
			}
			mu.Lock()
			for k, v := range local {
				statuses[k] += v
			}
			mu.Unlock()
		})
	}

	// Meanwhile: legitimate clients, and the store's connections.
	var during []time.Duration
	freshStatus := map[int]int{}
	var freshLatency []time.Duration
	// The store's connections as the server counts them, in each sample.
	var conns []int
	db := pgtest.DatabaseName(t, dsn)
	watch, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(context.Background())
	for i := 0; done.Load() < int64(n) && len(errs) == 0; i++ {
		if next.Load() >= int64(n) && done.Load()+int64(workers) >= int64(n) {
			break
		}
		during = append(during, latencies(5)...)
		if i%10 == 0 && i/10 < len(fresh) {
			st, d, err := get(fresh[i/10])
			if err != nil {
				t.Fatal(err)
			}
			freshStatus[st]++
			freshLatency = append(freshLatency, d)
		}
		// The pool's connections: client backends only (an autovacuum
		// worker analysing the new tables is listed with the database's
		// name too; CI once counted one), and not the listener's
		// (application_name ending in pgstore.ListenerSuffix): under
		// this load a listener session replaced after a missed heartbeat
		// can briefly show next to its successor.
		var nc int
		if err := watch.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()
				AND backend_type = 'client backend' AND application_name NOT LIKE '%' || $2`, db, pgstore.ListenerSuffix).Scan(&nc); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, nc)
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	elapsed := time.Since(start)
	after := latencies(300)
	c1 := g.counters()

	t.Logf("%d flood requests from %d goroutines in %s (%.0f/s): statuses %v; store lookups %+.0f, failed %+.0f",
		n, workers, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), statuses, c1.lookups-c0.lookups, c1.failed-c0.failed)
	t.Logf("cached legitimate key, p50/p99: before %s/%s, during %s/%s (%d requests), after %s/%s",
		pct(before, 50), pct(before, 99), pct(during, 50), pct(during, 99), len(during), pct(after, 50), pct(after, 99))
	if len(conns) == 0 {
		t.Fatal("the flood ended before the store's connections were counted")
	}
	pool := pgstore.DefaultMaxConns
	over := 0
	for _, nc := range conns {
		if nc > pool {
			over++
		}
	}
	t.Logf("keys never seen before, during the flood: %v, p50/max %s/%s; store connections at most %d (pool size %d), more than the pool in %d of %d samples",
		freshStatus, pct(freshLatency, 50), pct(freshLatency, 100), slices.Max(conns), pool, over, len(conns))

	if len(errs) > 0 {
		t.Fatalf("%d flood requests failed, first: %s", len(errs), errs[0])
	}
	if statuses[401] != n {
		t.Errorf("flood statuses %v, want %d × 401", statuses, n)
	}
	if c1.failed != c0.failed {
		t.Errorf("%v store lookups failed or found no connection in time", c1.failed-c0.failed)
	}
	if got := c1.lookups - c0.lookups; got < float64(n) {
		t.Errorf("%v store lookups for %d unknown keys: the flood did not reach the store", got, n)
	}
	if len(freshLatency) < 5 || freshStatus[200] != len(freshLatency) {
		t.Errorf("keys never seen before, during the flood: %v (want only 200, at least 5)", freshStatus)
	}
	if over > 0 {
		t.Errorf("store connections: at most %d, more than the pool (%d) in %d of %d samples", slices.Max(conns), pool, over, len(conns))
	}
	// Gross bounds only: the flood's 48 clients share two cores with the
	// gateway and PostgreSQL, so a legitimate request waits for CPU too.
	if p := pct(during, 99); p > time.Second {
		t.Errorf("cached legitimate keys slowed to p99 %s during the flood", p)
	}
	if p := pct(after, 50); p > 20*max(pct(before, 50), time.Millisecond) {
		t.Errorf("cached legitimate keys stay slow after the flood: p50 %s, before %s", p, pct(before, 50))
	}
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := min(len(s)-1, len(s)*p/100)
	return s[i].Round(10 * time.Microsecond)
}

// TestSecurityFailureLimit checks the limit on failed authentications per
// client address: past it an address gets 429 with Retry-After (and no
// store lookup) while valid traffic is never limited; X-Forwarded-For and
// its kin count only when Caddy's trusted_proxies covers the peer.
func TestSecurityFailureLimit(t *testing.T) {
	// fail sends limit guesses, each a well-formed unknown key, and
	// checks they get 401.
	fail := func(t *testing.T, g *secGateway, limit int, hdr ...string) {
		t.Helper()
		for i := range limit {
			r := g.do("GET", "/v1/monitors", append([]string{"X-API-Key", mustGenerate(t).Secret}, hdr...)...)
			if r.status != 401 {
				t.Fatalf("guess %d: %d %s", i+1, r.status, r.body)
			}
		}
	}
	blocked := func(t *testing.T, g *secGateway, what string, hdr ...string) {
		t.Helper()
		c0 := g.counters()
		r := g.do("GET", "/v1/monitors", append([]string{"X-API-Key", mustGenerate(t).Secret}, hdr...)...)
		if r.status != 429 || r.body != `{"error":"too_many_requests","message":"too many failed authentications from this address; retry after the time in Retry-After"}` {
			t.Fatalf("%s: %d %s, want 429", what, r.status, r.body)
		}
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 || s > 60 {
			t.Fatalf("%s: Retry-After %q", what, r.header.Get("Retry-After"))
		}
		if c1 := g.counters(); c1.lookups != c0.lookups {
			t.Fatalf("%s: a blocked guess cost a store lookup", what)
		}
	}
	spoofs := [][]string{
		{"X-Forwarded-For", "203.0.113.7"},
		{"X-Forwarded-For", "203.0.113.8, 198.51.100.9"},
		{"X-Real-IP", "203.0.113.10"},
		{"Forwarded", "for=203.0.113.11"},
		{"True-Client-IP", "203.0.113.12"},
		{"CF-Connecting-IP", "203.0.113.13"},
	}

	t.Run("default limit from an untrusted peer", func(t *testing.T) {
		g := startSecGateway(t, secOptions{auth: "policy statuspage"})
		g.setPlan("acct_l", "pro")
		k := g.createKey("acct_l")
		for range 200 { // valid traffic is never limited
			wantStatus(t, "valid", g.do("GET", "/v1/monitors", "X-API-Key", k.Secret), 200)
		}
		fail(t, g, 20) // the default: 20 a minute
		blocked(t, g, "21st guess")
		// Malformed keys and bad checksums are failures too.
		r := g.do("GET", "/v1/monitors", "X-API-Key", withBadChecksum(k.Secret))
		if r.status != 429 && r.status != 401 {
			t.Fatalf("bad checksum while blocked: %d", r.status)
		}
		for _, h := range spoofs {
			blocked(t, g, "spoofed "+h[0]+": "+h[1], h...)
		}
		// A valid key already cached still passes from the blocked address.
		wantStatus(t, "cached valid key", g.do("GET", "/v1/monitors", "X-API-Key", k.Secret), 200)
	})

	t.Run("trusted proxies give each client its own budget", func(t *testing.T) {
		g := startSecGateway(t, secOptions{
			global: "servers {\ntrusted_proxies static 127.0.0.1/32\n}",
			auth:   "policy statuspage\nfailure_limit 5 1m",
		})
		fail(t, g, 5, "X-Forwarded-For", "198.51.100.1")
		blocked(t, g, "client A", "X-Forwarded-For", "198.51.100.1")
		fail(t, g, 5, "X-Forwarded-For", "198.51.100.2")
		blocked(t, g, "client B", "X-Forwarded-For", "198.51.100.2")
		fail(t, g, 5) // the proxy's own address
		blocked(t, g, "the proxy itself")
		fail(t, g, 1, "X-Forwarded-For", "198.51.100.3")
	})

	t.Run("trusted_proxies_strict: spoofed entries left of the real client do not help", func(t *testing.T) {
		g := startSecGateway(t, secOptions{
			global: "servers {\ntrusted_proxies static 127.0.0.1/32\ntrusted_proxies_strict\n}",
			auth:   "policy statuspage\nfailure_limit 5 1m",
		})
		fail(t, g, 5, "X-Forwarded-For", "198.51.100.1")
		for i := range 5 {
			blocked(t, g, "spoofed left entry", "X-Forwarded-For", fmt.Sprintf("203.0.113.%d, 198.51.100.1", i+1))
		}
	})
}
