package caddymodule_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/spkgate/spkgate/internal/testkit"
)

// BenchmarkPipeline is the marginal cost of spk_auth inside a whole Caddy:
// one in-process Caddy serves the same request through two servers, one
// with plain reverse_proxy and one with spk_auth + reverse_proxy, to a real
// upstream on loopback. Each iteration is one request through
// caddyhttp.Server.ServeHTTP (new replacer, routes, handlers, the proxied
// round trip and the upstream's own parsing of what it receives), without
// a client connection, so the difference between the sub-benchmarks is
// what spk_auth costs a request, including the Caddy work it causes
// (reverse_proxy copies and logs the headers it adds). Every request
// carries the key, also to the plain server.
//
// The request_header server makes only the header edits spk_auth makes
// (the credential removed, four X-Spk-* headers set) with Caddy's own
// request_header, and no check: what the identity-header contract alone
// costs through reverse_proxy, for comparison.
//
// The spk_auth/limits sub-benchmarks use keys of an account on plan
// business, which has a rate and a quota that no request reaches: what
// the limiter, the quota count, the usage metering and the RateLimit
// headers add to a request that is never refused.
//
// Run it with -cpu 1: then the goroutines off the request path (the
// cache's admission policy, the proxy transport's read and write loops,
// the upstream) are counted in ns/op too.
//
//	go test -run '^$' -bench Pipeline -benchmem -cpu 1 -count 6 ./caddymodule/
func BenchmarkPipeline(b *testing.B) {
	up := startUpstream(b)
	plainPort, spkPort, adminPort, hdrPort := testkit.FreePort(b), testkit.FreePort(b), testkit.FreePort(b), testkit.FreePort(b)
	g := &gateway{
		t:        b,
		admin:    fmt.Sprintf("http://127.0.0.1:%d", adminPort),
		upstream: up,
		client:   &http.Client{Timeout: 10 * time.Second},
	}
	proxy := fmt.Sprintf(`reverse_proxy %s {
		transport http {
			keepalive_idle_conns_per_host 64
		}
	}`, up.addr)
	g.caddyCfg = fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	storage file_system %s
	log default {
		level ERROR
	}
	spk {
		storage sqlite %s
		limits business {
			rate 1000000 1s
			quota 1000000000000000 month
		}
	}
}
http://127.0.0.1:%d {
	%s
}
http://127.0.0.1:%d {
	spk_auth {
		policy statuspage
	}
	%s
}
http://127.0.0.1:%d {
	request_header -Authorization
	request_header X-Spk-Account-Id acct_pipeline
	request_header X-Spk-Key-Id key_0123456789abcdef
	request_header X-Spk-Scopes monitors:read
	request_header X-Spk-Plan pro
	%s
}
`, adminPort, b.TempDir(), filepath.Join(b.TempDir(), "spk.db"), plainPort, proxy, spkPort, proxy, hdrPort, proxy)
	g.load()
	b.Cleanup(func() { caddy.Stop() })

	app, err := caddy.ActiveContext().App("http")
	if err != nil {
		b.Fatal(err)
	}
	servers := map[int]*caddyhttp.Server{}
	for _, s := range app.(*caddyhttp.App).Servers {
		for _, l := range s.Listen {
			if port, err := strconv.Atoi(l[strings.LastIndexByte(l, ':')+1:]); err == nil {
				servers[port] = s
			}
		}
	}
	plain, spk, hdr := servers[plainPort], servers[spkPort], servers[hdrPort]
	if plain == nil || spk == nil || hdr == nil {
		b.Fatalf("servers not found by port: %v", servers)
	}

	// Each account's keys: one at first, 10,000 once a sub-benchmark asks
	// for them.
	keysOf := func(account, plan string) func(n int) []string {
		g.setPlan(account, plan)
		var keys []string
		return func(n int) []string {
			for len(keys) < n {
				keys = append(keys, g.createKey(account, "monitors:read").Secret)
			}
			return keys[:n]
		}
	}
	unlimited, limited := keysOf("acct_pipeline", "pro"), keysOf("acct_limited", "business")
	unlimited(1)
	limited(1)

	sg := &secGateway{gateway: g}
	serve := func(b *testing.B, srv *caddyhttp.Server, keys []string) {
		// Every key once first, so that the timed loop sees cached keys.
		for _, k := range keys {
			if code := serveOnce(srv, k); code != http.StatusOK {
				b.Fatalf("warm-up: status %d", code)
			}
		}
		before, lookups, gc0 := up.count.Load(), sg.counters().lookups, gcCPU()
		b.ReportAllocs()
		b.ResetTimer()
		i := 0
		for b.Loop() {
			if code := serveOnce(srv, keys[i%len(keys)]); code != http.StatusOK {
				b.Fatalf("status %d", code)
			}
			i++
		}
		b.StopTimer()
		if n := up.count.Load() - before; n < int64(b.N) {
			b.Fatalf("the upstream saw %d requests of %d", n, b.N)
		}
		b.ReportMetric((sg.counters().lookups-lookups)/float64(b.N), "lookups/op")
		b.ReportMetric((gcCPU()-gc0)*1e9/float64(b.N), "gc-ns/op")
	}
	b.Run("reverse_proxy", func(b *testing.B) { serve(b, plain, unlimited(1)) })
	b.Run("request_header", func(b *testing.B) { serve(b, hdr, unlimited(1)) })
	b.Run("spk_auth/one_key", func(b *testing.B) { serve(b, spk, unlimited(1)) })
	b.Run("spk_auth/10000_keys", func(b *testing.B) { serve(b, spk, unlimited(10_000)) })
	b.Run("spk_auth/limits/one_key", func(b *testing.B) { serve(b, spk, limited(1)) })
	b.Run("spk_auth/limits/10000_keys", func(b *testing.B) { serve(b, spk, limited(10_000)) })
}

// serveOnce sends one API request carrying key through srv.
func serveOnce(srv *caddyhttp.Server, key string) int {
	r := httptest.NewRequest("GET", "http://127.0.0.1/v1/monitors/42", nil)
	r.RemoteAddr = "127.0.0.1:40000"
	r.Header["User-Agent"] = []string{"spk-bench/1"}
	r.Header["Accept"] = []string{"application/json"}
	r.Header["Authorization"] = []string{"Bearer " + key}
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, r)
	return w.Code
}

// gcCPU is the CPU time the garbage collector has used so far, in seconds
// (the runtime's estimate, including assists).
func gcCPU() float64 {
	m := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(m)
	return m[0].Value.Float64()
}
