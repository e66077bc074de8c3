package caddymodule

import (
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/spkgate/spkgate/console"
	"github.com/spkgate/spkgate/keycache"
	"github.com/spkgate/spkgate/limits"
	"github.com/spkgate/spkgate/scope"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("spk", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("spk_auth", parseAuth)
	// Authentication comes early, with Caddy's own: before any handler that
	// could answer or proxy the request.
	httpcaddyfile.RegisterDirectiveOrder("spk_auth", httpcaddyfile.After, "basic_auth")
	httpcaddyfile.RegisterHandlerDirective("spk_console", parseConsole)
	// After the login layers (basic_auth, forward_auth, and spk_auth, which
	// comes right after basic_auth), whose placeholders name the account,
	// and after encode, which then compresses the pages; before handle,
	// route, respond and reverse_proxy, so that a catch-all handle block or
	// the proxy to the rest of the dashboard cannot swallow the console's
	// path (spk_console passes every other path on).
	httpcaddyfile.RegisterDirectiveOrder("spk_console", httpcaddyfile.After, "encode")
}

// parseGlobalOption sets up the spk app from the global option:
//
//	spk {
//		storage sqlite [<path>]
//		storage postgres <dsn> {
//			listen <dsn>
//		}
//		cache_ttl <duration>
//		negative_cache_ttl <duration>
//		api_plans <plan...>
//		upgrade_url <url>
//		change_poll_interval <duration>
//		limits <plan> {
//			rate <requests> <window>
//			quota <requests> day|month
//		}
//		limit_sync_interval <duration>
//		usage_flush_interval <duration>
//		event_retention <duration>
//	}
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "spk", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens; see
// parseGlobalOption for the syntax.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "storage":
			if a.StorageRaw != nil {
				return d.Err("storage given twice")
			}
			if !d.NextArg() {
				return d.Errf("storage needs a driver: sqlite [<path>] or postgres <dsn>")
			}
			switch driver := d.Val(); driver {
			case "sqlite":
				s := new(SQLiteStorage)
				if d.NextArg() {
					s.Path = d.Val()
				}
				a.StorageRaw = caddyconfig.JSONModuleObject(s, "driver", driver, nil)
			case "postgres":
				s, err := parsePostgresStorage(d)
				if err != nil {
					return err
				}
				a.StorageRaw = caddyconfig.JSONModuleObject(s, "driver", driver, nil)
			default:
				return d.Errf("unknown storage driver %q (known: sqlite, postgres)", driver)
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "cache_ttl":
			v, err := parseDuration(d, keycache.MaxTTL)
			if err != nil {
				return err
			}
			a.CacheTTL = v
		case "negative_cache_ttl":
			v, err := parseDuration(d, keycache.MaxNegativeTTL)
			if err != nil {
				return err
			}
			a.NegativeCacheTTL = v
		case "event_retention":
			v, err := parseDuration(d, MaxEventRetention)
			if err != nil {
				return err
			}
			a.EventRetention = v
		case "change_poll_interval":
			v, err := parseDuration(d, MaxChangePollInterval)
			if err != nil {
				return err
			}
			a.ChangePollInterval = v
		case "upgrade_url":
			if !d.NextArg() {
				return d.ArgErr()
			}
			a.UpgradeURL = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "limits":
			if err := a.unmarshalLimits(d); err != nil {
				return err
			}
		case "limit_sync_interval":
			v, err := parseDuration(d, MaxLimitSyncInterval)
			if err != nil {
				return err
			}
			a.LimitSyncInterval = v
		case "usage_flush_interval":
			v, err := parseDuration(d, MaxUsageFlushInterval)
			if err != nil {
				return err
			}
			a.UsageFlushInterval = v
		case "api_plans":
			a.APIPlans = d.RemainingArgs()
			if len(a.APIPlans) == 0 {
				return d.Errf("api_plans needs at least one plan")
			}
			if err := checkPlans(a.APIPlans); err != nil {
				return d.Err(err.Error())
			}
		default:
			return d.Errf("unrecognized subdirective %s", d.Val())
		}
	}
	return nil
}

// unmarshalLimits reads one "limits <plan> { ... }" block. Every value is
// checked here, so a mistake is reported with its line.
func (a *App) unmarshalLimits(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Err("limits needs a plan name: limits <plan> { rate <requests> <window>; quota <requests> day|month }")
	}
	plan := strings.ToLower(d.Val())
	if d.NextArg() {
		return d.ArgErr()
	}
	if _, dup := a.Limits[plan]; dup {
		return d.Errf("limits %s given twice", plan)
	}
	pl := new(PlanLimits)
	count := func(what string) (int64, error) {
		if !d.NextArg() {
			return 0, d.ArgErr()
		}
		n, err := strconv.ParseInt(d.Val(), 10, 64)
		if err != nil || n < 1 {
			return 0, d.Errf("%s: requests must be a positive whole number, not %q", what, d.Val())
		}
		return n, nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "rate":
			if pl.Rate != nil {
				return d.Err("rate given twice")
			}
			n, err := count("rate")
			if err != nil {
				return err
			}
			if !d.NextArg() {
				return d.Err("rate needs a window, e.g. rate 100 1s")
			}
			w, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return d.Errf("rate window %q: %v", d.Val(), err)
			}
			if err := (limits.Rate{Requests: n, Window: w}).Validate(); err != nil {
				return d.Err(err.Error())
			}
			pl.Rate = &RateLimitConfig{Requests: n, Window: caddy.Duration(w)}
		case "quota":
			if pl.Quota != nil {
				return d.Err("quota given twice")
			}
			n, err := count("quota")
			if err != nil {
				return err
			}
			if !d.NextArg() {
				return d.Err("quota needs a period: day or month")
			}
			q := limits.Quota{Requests: n, Period: limits.Period(d.Val())}
			if err := q.Validate(); err != nil {
				return d.Err(err.Error())
			}
			pl.Quota = &QuotaConfig{Requests: n, Period: d.Val()}
		default:
			return d.Errf("unrecognized limits subdirective %s (known: rate, quota)", d.Val())
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	if pl.Rate == nil && pl.Quota == nil {
		return d.Errf("limits %s has neither a rate nor a quota", plan)
	}
	if a.Limits == nil {
		a.Limits = make(map[string]*PlanLimits)
	}
	a.Limits[plan] = pl
	return nil
}

// parsePostgresStorage parses what follows "storage postgres":
//
//	storage postgres <dsn> {
//		listen <dsn>    # LISTEN's own connection: direct or session-pooled
//	}
func parsePostgresStorage(d *caddyfile.Dispenser) (*PostgresStorage, error) {
	s := new(PostgresStorage)
	if !d.NextArg() {
		return nil, d.Errf("storage postgres needs a DSN, e.g. {env.SPK_DATABASE_URL}")
	}
	s.DSN = d.Val()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "listen":
			if s.ListenDSN != "" {
				return nil, d.Err("listen given twice")
			}
			if !d.NextArg() {
				return nil, d.Errf("listen needs the DSN of a direct or session-pooled connection, e.g. {env.SPK_DATABASE_LISTEN_URL}")
			}
			s.ListenDSN = d.Val()
			if d.NextArg() {
				return nil, d.ArgErr()
			}
		default:
			return nil, d.Errf("unrecognized storage postgres subdirective %s", d.Val())
		}
	}
	return s, nil
}

func parseDuration(d *caddyfile.Dispenser, max time.Duration) (caddy.Duration, error) {
	name := d.Val()
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	v, err := caddy.ParseDuration(d.Val())
	if err != nil {
		return 0, d.Errf("%s: %v", name, err)
	}
	if v <= 0 || v > max {
		return 0, d.Errf("%s %s out of range: it must be positive and at most %s", name, d.Val(), max)
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return caddy.Duration(v), nil
}

func parseAuth(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	a := new(Auth)
	err := a.UnmarshalCaddyfile(h.Dispenser)
	return a, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	spk_auth [<matcher>] {
//		policy statuspage [<base_path>]
//		scope <scope|*> <METHOD[,METHOD...]|*> <path_pattern> [<description>]
//		hide_credentials on|off
//		failure_limit <count> [<window>] | off
//		cors <origin...>
//	}
func (h *Auth) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "policy":
			if h.Policy != "" {
				return d.Err("policy given twice")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() != "statuspage" {
				return d.Errf("unknown policy %q (known: statuspage)", d.Val())
			}
			h.Policy = d.Val()
			if d.NextArg() {
				h.BasePath = d.Val()
				if _, err := h.rules(); err != nil {
					return d.Errf("%v", err)
				}
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "scope":
			r, err := parseScopeRule(d)
			if err != nil {
				return err
			}
			h.Rules = append(h.Rules, r)
		case "cors":
			origins := d.RemainingArgs()
			if len(origins) == 0 {
				return d.Errf("cors needs at least one origin, e.g. https://app.example.com")
			}
			for _, o := range origins {
				if err := checkOrigin(o); err != nil {
					return d.Err(err.Error())
				}
			}
			h.CORS = append(h.CORS, origins...)
		case "hide_credentials":
			if !d.NextArg() {
				return d.ArgErr()
			}
			var v bool
			switch d.Val() {
			case "on":
				v = true
			case "off":
			default:
				return d.Errf("hide_credentials must be on or off, not %q", d.Val())
			}
			h.HideCredentials = &v
			if d.NextArg() {
				return d.ArgErr()
			}
		case "failure_limit":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "off" {
				h.FailureLimit = -1
			} else {
				n, err := strconv.Atoi(d.Val())
				if err != nil || n < 1 {
					return d.Errf("failure_limit must be a positive count or off, not %q", d.Val())
				}
				h.FailureLimit = n
				if d.NextArg() {
					v, err := caddy.ParseDuration(d.Val())
					if err != nil || v <= 0 || v > MaxFailureWindow {
						return d.Errf("failure_limit window %q must be a positive duration of at most %s", d.Val(), MaxFailureWindow)
					}
					h.FailureWindow = caddy.Duration(v)
				}
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized subdirective %s", d.Val())
		}
	}
	return nil
}

func parseConsole(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	c := new(Console)
	err := c.UnmarshalCaddyfile(h.Dispenser)
	return c, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	spk_console [<matcher>] {
//		base_path <path>
//		account <placeholder>
//		plan <placeholder-or-literal>
//		user <placeholder>
//		base_url <url>
//		upgrade_url <url>
//		policy statuspage [<base_path>]
//		scope <scope|*> <METHOD[,METHOD...]|*> <path_pattern> [<description>]
//	}
//
// policy and scope take the same arguments as spk_auth's, so one snippet
// imported into both blocks gives the explorer the gateway's own policy.
func (c *Console) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		sub := d.Val()
		var dst *string
		switch sub {
		case "policy":
			if c.Policy != "" {
				return d.Err("policy given twice")
			}
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.ArgErr()
			}
			if args[0] != "statuspage" {
				return d.Errf("unknown policy %q (known: statuspage)", args[0])
			}
			c.Policy = args[0]
			if len(args) == 2 {
				c.PolicyBasePath = args[1]
				if _, err := policyRules(c.Policy, c.PolicyBasePath, nil); err != nil {
					return d.Errf("%v", err)
				}
			}
			continue
		case "scope":
			r, err := parseScopeRule(d)
			if err != nil {
				return err
			}
			c.Rules = append(c.Rules, r)
			continue
		case "base_path":
			dst = &c.BasePath
		case "account":
			dst = &c.Account
		case "plan":
			dst = &c.Plan
		case "user":
			dst = &c.User
		case "base_url":
			dst = &c.BaseURL
		case "upgrade_url":
			dst = &c.UpgradeURL
		default:
			return d.Errf("unrecognized subdirective %s", sub)
		}
		if *dst != "" {
			return d.Errf("%s given twice", sub)
		}
		if !d.NextArg() {
			return d.ArgErr()
		}
		v := d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		switch {
		case v == "":
			return d.Errf("%s must not be empty", sub)
		case sub == "base_path":
			if err := console.CheckBasePath(v); err != nil {
				return d.Errf("%v", err)
			}
		case (sub == "base_url" || sub == "upgrade_url") && !strings.Contains(v, "{"):
			if err := console.CheckURL(v); err != nil {
				return d.Errf("%s: %v", sub, err)
			}
		}
		*dst = v
	}
	return nil
}

// parseScopeRule reads the arguments of a scope line, the same for
// spk_auth and spk_console:
//
//	scope <scope|*> <METHOD[,METHOD...]|*> <path_pattern> [<description>]
//
// The description (quote it) is what the console's API explorer says the
// route does.
func parseScopeRule(d *caddyfile.Dispenser) (scope.Rule, error) {
	args := d.RemainingArgs()
	if len(args) != 3 && len(args) != 4 {
		return scope.Rule{}, d.Errf("scope needs three arguments and an optional description: <scope|*> <METHOD[,METHOD...]|*> <path_pattern> [<description>], got %d", len(args))
	}
	r := scope.Rule{Scope: args[0], Path: args[2]}
	if args[1] != "*" {
		r.Methods = strings.Split(args[1], ",")
	}
	if len(args) == 4 {
		r.Description = args[3]
	}
	if _, err := scope.Compile([]scope.Rule{r}); err != nil {
		return scope.Rule{}, d.Errf("scope: %v", strings.TrimPrefix(err.Error(), "rule 1 "))
	}
	return r, nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*Auth)(nil)
	_ caddyfile.Unmarshaler = (*Console)(nil)
)
