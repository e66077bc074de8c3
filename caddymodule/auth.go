package caddymodule

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/spkgate/spkgate/keycache"
	"github.com/spkgate/spkgate/limits"
	"github.com/spkgate/spkgate/scope"
)

func init() {
	caddy.RegisterModule(Auth{})
}

// Auth authenticates requests with spk_ API keys, checks that the key's
// scopes allow the request's method and path, and passes allowed requests on
// with the caller's identity in X-Spk-Account-Id, X-Spk-Key-Id, X-Spk-Scopes
// and X-Spk-Plan, and in the placeholders {http.auth.user.id},
// {http.auth.user.key_id}, {http.auth.user.scopes} and {http.auth.user.plan}.
//
// Keys are read from "Authorization: Bearer spk_..." or "X-API-Key: spk_...".
// Every X-Spk-* header the client sent (in any case, with - or _) and every
// method-override header is removed before the request goes on, so an
// upstream can trust them. Refusals are JSON: 400 for a path that could be
// read two ways, 401 for a missing or invalid key, 403 for a missing scope
// or a plan without API access, 503 when the key store cannot answer.
//
// It needs the spk app, which it configures with defaults if the
// configuration has none.
type Auth struct {
	// Policy names a built-in route policy. "statuspage" maps GET and HEAD
	// on <base_path>/R and below to R:read and POST, PUT, PATCH and DELETE
	// to R:write (or full access where R has no write scope), for R in
	// status_pages, monitors, incidents, maintenances and analytics.
	// Default: none.
	Policy string `json:"policy,omitempty"`

	// BasePath is the base path of the built-in policy. Default: /v1.
	BasePath string `json:"base_path,omitempty"`

	// Rules map further requests to scopes, after the built-in policy; the
	// last rule that matches a request decides, so later rules refine
	// earlier ones. A request that no rule maps needs a full-access key.
	Rules []scope.Rule `json:"rules,omitempty"`

	// HideCredentials removes the Authorization and X-API-Key headers
	// before the request goes on. Default: true.
	HideCredentials *bool `json:"hide_credentials,omitempty"`

	// FailureLimit is how many failed authentications (invalid, unknown,
	// revoked or expired keys) one client address may make per
	// FailureWindow. Past it, the address gets 429 with Retry-After for
	// every key that was not verified as valid in the last 10 minutes,
	// without a store lookup; it earns tries back steadily. The client
	// address is Caddy's (it honours the server's trusted_proxies for
	// X-Forwarded-For). Each address's count is shared by every spk_auth
	// on the same key store and kept across config reloads; a changed
	// limit applies to it at once. -1 disables the limit. Default: 20.
	FailureLimit int `json:"failure_limit,omitempty"`

	// FailureWindow is the period of FailureLimit. At most 24h. Default: 1m.
	FailureWindow caddy.Duration `json:"failure_window,omitempty"`

	// CORS lists the origins (scheme://host[:port]) whose pages may call
	// the API from a browser, such as the API Console's try-it panel: their
	// preflight requests are answered without a key, and every answer to
	// them, refusals included, carries CORS headers that expose RateLimit,
	// RateLimit-Policy, Retry-After and WWW-Authenticate. Other origins get
	// no CORS headers. Default: none.
	CORS []string `json:"cors,omitempty"`

	cors     *corsPolicy
	app      *App
	cache    *keycache.Cache
	policy   *scope.Policy
	hide     bool
	failures *failureLimiter
	// failuresKey is the failureStates key this handler holds, if any.
	failuresKey string
	respPlan    response
	logger      *zap.Logger
}

// Defaults and bounds of the failed-authentication limit.
const (
	DefaultFailureLimit  = 20
	DefaultFailureWindow = time.Minute
	// MaxFailureWindow bounds failure_window: an address that guessed
	// wrong earns its tries back within a day at the latest.
	MaxFailureWindow = 24 * time.Hour
)

// CaddyModule returns the Caddy module information.
func (Auth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.spk_auth",
		New: func() caddy.Module { return new(Auth) },
	}
}

// Provision compiles the policy and finds the spk app.
func (h *Auth) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	rules, err := h.rules()
	if err != nil {
		return err
	}
	if h.policy, err = scope.Compile(rules); err != nil {
		return fmt.Errorf("compiling scope rules: %w", err)
	}
	if h.policy.Len() == 0 {
		h.logger.Warn("spk_auth has no policy and no scope rules: only full-access keys can pass")
	}
	if h.cors, err = newCORS(h.CORS); err != nil {
		return err
	}
	h.hide = h.HideCredentials == nil || *h.HideCredentials
	appIface, err := ctx.App("spk")
	if err != nil {
		return fmt.Errorf("loading spk app: %w", err)
	}
	h.app = appIface.(*App)
	h.cache = h.app.Cache()
	h.respPlan = planResponse(h.app.UpgradeURL)
	if h.FailureLimit >= 0 {
		limit, window := h.FailureLimit, time.Duration(h.FailureWindow)
		if limit == 0 {
			limit = DefaultFailureLimit
		}
		if window == 0 {
			window = DefaultFailureWindow
		}
		st, _, err := failureStates.LoadOrNew(h.app.poolKey, func() (caddy.Destructor, error) {
			return newFailureState(), nil
		})
		if err != nil {
			return err
		}
		h.failures = newFailureLimiter(limit, window, st.(*failureState))
		h.failuresKey = h.app.poolKey
	}
	return nil
}

// Cleanup releases this configuration's hold on the failure limit's
// state, which lives on while another configuration uses it.
func (h *Auth) Cleanup() error {
	if h.failuresKey == "" {
		return nil
	}
	_, err := failureStates.Delete(h.failuresKey)
	return err
}

func (h *Auth) rules() ([]scope.Rule, error) {
	return policyRules(h.Policy, h.BasePath, h.Rules)
}

// Validate checks the configuration without side effects.
func (h *Auth) Validate() error {
	if h.FailureLimit < -1 {
		return fmt.Errorf("failure_limit %d out of range: it must be -1 (off), 0 (the default) or positive", h.FailureLimit)
	}
	if err := checkDuration("failure_window", h.FailureWindow, MaxFailureWindow); err != nil {
		return err
	}
	if _, err := newCORS(h.CORS); err != nil {
		return err
	}
	rules, err := h.rules()
	if err != nil {
		return err
	}
	_, err = scope.Compile(rules)
	return err
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Auth) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	timer := checkTimer{start: time.Now()}
	defer timer.stop()
	if h.cors != nil {
		var preflight bool
		if w, preflight = h.cors.handle(w, r); preflight {
			return nil
		}
	}
	key, cred := credential(r.Header)
	if h.hide || cred != credOK {
		// Off the request before anything else can see it again.
		delete(r.Header, hdrAuthorization)
		delete(r.Header, hdrAPIKey)
	}
	if urlHasKey(r.URL) {
		// Refused without logging the path: it holds the key.
		countResult(r, resultBadRequest)
		return respKeyInURL.write(w)
	}
	switch cred {
	case credMissing:
		return h.refuse(w, r, &respMissing)
	case credBad:
		h.failures.fail(clientAddr(r))
		return h.refuse(w, r, &respInvalid)
	}

	path, changed, err := scope.Canonical(r.URL.Path, r.URL.RawPath)
	if err != nil {
		return h.refuse(w, r, &respBadPath)
	}
	if changed {
		r.URL.Path, r.URL.RawPath = path, ""
	}

	var e *keycache.Entry
	var status keycache.Status
	if wait, blocked := h.failures.retryAfter(r); blocked {
		if e, status = h.cache.VerifyKnown(r.Context(), key); status == keycache.Invalid {
			return h.tooManyFailures(w, r, wait)
		}
	} else {
		e, status = h.cache.Verify(r.Context(), key)
	}
	switch status {
	case keycache.Invalid:
		h.failures.fail(clientAddr(r))
		return h.refuse(w, r, &respInvalid)
	case keycache.Unavailable:
		return h.refuse(w, r, &respUnavailable)
	}
	identify(r, e.AccountID, e.KeyID)
	if !allowedFrom(r, e) {
		return h.refuse(w, r, &respIPNotAllowed)
	}
	if !h.app.PlanHasAPIAccess(e.Plan) {
		return h.refuse(w, r, &h.respPlan)
	}
	lr := h.startLimits(r, e) // limits.go: rate, quota, usage, RateLimit headers
	if limited, err := h.takeRate(w, r, lr); limited {
		return err
	}
	if need := h.policy.Required(r.Method, path); !e.Scopes.Allows(need) {
		finishLimits(w, lr, limits.Forbidden)
		return h.refuse(w, r, insufficientScope(need))
	}
	if limited, err := h.takeQuota(w, r, lr); limited {
		return err
	}
	finishLimits(w, lr, limits.Allowed)

	stripForged(r, h.hide)
	if len(r.Trailer) > 0 {
		filterTrailers(r, h.hide)
	}
	// One small array per request for the four header values (64 bytes):
	// a cached, shared slice would be written in place by a later
	// request_header replace, leaking one request's edit into the next,
	// and the entry cannot hold one anyway (it is pointer-free; see
	// keycache.Entry).
	vals := &[4]string{e.AccountID, e.KeyID, e.ScopesHeader, e.Plan}
	r.Header[hdrAccount] = vals[0:1:1]
	r.Header[hdrKeyID] = vals[1:2:2]
	r.Header[hdrScopes] = vals[2:3:3]
	r.Header[hdrPlan] = vals[3:4:4]
	setPlaceholders(r, e)
	h.cache.Touch(e)
	countResult(r, resultOK)
	timer.stop()
	return next.ServeHTTP(w, r)
}

// setPlaceholders makes the key's identity the answer to the
// {http.auth.user.*} placeholders. Usually the entry's provider joins the
// replacer's list (within the capacity Caddy leaves; the method value is
// the request's second allocation, 16 bytes, since a pointer-free entry
// cannot keep a prebuilt one) and its values are boxed only if something
// reads them. But static values and
// earlier providers answer first, so when the route already has an
// identity (basic_auth before spk_auth, or a second spk_auth), the four
// values are set statically instead, replacing it as they always did.
// Handlers that set any of the four set the id too (basic_auth and other
// authentication providers do), so the id is the one to look for.
func setPlaceholders(r *http.Request, e *keycache.Entry) {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if _, set := repl.Get(keycache.PlaceholderAccount); !set {
		repl.Map(e.Placeholders)
		return
	}
	repl.Set(keycache.PlaceholderAccount, e.AccountID)
	repl.Set(keycache.PlaceholderKeyID, e.KeyID)
	repl.Set(keycache.PlaceholderScopes, e.ScopesHeader)
	repl.Set(keycache.PlaceholderPlan, e.Plan)
}

func (h *Auth) refuse(w http.ResponseWriter, r *http.Request, resp *response) error {
	countResult(r, resultOf(resp.status))
	if c := h.logger.Check(zapcore.DebugLevel, "request refused"); c != nil {
		c.Write(zap.Int("status", resp.status), zap.String("reason", resp.reason),
			zap.String("method", r.Method), zap.String("path", r.URL.Path))
	}
	return resp.write(w)
}

// tooManyFailures answers 429 to an address past its failure limit.
func (h *Auth) tooManyFailures(w http.ResponseWriter, r *http.Request, wait time.Duration) error {
	secs := int64(math.Ceil(wait.Seconds()))
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	return h.refuse(w, r, &respTooMany)
}

// clientAddr is the client's IP address as Caddy determined it (from
// X-Forwarded-For only when the peer is a trusted proxy).
func clientAddr(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Auth)(nil)
	_ caddy.Validator             = (*Auth)(nil)
	_ caddy.CleanerUpper          = (*Auth)(nil)
	_ caddyhttp.MiddlewareHandler = (*Auth)(nil)
)
