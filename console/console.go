// Package console is spkgate's API Console: the pages on which a signed-in
// dashboard user lists, creates and revokes their API keys, and the JSON API
// under <base>/api that does the same for scripts and single-page dashboards.
//
// It is plain net/http: server-rendered html/template pages, one stylesheet
// and a few lines of JavaScript (the copy button), all embedded in the
// binary; every page works without JavaScript. It does not import Caddy.
// The caller authenticates the user (a login layer such as Caddy's
// basic_auth or forward_auth) and passes the account id and plan in with
// each request, through ServeConsole or WithIdentity.
//
// Security: every store call is scoped by the caller's account id;
// cross-origin requests that could change state are refused
// (http.CrossOriginProtection) and no GET changes state; a request that
// carries an spk_ API key is refused, so a key cannot manage keys; without an
// account the console answers 401; the new key's secret appears only in the
// body of the response that created it, never in a URL, a log or an error.
package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/scope"
)

// DefaultBasePath is where the console lives unless configured otherwise.
const DefaultBasePath = "/user/api-console"

// DefaultUpgradeURL is where the upgrade prompt points unless configured
// otherwise (the same default as spk_auth's plan_upgrade_required answer).
const DefaultUpgradeURL = "/billing/upgrade"

// Identity is who is asking, as the login layer in front of the console
// knows it.
type Identity struct {
	// AccountID is the signed-in user's account. Empty means nobody is
	// signed in: the console answers 401 and shows no keys.
	AccountID string
	// Plan is the account's plan as the login layer knows it, e.g. "pro".
	// It is recorded for the account (so that spk_auth applies it to the
	// account's keys); empty means the plan recorded earlier is used.
	Plan string
	// APIKeyID is set when the request was authenticated with an API key
	// (spk_auth's {http.auth.user.key_id}); the console refuses such
	// requests: a key cannot be used to manage keys.
	APIKeyID string
	// User is the signed-in user, as the login layer names them: the
	// actor of the changes they make, in the audit trail. Empty means the
	// account id stands for them.
	User string
	// ClientIP is the client's address as the server decided it (Caddy's
	// client IP, trusted_proxies honoured), for the audit trail. Empty
	// means the request's RemoteAddr.
	ClientIP string
}

type identityKey struct{}

// WithIdentity returns a context that carries id to Handler.ServeHTTP.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the identity that WithIdentity put in ctx.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// Config configures a Handler.
type Config struct {
	// BasePath is the path of the console's home page; every other page,
	// the assets and the JSON API are below it. Default: /user/api-console.
	BasePath string
	// BaseURL is the API base URL shown to users, e.g.
	// https://api.example.com/v1. Default: /v1 on the scheme and host of
	// the request.
	BaseURL string
	// UpgradeURL is where the upgrade prompt points. Default: /billing/upgrade.
	UpgradeURL string
	// Keys creates, lists and revokes keys and records plans. Required.
	Keys *keys.Manager
	// PlanHasAPIAccess reports whether a plan includes API access. Required.
	PlanHasAPIAccess func(plan string) bool
	// OnError, if set, is told about store failures (the user sees a
	// generic error page). The errors never contain a key secret.
	OnError func(op string, err error)
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Usage reads the keys' hourly usage for the usage charts and the
	// JSON API. Default: Keys.Store, if it keeps usage; else no charts.
	Usage keystore.UsageStore
	// Quota, if set, reports the account's quota (ok false: none applies
	// to the plan), shown on the key list and in GET <base>/api/usage.
	// Default: none shown.
	Quota func(ctx context.Context, accountID, plan string) (q QuotaStatus, ok bool, err error)
	// Policy is the route policy that the gateway (spk_auth) enforces, for
	// the API explorer. Default: the built-in statuspage policy at the path
	// of BaseURL (/v1 when BaseURL is not set).
	Policy *scope.Policy
}

// Handler serves the console. Create it with New.
type Handler struct {
	cfg    Config
	base   string // BasePath without a trailing slash ("" for "/")
	home   string // the home page's path
	served http.Handler
	pages  *pageSet
	plans  planMemo
	forms  formMemo
	csp    string
	// routeList is the policy's routes, for the explorer.
	routeList []scope.Route
}

// CheckBasePath reports whether p can be the console's base path: an
// absolute, clean path without wildcards, query or fragment.
func CheckBasePath(p string) error {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("base path %q must start with /", p)
	case strings.ContainsAny(p, "*?#{}%\\") || strings.IndexFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return fmt.Errorf("base path %q must be a plain path without wildcards, placeholders, spaces, escapes, query or fragment", p)
	case strings.Contains(p, "//") || strings.Contains(p+"/", "/./") || strings.Contains(p+"/", "/../"):
		return fmt.Errorf("base path %q must be a clean path", p)
	}
	return nil
}

// CheckURL reports whether u can be shown as a link: an absolute http or
// https URL, or an absolute path.
func CheckURL(u string) error {
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", u, err)
	}
	switch {
	case p.Scheme == "" && p.Host == "" && strings.HasPrefix(u, "/") && !strings.HasPrefix(u, "//"):
		return nil
	case (p.Scheme == "http" || p.Scheme == "https") && p.Host != "":
		return nil
	}
	return fmt.Errorf("%q must be an http or https URL or a path starting with /", u)
}

// New checks cfg and returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Keys == nil || cfg.Keys.Store == nil {
		return nil, errors.New("console: a key manager with a store is required")
	}
	if cfg.PlanHasAPIAccess == nil {
		return nil, errors.New("console: PlanHasAPIAccess is required")
	}
	if cfg.BasePath == "" {
		cfg.BasePath = DefaultBasePath
	}
	if err := CheckBasePath(cfg.BasePath); err != nil {
		return nil, err
	}
	if cfg.UpgradeURL == "" {
		cfg.UpgradeURL = DefaultUpgradeURL
	}
	if err := CheckURL(cfg.UpgradeURL); err != nil {
		return nil, fmt.Errorf("upgrade URL: %v", err)
	}
	if cfg.BaseURL != "" {
		if err := CheckURL(cfg.BaseURL); err != nil {
			return nil, fmt.Errorf("base URL: %v", err)
		}
		cfg.BaseURL = strings.TrimSuffix(cfg.BaseURL, "/")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	pages, err := loadPages()
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, pages: pages}
	policy := cfg.Policy
	if policy == nil {
		if policy, err = scope.Compile(scope.StatusPage(h.apiBasePath())); err != nil {
			return nil, fmt.Errorf("base URL: its path cannot be the base of the statuspage policy: %v", err)
		}
	}
	h.routeList = policy.Routes()
	// The try-it panel sends requests from the browser to the API, which
	// may be on another origin.
	connect := "'self'"
	if u, err := url.Parse(cfg.BaseURL); err == nil && u.Host != "" {
		connect += " " + u.Scheme + "://" + u.Host
	}
	h.csp = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; " +
		"connect-src " + connect + "; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
	h.base = strings.TrimSuffix(cfg.BasePath, "/")
	h.home = h.base
	if h.home == "" {
		h.home = "/"
	}
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(h.crossOrigin))
	h.served = cop.Handler(http.HandlerFunc(h.serve))
	return h, nil
}

// Handles reports whether path is the console's: its base path or below.
// A caller that mounts the console next to other handlers passes the other
// requests on.
func (h *Handler) Handles(path string) bool {
	if h.base == "" {
		return true
	}
	return path == h.base || (strings.HasPrefix(path, h.base) && path[len(h.base)] == '/')
}

// ServeConsole serves r for the user id.
func (h *Handler) ServeConsole(w http.ResponseWriter, r *http.Request, id Identity) {
	h.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), id)))
}

// ServeHTTP serves r for the identity that WithIdentity put in its context;
// without one, nobody is signed in.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "same-origin")
	hd.Set("Content-Security-Policy", h.csp)
	h.served.ServeHTTP(w, r)
}

// request is what every page and API call needs to know about the caller.
type request struct {
	account string
	plan    string
	access  bool
	api     bool
	// actor is who makes the changes of this request (the audit trail).
	actor keys.Actor
}

// serve runs after the cross-origin check.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request) {
	rel, ok := h.relative(r.URL.Path)
	if !ok {
		h.notFound(w, r, false)
		return
	}
	api := rel == "/api" || strings.HasPrefix(rel, "/api/")
	if name, ok := strings.CutPrefix(rel, "/assets/"); ok {
		h.serveAsset(w, r, name)
		return
	}
	id, _ := IdentityFrom(r.Context())
	if id.APIKeyID != "" || carriesAPIKey(r.Header) {
		h.fail(w, r, api, failure{
			status: http.StatusForbidden, code: "api_key_not_allowed",
			api:     "an API key cannot be used to manage API keys: sign in to the dashboard",
			title:   "API keys cannot open the console",
			message: "An API key cannot be used to manage API keys. Sign in to the dashboard instead.",
		})
		return
	}
	if err := keys.ValidateAccount(id.AccountID); err != nil {
		h.fail(w, r, api, failure{
			status: http.StatusUnauthorized, code: "unauthorized",
			api:     "sign in to the dashboard to manage API keys",
			title:   "Sign in to manage your API keys",
			message: "The API Console is for signed-in users. Sign in to the dashboard and open Developer → API again.",
		})
		return
	}
	actor := id.User
	if actor == "" {
		actor = id.AccountID
	}
	act := keys.RequestActor(r, actor, keys.SourceConsole, id.ClientIP)
	plan, err := h.plan(r.Context(), act, id)
	if err != nil {
		h.storeFailed(w, r, api, "read plan", err)
		return
	}
	rq := &request{account: id.AccountID, plan: plan, access: h.cfg.PlanHasAPIAccess(plan), api: api, actor: act}
	if api {
		h.serveAPI(w, r, strings.TrimPrefix(rel, "/api"), rq)
		return
	}
	h.servePage(w, r, rel, rq)
}

// relative returns the path below the base path ("" for the home page).
func (h *Handler) relative(path string) (string, bool) {
	if !h.Handles(path) {
		return "", false
	}
	rel := path[len(h.base):]
	if rel == "/" {
		rel = ""
	}
	return rel, true
}

// carriesAPIKey reports whether the request carries an spk_ API key in one
// of the headers that spk_auth reads.
func carriesAPIKey(hd http.Header) bool {
	for _, v := range hd.Values("X-Api-Key") {
		if strings.TrimSpace(v) != "" {
			return true
		}
	}
	for _, v := range hd.Values("Authorization") {
		scheme, cred, _ := strings.Cut(strings.TrimSpace(v), " ")
		cred = strings.TrimSpace(cred)
		if strings.EqualFold(scheme, "bearer") && len(cred) >= 4 && strings.EqualFold(cred[:4], "spk_") {
			return true
		}
	}
	return false
}

// plan returns the account's plan: the login layer's, recorded for the
// account when it differs from what this handler last recorded, or else the
// plan recorded earlier (by this console, an operator or billing).
func (h *Handler) plan(ctx context.Context, actor keys.Actor, id Identity) (string, error) {
	plan := strings.TrimSpace(id.Plan)
	if plan == "" {
		p, err := h.cfg.Keys.Plan(ctx, id.AccountID)
		if errors.Is(err, keystore.ErrNotFound) {
			return "", nil
		}
		return p, err
	}
	if h.plans.record(id.AccountID, plan) {
		if err := h.cfg.Keys.SetPlan(ctx, actor, id.AccountID, plan); err != nil {
			// The page still follows the login layer. A store failure is
			// tried again on the next request; a plan name the store
			// refuses is reported once.
			var fe *keys.FieldError
			if !errors.As(err, &fe) {
				h.plans.forget(id.AccountID)
			}
			h.onError("record plan", err)
		}
	}
	return plan, nil
}

func (h *Handler) onError(op string, err error) {
	if h.cfg.OnError != nil {
		h.cfg.OnError(op, err)
	}
}

// memoLimit bounds the in-memory memos; past it they start afresh (which
// costs one store write per account, nothing else).
const memoLimit = 10000

// planMemo remembers the plan last recorded per account, so that a page
// view does not write to the store unless the plan changed.
type planMemo struct {
	mu sync.Mutex
	m  map[string]string
}

// record reports whether plan differs from what was last recorded for the
// account, and remembers it.
func (p *planMemo) record(account, plan string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m[account] == plan {
		return false
	}
	if p.m == nil || len(p.m) >= memoLimit {
		p.m = make(map[string]string)
	}
	p.m[account] = plan
	return true
}

func (p *planMemo) forget(account string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, account)
}

// formMemo remembers which create forms were submitted, so that reloading
// the one-time key page (which posts the form again) does not make a
// second key.
type formMemo struct {
	mu sync.Mutex
	m  map[string]time.Time
}

const formMemoTTL = 24 * time.Hour

// claim reports whether the form id of the account was not claimed
// before, and claims it.
func (f *formMemo) claim(account, formID string, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := account + "\x00" + formID
	if t, ok := f.m[k]; ok && now.Sub(t) < formMemoTTL {
		return false
	}
	if f.m == nil {
		f.m = make(map[string]time.Time)
	}
	if len(f.m) >= memoLimit {
		for k, t := range f.m {
			if now.Sub(t) >= formMemoTTL {
				delete(f.m, k)
			}
		}
		if len(f.m) >= memoLimit {
			f.m = make(map[string]time.Time)
		}
	}
	f.m[k] = now
	return true
}

// release gives a claimed form id back (the key was not created).
func (f *formMemo) release(account, formID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, account+"\x00"+formID)
}

// failure is an answer that is not the page or data asked for.
type failure struct {
	status  int
	code    string // JSON error code
	api     string // JSON error message
	title   string // page heading
	message string // page text
	allow   string // Allow header, for 405
}

// fail answers with f: JSON under the API, a page elsewhere.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, api bool, f failure) {
	if f.allow != "" {
		w.Header().Set("Allow", f.allow)
	}
	if api {
		keys.WriteJSON(w, f.status, keys.ErrorResponse{Error: f.code, Message: f.api})
		return
	}
	h.render(w, r, nil, f.status, "error", errorPage{Heading: f.title, Message: f.message})
}

func (h *Handler) notFound(w http.ResponseWriter, r *http.Request, api bool) {
	h.fail(w, r, api, failure{
		status: http.StatusNotFound, code: "not_found", api: "no such endpoint",
		title: "Page not found", message: "There is nothing here. Your API keys are on the API Console's main page.",
	})
}

func (h *Handler) methodNotAllowed(w http.ResponseWriter, r *http.Request, api bool, allow string) {
	h.fail(w, r, api, failure{
		status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: allow,
		api:   fmt.Sprintf("%s is not allowed here; use %s", r.Method, allow),
		title: "Method not allowed", message: fmt.Sprintf("%s is not allowed here; use %s.", r.Method, allow),
	})
}

// storeFailed answers for an error of the key store.
func (h *Handler) storeFailed(w http.ResponseWriter, r *http.Request, api bool, op string, err error) {
	if !errors.Is(err, keystore.ErrUnavailable) {
		h.onError(op, err)
	}
	if api {
		keys.WriteError(w, err)
		return
	}
	if errors.Is(err, keystore.ErrUnavailable) {
		w.Header().Set("Retry-After", "5")
		h.render(w, r, nil, http.StatusServiceUnavailable, "error", errorPage{
			Heading: "The API Console is unavailable", Message: "Your keys cannot be read or changed right now. Please try again in a moment.",
		})
		return
	}
	h.render(w, r, nil, http.StatusInternalServerError, "error", errorPage{
		Heading: "Something went wrong", Message: "Your request could not be completed. Please try again.",
	})
}

// crossOrigin answers a request that http.CrossOriginProtection refused.
func (h *Handler) crossOrigin(w http.ResponseWriter, r *http.Request) {
	rel, _ := h.relative(r.URL.Path)
	h.fail(w, r, rel == "/api" || strings.HasPrefix(rel, "/api/"), failure{
		status: http.StatusForbidden, code: "cross_origin_request",
		api:     "cross-origin requests that change state are refused",
		title:   "Request refused",
		message: "This request came from another site, so it was refused. Open the API Console from your dashboard and try again.",
	})
}

// baseURL is the API base URL shown to the user.
func (h *Handler) baseURL(r *http.Request) string {
	if h.cfg.BaseURL != "" {
		return h.cfg.BaseURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/v1"
}
