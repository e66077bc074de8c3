package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/spkgate/spkgate/keycache"
	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore/sqlitestore"
	"github.com/spkgate/spkgate/limits"
	"github.com/spkgate/spkgate/scope"
)

// benchHandler is spk_auth wired to a real SQLite store and cache, without
// the rest of Caddy, so that the benchmark measures the handler alone.
func benchHandler(b *testing.B, scopes ...string) (*Auth, string) {
	b.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(b.TempDir(), "spk.db"))
	if err != nil {
		b.Fatal(err)
	}
	c, err := keycache.New(st, keycache.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(); st.Close() })
	m := &keys.Manager{Store: st, Cache: c}
	if err := m.SetPlan(ctx, keys.Actor{Name: "test", Source: keys.SourceCLI}, "acct_bench", "pro"); err != nil {
		b.Fatal(err)
	}
	k, err := m.Create(ctx, keys.Actor{Name: "test", Source: keys.SourceCLI}, "acct_bench", keys.CreateRequest{Name: "bench", Scopes: scopes})
	if err != nil {
		b.Fatal(err)
	}
	policy, err := scope.Compile(scope.StatusPage("/v1"))
	if err != nil {
		b.Fatal(err)
	}
	// No limits configured: an unlimited limiter, as the app provisions.
	app := &App{APIPlans: DefaultAPIPlans, limits: &limiterRun{lim: limits.New(nil, limits.Options{})}}
	h := &Auth{app: app, cache: c, policy: policy, hide: true, logger: zap.NewNop()}
	return h, k.Secret
}

var okHandler = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

// BenchmarkServeHTTPCached is the whole check of a request whose key is
// cached: read the header, parse and checksum the key, hash it, hit the
// cache, check plan and scope, strip client X-Spk-* headers, set the
// identity headers and placeholders, record the use.
func BenchmarkServeHTTPCached(b *testing.B) {
	h, secret := benchHandler(b, "monitors:read")
	serveCached(b, h, [][]string{{"Bearer " + secret}})
}

// BenchmarkServeHTTPCachedSpread is BenchmarkServeHTTPCached with 10,000
// distinct cached keys used round robin: the working set of a busy gateway
// rather than one hot key.
func BenchmarkServeHTTPCachedSpread(b *testing.B) {
	h, _ := benchHandler(b)
	m := &keys.Manager{Store: h.cache.Store(), Cache: h.cache}
	auths := make([][]string, 10_000)
	for i := range auths {
		k, err := m.Create(context.Background(), keys.Actor{Name: "test", Source: keys.SourceCLI}, "acct_bench", keys.CreateRequest{Name: "spread"})
		if err != nil {
			b.Fatal(err)
		}
		auths[i] = []string{"Bearer " + k.Secret}
	}
	serveCached(b, h, auths)
}

// serveCached measures h on requests carrying auths round robin, each
// with a replacer of its own as Caddy gives every request (made, with the
// request, while the timer is stopped), after every key was used once.
func serveCached(b *testing.B, h *Auth, auths [][]string) {
	const batch = 4096
	fresh := func() []*http.Request {
		reqs := make([]*http.Request, batch)
		for i := range reqs {
			r := httptest.NewRequest("GET", "http://gw/v1/monitors/42", nil)
			r.Header.Set("User-Agent", "bench")
			r.Header.Set("Accept", "application/json")
			caddyhttp.NewTestReplacer(r)
			reqs[i] = r
		}
		return reqs
	}
	w := httptest.NewRecorder()
	reqs := fresh()
	for i, a := range auths {
		r := reqs[i%batch]
		r.Header["Authorization"] = a
		if err := h.ServeHTTP(w, r, okHandler); err != nil || w.Code != 200 {
			b.Fatalf("warm-up: %v %d", err, w.Code)
		}
	}
	h.cache.Wait()
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if i%batch == 0 {
			b.StopTimer()
			reqs = fresh()
			b.StartTimer()
		}
		r := reqs[i%batch]
		r.Header["Authorization"] = auths[i%len(auths)]
		i++
		if err := h.ServeHTTP(w, r, okHandler); err != nil {
			b.Fatal(err)
		}
	}
	if r := reqs[(i-1)%batch]; r.Header.Get(hdrAccount) != "acct_bench" {
		b.Fatal("identity not set")
	}
}

// BenchmarkServeHTTPMalformed is a request with a made-up key: refused
// before any cache or store lookup.
func BenchmarkServeHTTPMalformed(b *testing.B) {
	h, secret := benchHandler(b)
	bad := []string{"Bearer " + secret[:len(secret)-1] + "0"}
	if bad[0] == "Bearer "+secret {
		bad = []string{"Bearer " + secret[:len(secret)-1] + "1"}
	}
	r := httptest.NewRequest("GET", "http://gw/v1/monitors/42", nil)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		r.Header["Authorization"] = bad
		w.Body.Reset()
		_ = h.ServeHTTP(w, r, okHandler)
	}
	if w.Code != 401 {
		b.Fatalf("status %d", w.Code)
	}
}
