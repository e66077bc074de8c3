package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/keys"
)

// BenchmarkServeHTTPCachedIP is BenchmarkServeHTTPCached with Caddy's
// client IP set as the server sets it, for a key without allowed_ips and
// for one restricted to four prefixes, the client's in the last: the
// difference is what the IP restriction costs a request.
func BenchmarkServeHTTPCachedIP(b *testing.B) {
	for _, bc := range []struct {
		name string
		ips  []string
	}{
		{"unrestricted", nil},
		{"restricted", []string{"10.0.0.0/8", "2001:db8::/32", "172.16.0.0/12", "192.0.2.0/24"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h, secret := benchHandler(b, "monitors:read")
			if bc.ips != nil {
				cred, err := h.cache.Store().LookupKey(context.Background(), apikey.Hash(secret))
				if err != nil {
					b.Fatal(err)
				}
				m := &keys.Manager{Store: h.cache.Store(), Cache: h.cache}
				if _, err := m.Update(context.Background(), keys.Actor{Name: "bench", Source: keys.SourceCLI}, "", cred.Key.ID,
					keys.UpdateRequest{AllowedIPs: keys.Some(bc.ips)}); err != nil {
					b.Fatal(err)
				}
			}
			auth := []string{"Bearer " + secret}
			const batch = 4096
			fresh := func() []*http.Request {
				reqs := make([]*http.Request, batch)
				for i := range reqs {
					r := httptest.NewRequest("GET", "http://gw/v1/monitors/42", nil)
					r.Header.Set("User-Agent", "bench")
					caddyhttp.NewTestReplacer(r)
					r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey,
						map[string]any{caddyhttp.ClientIPVarKey: "192.0.2.1"}))
					reqs[i] = r
				}
				return reqs
			}
			w := httptest.NewRecorder()
			reqs := fresh()
			reqs[0].Header["Authorization"] = auth
			if err := h.ServeHTTP(w, reqs[0], okHandler); err != nil || w.Code != 200 {
				b.Fatalf("warm-up: %v %d", err, w.Code)
			}
			h.cache.Wait()
			reqs = fresh()
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				if i%batch == 0 && i > 0 {
					b.StopTimer()
					reqs = fresh()
					b.StartTimer()
				}
				r := reqs[i%batch]
				r.Header["Authorization"] = auth
				i++
				if err := h.ServeHTTP(w, r, okHandler); err != nil {
					b.Fatal(err)
				}
			}
			if w.Code != 200 {
				b.Fatalf("status %d", w.Code)
			}
			// The restriction was in force: another address is refused.
			r := httptest.NewRequest("GET", "http://gw/v1/monitors/42", nil)
			caddyhttp.NewTestReplacer(r)
			r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey,
				map[string]any{caddyhttp.ClientIPVarKey: "198.51.100.1"}))
			r.Header["Authorization"] = auth
			w = httptest.NewRecorder()
			if err := h.ServeHTTP(w, r, okHandler); err != nil {
				b.Fatal(err)
			}
			if want := map[bool]int{true: 403, false: 200}[bc.ips != nil]; w.Code != want {
				b.Fatalf("from another address: %d, want %d", w.Code, want)
			}
		})
	}
}

// BenchmarkAllowedFrom is the IP check alone, as spk_auth runs it on a
// cached entry: nothing for a key without allowed_ips; for a restricted
// key, reading Caddy's client IP, parsing it and comparing it with four
// prefixes (the client's in the last). Its restricted figure is what the
// restriction adds to a request; the whole-request benchmark above is too
// noisy on a shared machine to resolve it.
func BenchmarkAllowedFrom(b *testing.B) {
	for _, bc := range []struct {
		name string
		ips  []string
	}{
		{"unrestricted", nil},
		{"restricted", []string{"10.0.0.0/8", "2001:db8::/32", "172.16.0.0/12", "192.0.2.0/24"}},
		{"restricted-ipv6", []string{"10.0.0.0/8", "172.16.0.0/12", "192.0.2.0/24", "2001:db8::/32"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h, secret := benchHandler(b, "monitors:read")
			ctx := context.Background()
			if bc.ips != nil {
				cred, err := h.cache.Store().LookupKey(ctx, apikey.Hash(secret))
				if err != nil {
					b.Fatal(err)
				}
				m := &keys.Manager{Store: h.cache.Store(), Cache: h.cache}
				if _, err := m.Update(ctx, keys.Actor{Name: "bench", Source: keys.SourceCLI}, "", cred.Key.ID,
					keys.UpdateRequest{AllowedIPs: keys.Some(bc.ips)}); err != nil {
					b.Fatal(err)
				}
			}
			e, status := h.cache.Verify(ctx, secret)
			if e == nil || status != 0 {
				b.Fatalf("verify: %v", status)
			}
			client := "192.0.2.1"
			if bc.name == "restricted-ipv6" {
				client = "2001:db8::1"
			}
			r := httptest.NewRequest("GET", "http://gw/v1/monitors/42", nil)
			r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey,
				map[string]any{caddyhttp.ClientIPVarKey: client}))
			b.ReportAllocs()
			for b.Loop() {
				if !allowedFrom(r, e) {
					b.Fatal("refused")
				}
			}
		})
	}
}
