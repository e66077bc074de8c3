package caddymodule_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(setUser{})
	httpcaddyfile.RegisterHandlerDirective("spk_test_set_user", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		h.Next()
		return setUser{}, nil
	})
}

// setUser stands in for an authentication handler earlier on the route
// (basic_auth does the same): it sets {http.auth.user.id} statically.
type setUser struct{}

func (setUser) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.spk_test_set_user", New: func() caddy.Module { return setUser{} }}
}

func (setUser) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set("http.auth.user.id", "someone-else")
	return next.ServeHTTP(w, r)
}

// The {http.auth.user.*} placeholders carry the key's identity to the
// handlers after spk_auth, and win over a value an earlier handler set.
func TestPlaceholders(t *testing.T) {
	up := startUpstream(t)
	port, adminPort := freePort(t), freePort(t)
	g := &gateway{
		t:        t,
		base:     fmt.Sprintf("http://127.0.0.1:%d", port),
		admin:    fmt.Sprintf("http://127.0.0.1:%d", adminPort),
		upstream: up,
		client:   &http.Client{Timeout: 10 * time.Second},
	}
	g.caddyCfg = fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	storage file_system %s
	spk {
		storage sqlite %s
	}
}
http://127.0.0.1:%d {
	route /v1/* {
		spk_auth {
			policy statuspage
		}
		request_header X-Who "{http.auth.user.id}|{http.auth.user.key_id}|{http.auth.user.scopes}|{http.auth.user.plan}"
		reverse_proxy %s
	}
	route /earlier/* {
		spk_test_set_user
		spk_auth {
			policy statuspage /earlier
		}
		request_header X-Who "{http.auth.user.id}|{http.auth.user.key_id}|{http.auth.user.scopes}|{http.auth.user.plan}"
		reverse_proxy %s
	}
}
`, adminPort, t.TempDir(), filepath.Join(t.TempDir(), "spk.db"), port, up.addr, up.addr)
	g.load()
	t.Cleanup(func() { caddy.Stop() })
	g.setPlan("acct_ph", "business")
	k := g.createKey("acct_ph", "monitors:read", "incidents:write")
	want := "acct_ph|" + k.ID + "|monitors:read,incidents:write|business"
	for _, path := range []string{"/v1/monitors/1", "/earlier/monitors/1"} {
		if res := g.do("GET", path, "Authorization", "Bearer "+k.Secret); res.status != http.StatusOK {
			t.Fatalf("%s: status %d: %s", path, res.status, res.body)
		}
		if got := up.lastSeen().Header.Get("X-Who"); got != want {
			t.Errorf("%s: placeholders %q, want %q", path, got, want)
		}
	}
}
