package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
)

// lifecycleSubcommands are "caddy spk edit|roll|events". Changes are
// recorded with the OS user as the actor and the source cli.
func lifecycleSubcommands() []*cobra.Command {
	edit := &cobra.Command{
		Use: "edit <key id> [--name <name>] [--scope <scope>]... [--full-access] " +
			"[--expires <RFC 3339 time> | --expires-in <duration> | --no-expiry] " +
			"[--allow-ip <CIDR>]... [--any-ip] [--rate <requests>/<window> | --no-rate]",
		Short: "Edits a key's name, scopes, expiry, allowed IPs or rate limit",
		Long: `
Edits a key. Only the fields named by flags change. Every instance on the
same store applies the edit on the key's next request.

  caddy spk edit key_... --name deploy-bot
  caddy spk edit key_... --scope monitors:read --scope incidents:write
  caddy spk edit key_... --allow-ip 203.0.113.0/24 --allow-ip 2001:db8::/32
  caddy spk edit key_... --rate 10/1s
  caddy spk edit key_... --any-ip --no-rate --no-expiry`,
		Args: cobra.ExactArgs(1),
		RunE: runSpk(cmdSpkEdit),
	}
	edit.Flags().String("name", "", "New name")
	edit.Flags().StringSlice("scope", nil, "Scopes that replace the key's; repeat or separate with commas")
	edit.Flags().Bool("full-access", false, "Remove every scope: full access")
	edit.Flags().String("expires", "", "New expiry, RFC 3339 (e.g. 2027-01-01T00:00:00Z)")
	edit.Flags().Duration("expires-in", 0, "New expiry as a duration from now (e.g. 720h)")
	edit.Flags().Bool("no-expiry", false, "Remove the expiry")
	edit.Flags().StringSlice("allow-ip", nil, "Client address or CIDR prefix the key may be used from (replaces the list); repeat or separate with commas")
	edit.Flags().Bool("any-ip", false, "Remove the IP restriction")
	edit.Flags().String("rate", "", "The key's own rate limit, <requests>/<window>, e.g. 10/1s")
	edit.Flags().Bool("no-rate", false, "Remove the key's own rate limit")

	roll := &cobra.Command{
		Use:   "roll <key id> [--grace <duration>]",
		Short: "Replaces a key with a new one, printed once; the old one works for the grace period",
		Long: `
Creates a new key with the same name, scopes, expiry and restrictions and
prints it once. The old key keeps working for the grace period (0s to 168h,
or 1d to 7d), then every instance refuses it like a revoked key.

  caddy spk roll key_... --grace 24h`,
		Args: cobra.ExactArgs(1),
		RunE: runSpk(cmdSpkRoll),
	}
	roll.Flags().String("grace", "0s", "How long the old key keeps working: 0s to 168h (or 7d)")

	events := &cobra.Command{
		Use:   "events --account <id> [--limit <n>] [--before <event id>]",
		Short: "Lists an account's audit events, newest first",
		Args:  cobra.NoArgs,
		RunE:  runSpk(cmdSpkEvents),
	}
	events.Flags().String("account", "", "Account whose events to list (required)")
	events.Flags().Int("limit", keystore.DefaultEventLimit, fmt.Sprintf("How many events, at most %d", keystore.MaxEventLimit))
	events.Flags().Int64("before", 0, "Only events older than this event id (the last id of the previous page)")

	return []*cobra.Command{edit, roll, events}
}

// editRequest builds the UpdateRequest that the edit flags describe.
func editRequest(fl caddycmd.Flags) (keys.UpdateRequest, error) {
	var req keys.UpdateRequest
	exclusive := func(a, b string) error {
		if fl.Changed(a) && fl.Changed(b) {
			return fmt.Errorf("give --%s or --%s, not both", a, b)
		}
		return nil
	}
	for _, pair := range [][2]string{{"scope", "full-access"}, {"expires", "expires-in"}, {"expires", "no-expiry"},
		{"expires-in", "no-expiry"}, {"allow-ip", "any-ip"}, {"rate", "no-rate"}} {
		if err := exclusive(pair[0], pair[1]); err != nil {
			return req, err
		}
	}
	if fl.Changed("name") {
		req.Name = keys.Some(fl.String("name"))
	}
	if fl.Changed("scope") {
		scopes, err := fl.GetStringSlice("scope")
		if err != nil {
			return req, err
		}
		req.Scopes = keys.Some(scopes)
	}
	if fl.Bool("full-access") {
		req.Scopes = keys.Some([]string{})
	}
	switch {
	case fl.Changed("expires"):
		t, err := time.Parse(time.RFC3339, fl.String("expires"))
		if err != nil {
			return req, fmt.Errorf("--expires: %v", err)
		}
		req.ExpiresAt = keys.Some(t)
	case fl.Changed("expires-in"):
		req.ExpiresAt = keys.Some(time.Now().Add(fl.Duration("expires-in")))
	case fl.Bool("no-expiry"):
		req.ExpiresAt = keys.Clear[time.Time]()
	}
	if fl.Changed("allow-ip") {
		ips, err := fl.GetStringSlice("allow-ip")
		if err != nil {
			return req, err
		}
		req.AllowedIPs = keys.Some(ips)
	}
	if fl.Bool("any-ip") {
		req.AllowedIPs = keys.Clear[[]string]()
	}
	if fl.Changed("rate") {
		rl, err := keystore.ParseRateLimit(fl.String("rate"))
		if err != nil {
			return req, fmt.Errorf("--rate: %v", err)
		}
		req.RateLimit = keys.Some(keys.RateLimitSpec{Requests: rl.Requests, Window: rl.Window.String()})
	}
	if fl.Bool("no-rate") {
		req.RateLimit = keys.Clear[keys.RateLimitSpec]()
	}
	if !req.Name.Set && !req.Scopes.Set && !req.ExpiresAt.Set && !req.AllowedIPs.Set && !req.RateLimit.Set {
		return req, errors.New("nothing to change: give at least one of --name, --scope, --full-access, --expires, --expires-in, --no-expiry, --allow-ip, --any-ip, --rate, --no-rate")
	}
	return req, nil
}

func cmdSpkEdit(fl caddycmd.Flags) (int, error) {
	req, err := editRequest(fl)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	return withCLIManager(fl, func(ctx context.Context, m *keys.Manager) (any, error) {
		return m.Update(ctx, cliActor(), "", fl.Arg(0), req)
	})
}

func cmdSpkRoll(fl caddycmd.Flags) (int, error) {
	req := keys.RollRequest{Grace: fl.String("grace")}
	return withCLIManager(fl, func(ctx context.Context, m *keys.Manager) (any, error) {
		return m.Roll(ctx, cliActor(), "", fl.Arg(0), req)
	})
}

func cmdSpkEvents(fl caddycmd.Flags) (int, error) {
	limit, err := fl.GetInt("limit")
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	before, err := fl.GetInt64("before")
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if limit < 1 || limit > keystore.MaxEventLimit {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("--limit must be from 1 to %d", keystore.MaxEventLimit)
	}
	q := keystore.EventQuery{Limit: limit, Before: before}
	return withCLIManager(fl, func(ctx context.Context, m *keys.Manager) (any, error) {
		evs, err := m.Events(ctx, fl.String("account"), q)
		return keys.EventsResponse{Events: evs}, err
	})
}
