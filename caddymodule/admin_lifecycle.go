package caddymodule

import (
	"net"
	"net/http"
	"os"
	"os/user"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/spkgate/spkgate/keys"
)

// adminActor is the actor of a change made through Caddy's admin API:
// "admin", with the address the request came from (the admin endpoint
// has no trusted proxies).
func adminActor(r *http.Request) keys.Actor {
	return keys.RequestActor(r, "admin", keys.SourceAdminAPI, "")
}

// cliActor is the actor of a change made by `caddy spk`: the OS user.
func cliActor() keys.Actor {
	name := ""
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if name == "" {
		name = os.Getenv("USER")
	}
	if name == "" {
		name = "unknown"
	}
	return keys.Actor{Name: name, Source: keys.SourceCLI}
}

// clientIP is Caddy's client IP of r (trusted_proxies honoured): the
// address the server decided the request came from; "" if Caddy did not
// set one.
func clientIP(r *http.Request) string {
	if s, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && s != "" {
		return s
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return ""
}
