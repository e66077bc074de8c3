package caddymodule_test

import (
	"net/http"
	"testing"

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
	const who = `request_header X-Who "{http.auth.user.id}|{http.auth.user.key_id}|{http.auth.user.scopes}|{http.auth.user.plan}"`
	g := startSite(t, "", `route /v1/* {
		spk_auth {
			policy statuspage
		}
		`+who+`
		reverse_proxy `+upstreamAddr+`
	}
	route /earlier/* {
		spk_test_set_user
		spk_auth {
			policy statuspage /earlier
		}
		`+who+`
		reverse_proxy `+upstreamAddr+`
	}`)
	up := g.upstream
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
