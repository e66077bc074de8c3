package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// This file is spk_auth's cors option: browsers on the listed origins (the
// API Console's try-it panel, a customer's own dashboard) may call the API
// with a key. Keys travel in headers, never in cookies, so no credentials
// mode is needed and none is allowed.

// CORS header values. The exposed headers are the ones a page needs to
// understand an answer: the rate-limit state, when to retry, and why a key
// was refused.
const (
	corsAllowMethods  = "GET, HEAD, POST, PUT, PATCH, DELETE"
	corsAllowHeaders  = "Authorization, X-API-Key, Content-Type, Accept, Accept-Language, If-Match, If-None-Match, Idempotency-Key"
	corsExposeHeaders = "RateLimit, RateLimit-Policy, Retry-After, WWW-Authenticate"
	corsMaxAge        = "600"
)

// corsPolicy answers CORS for a fixed list of origins.
type corsPolicy struct {
	origins []string
}

// checkOrigin reports whether o is an origin as browsers send it:
// scheme://host[:port], http or https, nothing after.
func checkOrigin(o string) error {
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || strings.HasSuffix(o, "?") {
		return fmt.Errorf("cors origin %q must be scheme://host[:port], e.g. https://app.example.com", o)
	}
	if o != strings.ToLower(o) {
		return fmt.Errorf("cors origin %q must be lower case, as browsers send it", o)
	}
	return nil
}

func newCORS(origins []string) (*corsPolicy, error) {
	if len(origins) == 0 {
		return nil, nil
	}
	for _, o := range origins {
		if err := checkOrigin(o); err != nil {
			return nil, err
		}
	}
	return &corsPolicy{origins: slices.Clone(origins)}, nil
}

// handle answers a preflight from a listed origin (done: nothing more to
// do) or returns the writer through which the request is answered: for a
// listed origin one that puts the CORS headers on every answer, whoever
// writes it (a refusal of spk_auth or the upstream's answer).
func (c *corsPolicy) handle(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, bool) {
	hd := w.Header()
	hd.Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if origin == "" || !slices.Contains(c.origins, origin) {
		return w, false
	}
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		// A preflight carries no key: answered here, never forwarded.
		hd.Add("Vary", "Access-Control-Request-Method")
		hd.Add("Vary", "Access-Control-Request-Headers")
		hd.Set("Access-Control-Allow-Origin", origin)
		hd.Set("Access-Control-Allow-Methods", corsAllowMethods)
		hd.Set("Access-Control-Allow-Headers", corsAllowHeaders)
		hd.Set("Access-Control-Max-Age", corsMaxAge)
		w.WriteHeader(http.StatusNoContent)
		return w, true
	}
	setCORS(hd, origin)
	return &corsWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, origin: origin}, false
}

func setCORS(hd http.Header, origin string) {
	hd.Set("Access-Control-Allow-Origin", origin)
	hd.Set("Access-Control-Expose-Headers", corsExposeHeaders)
}

// corsWriter sets the CORS headers again just before the header is
// written: an upstream's own CORS headers would otherwise be added next to
// them (reverse_proxy adds header values), and browsers refuse an answer
// with two Access-Control-Allow-Origin values.
type corsWriter struct {
	*caddyhttp.ResponseWriterWrapper
	origin  string
	written bool
}

func (w *corsWriter) WriteHeader(status int) {
	if !w.written && status >= 200 {
		w.written = true
		setCORS(w.Header(), w.origin)
	}
	w.ResponseWriterWrapper.WriteHeader(status)
}

func (w *corsWriter) Write(b []byte) (int, error) {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriterWrapper.Write(b)
}

// ReadFrom keeps the header fix-up when the body is copied with
// io.ReaderFrom (which the wrapper would hand straight to the writer
// below).
func (w *corsWriter) ReadFrom(r io.Reader) (int64, error) {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriterWrapper.ReadFrom(r)
}

// Interface guards
var (
	_ http.ResponseWriter = (*corsWriter)(nil)
	_ io.ReaderFrom       = (*corsWriter)(nil)
)
