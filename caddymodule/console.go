package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/spkgate/spkgate/console"
	"github.com/spkgate/spkgate/scope"
)

func init() {
	caddy.RegisterModule(Console{})
}

// Console serves the API Console: the pages where a signed-in dashboard
// user lists, creates and revokes their API keys, and the JSON API under
// <base_path>/api that does the same.
//
// It serves base_path and the paths below it, and passes every other
// request on to the next handler. It does not log anyone in: a login layer
// in front of it (Caddy's basic_auth, forward_auth with copy_headers, or
// anything that sets placeholders) names the account and its plan. Without
// an account it answers 401; a request authenticated with an spk_ key (by
// spk_auth) or carrying one is refused; cross-origin requests that could
// change state are refused.
//
// It needs the spk app, which it configures with defaults if the
// configuration has none.
type Console struct {
	// BasePath is the path of the console's home page; its other pages,
	// assets and JSON API are below it. Default: /user/api-console.
	BasePath string `json:"base_path,omitempty"`

	// Account is the signed-in user's account id, usually a placeholder
	// that the login layer fills. Default: {http.auth.user.id}.
	Account string `json:"account,omitempty"`

	// Plan is the account's plan: a placeholder (e.g. one that a map
	// directive or forward_auth's copy_headers fills) or a literal. It is
	// recorded for the account, so that spk_auth applies it to the
	// account's keys. Default: none: the plan recorded for the account
	// (through the admin API or an earlier request) is used.
	Plan string `json:"plan,omitempty"`

	// User names the signed-in user, a placeholder that the login layer
	// fills: the actor of the changes they make, in the audit trail
	// (docs/keys.md). Default: the account id.
	User string `json:"user,omitempty"`

	// BaseURL is the API base URL shown to users, e.g.
	// https://api.example.com/v1. Global placeholders such as {env.*} are
	// expanded at load time. Default: /v1 on the scheme and host of the
	// request.
	BaseURL string `json:"base_url,omitempty"`

	// UpgradeURL is where the upgrade prompt for plans without API access
	// points. Default: the spk app's upgrade_url (/billing/upgrade).
	UpgradeURL string `json:"upgrade_url,omitempty"`

	// Policy names the built-in route policy of the gateway whose API the
	// console's explorer shows, as spk_auth's policy does ("statuspage").
	// Give the console the same policy, policy_base_path and rules as the
	// gateway's spk_auth (a Caddyfile snippet imported into both blocks
	// does that); the explorer is then built from the very rules the
	// gateway enforces. Default: when neither policy nor rules are set,
	// the statuspage policy at the path of base_url (/v1 if unset).
	Policy string `json:"policy,omitempty"`

	// PolicyBasePath is the base path of the built-in policy, as spk_auth's
	// base_path. Default: /v1.
	PolicyBasePath string `json:"policy_base_path,omitempty"`

	// Rules are the gateway's further rules, as spk_auth's rules (with an
	// optional description each, which the explorer shows). Default: none.
	Rules []scope.Rule `json:"rules,omitempty"`

	handler *console.Handler
	account string
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Console) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.spk_console",
		New: func() caddy.Module { return new(Console) },
	}
}

// DefaultConsoleAccount is the placeholder that names the account unless
// account says otherwise: the user that Caddy's authentication set.
const DefaultConsoleAccount = "{http.auth.user.id}"

// Provision finds the spk app and builds the console.
func (c *Console) Provision(ctx caddy.Context) error {
	c.logger = ctx.Logger()
	c.account = c.Account
	if c.account == "" {
		c.account = DefaultConsoleAccount
	}
	if !strings.Contains(c.account, "{") {
		c.logger.Warn("spk_console account is a literal: every visitor manages the keys of the same account",
			zap.String("account", c.account))
	}
	appIface, err := ctx.App("spk")
	if err != nil {
		return fmt.Errorf("loading spk app: %w", err)
	}
	app := appIface.(*App)
	repl := caddy.NewReplacer()
	upgradeURL := repl.ReplaceKnown(c.UpgradeURL, "")
	if upgradeURL == "" {
		upgradeURL = app.UpgradeURL
	}
	var policy *scope.Policy
	if c.Policy != "" || len(c.Rules) > 0 {
		rules, err := policyRules(c.Policy, c.PolicyBasePath, c.Rules)
		if err != nil {
			return err
		}
		if policy, err = scope.Compile(rules); err != nil {
			return fmt.Errorf("compiling scope rules: %w", err)
		}
	}
	cfg := console.Config{
		Policy:           policy,
		BasePath:         c.BasePath,
		BaseURL:          repl.ReplaceKnown(c.BaseURL, ""),
		UpgradeURL:       upgradeURL,
		Keys:             app.Keys(),
		PlanHasAPIAccess: app.PlanHasAPIAccess,
		OnError: func(op string, err error) {
			c.logger.Error("api console", zap.String("op", op), zap.Error(err))
		},
	}
	// Usage charts and the quota come from the limiter of the spk app,
	// which counts every request spk_auth answers for a key.
	if run := app.limits; run != nil {
		cfg.Usage = run.st
		cfg.Quota = func(ctx context.Context, account, plan string) (console.QuotaStatus, bool, error) {
			q, ok, err := run.lim.QuotaStatus(ctx, run.st, account, plan)
			return console.QuotaStatus(q), ok, err
		}
	}
	c.handler, err = console.New(cfg)
	if err != nil {
		return fmt.Errorf("setting up the console: %w", err)
	}
	return nil
}

// Validate checks the paths and URLs that need no placeholder expansion,
// and the policy.
func (c *Console) Validate() error {
	if c.Policy != "" || c.PolicyBasePath != "" || len(c.Rules) > 0 {
		rules, err := policyRules(c.Policy, c.PolicyBasePath, c.Rules)
		if err != nil {
			return err
		}
		if _, err := scope.Compile(rules); err != nil {
			return err
		}
	}
	if c.BasePath != "" {
		if err := console.CheckBasePath(c.BasePath); err != nil {
			return err
		}
	}
	for name, u := range map[string]string{"base_url": c.BaseURL, "upgrade_url": c.UpgradeURL} {
		if u != "" && !strings.Contains(u, "{") {
			if err := console.CheckURL(u); err != nil {
				return fmt.Errorf("%s: %v", name, err)
			}
		}
	}
	return nil
}

// ServeHTTP serves the console's paths and passes the others on.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !c.handler.Handles(r.URL.Path) {
		return next.ServeHTTP(w, r)
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	id := console.Identity{
		AccountID: repl.ReplaceAll(c.account, ""),
		Plan:      repl.ReplaceAll(c.Plan, ""),
	}
	// spk_auth sets the key id when a key authenticated the request: such
	// an identity must not manage keys, whatever the account placeholder.
	id.APIKeyID, _ = repl.GetString("http.auth.user.key_id")
	id.ClientIP = clientAddr(r)
	if c.User != "" {
		id.User = repl.ReplaceAll(c.User, "")
	}
	c.handler.ServeConsole(w, r, id)
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Console)(nil)
	_ caddy.Validator             = (*Console)(nil)
	_ caddyhttp.MiddlewareHandler = (*Console)(nil)
)
