package caddymodule

import (
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Canonical header names.
const (
	hdrAuthorization = "Authorization"
	hdrAPIKey        = "X-Api-Key"
	hdrAccount       = "X-Spk-Account-Id"
	hdrKeyID         = "X-Spk-Key-Id"
	hdrScopes        = "X-Spk-Scopes"
	hdrPlan          = "X-Spk-Plan"
)

// stripForged removes every header an upstream could take for identity
// the gateway vouches for: X-Spk-* in any spelling, method overrides, path
// overrides (X-Original-URL, X-Rewrite-URL: Symfony, Laminas and IIS route
// on them, so the upstream would serve another path than the one checked),
// and the same names listed in Connection (which would make a proxy drop
// the real ones). With hide, it also removes spellings of X-API-Key that
// CGI, FastCGI and WSGI read as the same variable (X_Api_Key). It also
// drops every query parameter an upstream could read as _method (see
// dropMethodParams).
func stripForged(r *http.Request, hide bool) {
	for name := range r.Header {
		if isSpkHeader(name) || isMethodOverride(name) || isPathOverride(name) ||
			(hide && sameName(name, "x-api-key")) {
			delete(r.Header, name)
		}
	}
	if conn := r.Header["Connection"]; len(conn) > 0 {
		stripConnectionTokens(r.Header, conn)
	}
	if r.URL.RawQuery != "" {
		if q, changed := dropMethodParams(r.URL.RawQuery); changed {
			r.URL.RawQuery = q
		}
	}
}

// filterTrailers keeps forged identity headers, method overrides and
// (with hide) credentials out of the trailers a client declared. Caddy's
// reverse_proxy forwards request trailers, and net/http fills in their
// values only when the body has been read to its end, so they are removed
// now and again at the end of the body, before the proxy copies them.
func filterTrailers(r *http.Request, hide bool) {
	stripTrailer(r.Trailer, hide)
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &trailerFilter{ReadCloser: r.Body, trailer: r.Trailer, hide: hide}
	}
}

func stripTrailer(hd http.Header, hide bool) {
	for name := range hd {
		if isSpkHeader(name) || isMethodOverride(name) ||
			(hide && (sameName(name, "authorization") || sameName(name, "x-api-key"))) {
			delete(hd, name)
		}
	}
}

// trailerFilter strips the trailers when the body it wraps ends.
type trailerFilter struct {
	io.ReadCloser
	trailer http.Header
	hide    bool
}

func (f *trailerFilter) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if err == io.EOF {
		stripTrailer(f.trailer, f.hide)
	}
	return n, err
}

// dropMethodParams removes from a raw query every parameter whose name a
// framework could read as _method: compared after percent-decoding, in any
// letter case, with PHP's folding of a leading space, "." and " " to "_"
// and its "name[...]" arrays, and with ";" as a separator as well as "&"
// (older Rack and CGI libraries split on both). The other parameters are
// kept byte for byte, in order. It allocates only when it removes one.
func dropMethodParams(raw string) (string, bool) {
	var b []byte
	start, kept := 0, 0 // kept: parameters written to b
	for i := 0; i <= len(raw); i++ {
		if i < len(raw) && raw[i] != '&' && raw[i] != ';' {
			continue
		}
		param := raw[start:i]
		if isMethodParam(param) {
			if b == nil {
				b = make([]byte, 0, len(raw))
				b = append(b, raw[:max(start-1, 0)]...)
				kept = strings.Count(raw[:start], "&") + strings.Count(raw[:start], ";")
			}
		} else if b != nil {
			if kept > 0 {
				b = append(b, raw[start-1])
			}
			b = append(b, param...)
			kept++
		}
		start = i + 1
	}
	if b == nil {
		return raw, false
	}
	return string(b), true
}

// isMethodParam reports whether a raw query parameter ("name=value") is a
// _method parameter in any spelling an upstream framework could accept.
func isMethodParam(param string) bool {
	name, _, _ := strings.Cut(param, "=")
	if len(name) < len("method") {
		return false
	}
	if strings.ContainsAny(name, "%+") {
		if d, err := url.QueryUnescape(name); err == nil {
			name = d
		}
	}
	name = strings.TrimLeft(name, " ")
	if i := strings.IndexByte(name, '['); i >= 0 {
		name = name[:i]
	}
	if len(name) != len("_method") {
		return false
	}
	switch name[0] {
	case '_', '.', ' ':
		return strings.EqualFold(name[1:], "method")
	}
	return false
}

// sameName compares a header name with a lower-case, dash-separated name,
// ignoring case and treating _ like -.
func sameName(name, lower string) bool {
	if len(name) != len(lower) {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '_' {
			c = '-'
		} else if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

func isSpkHeader(name string) bool {
	return len(name) >= 6 && sameName(name[:6], "x-spk-")
}

func isPathOverride(name string) bool {
	switch len(name) {
	case len("x-original-url"):
		return sameName(name, "x-original-url")
	case len("x-rewrite-url"):
		return sameName(name, "x-rewrite-url")
	}
	return false
}

func isMethodOverride(name string) bool {
	switch len(name) {
	case len("x-http-method-override"):
		return sameName(name, "x-http-method-override")
	case len("x-http-method"):
		return sameName(name, "x-http-method")
	case len("x-method-override"):
		return sameName(name, "x-method-override")
	}
	return false
}

func stripConnectionTokens(hd http.Header, conn []string) {
	var kept []string
	touched := false
	for _, v := range conn {
		for tok := range strings.SplitSeq(v, ",") {
			t := strings.TrimSpace(tok)
			if isSpkHeader(t) || isMethodOverride(t) || sameName(t, "authorization") || sameName(t, "x-api-key") {
				touched = true
				continue
			}
			if t != "" {
				kept = append(kept, t)
			}
		}
	}
	if !touched {
		return
	}
	if len(kept) == 0 {
		delete(hd, "Connection")
		return
	}
	hd["Connection"] = []string{strings.Join(kept, ", ")}
}
