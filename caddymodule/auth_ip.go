package caddymodule

import (
	"net/http"
	"net/netip"

	"github.com/spkgate/spkgate/keycache"
)

// allowedFrom reports whether the key of e may be used from the client
// address of r: always for a key without allowed_ips; otherwise when one
// of its prefixes holds Caddy's client IP. That address is the peer's
// unless the server's trusted_proxies trust the peer, in which case it is
// the one X-Forwarded-For (or the configured client_ip_headers) names: so
// trusted_proxies decides whether a client can choose the address it is
// checked by. An address that cannot be parsed is not allowed.
func allowedFrom(r *http.Request, e *keycache.Entry) bool {
	if !e.IPRestricted() {
		return true
	}
	ip, err := netip.ParseAddr(clientAddr(r))
	return err == nil && e.AllowsIP(ip)
}
