package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/spkgate/spkgate/keys"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "spk",
		Usage: "create|list|revoke|plan|usage|edit|roll|events [--config <path>] [--adapter <name>] ...",
		Short: "Manages spkgate API keys in the configured key store",
		Long: `
Manages spkgate API keys directly in the key store that the config names
(the spk global option's storage), without a running server: for
bootstrapping and scripts. A running gateway on the same store learns of
revocations, plan changes and new keys within a second (its cache reads the
store's change log).

  caddy spk create --account acct_1 --name ci-pipeline --scope monitors:read
  caddy spk list   --account acct_1
  caddy spk revoke key_...
  caddy spk plan   --account acct_1 pro
  caddy spk usage  --account acct_1 --granularity day
  caddy spk edit   key_... --scope monitors:read --allow-ip 203.0.113.0/24
  caddy spk roll   key_... --grace 24h
  caddy spk events --account acct_1

Output is JSON, in the shapes of the admin API (usage: a table). The key itself is printed
once, by create and roll, and cannot be shown again.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.PersistentFlags().StringP("config", "c", "", "Configuration file (default: ./Caddyfile)")
			cmd.PersistentFlags().StringP("adapter", "a", "", "Name of config adapter")
			for _, sub := range spkSubcommands() {
				cmd.AddCommand(sub)
			}
		},
	})
}

// spkSubcommands lists the "caddy spk" subcommands: each one's usage, its
// flags, and the cmdSpkX function that runs it.
func spkSubcommands() []*cobra.Command {
	create := &cobra.Command{
		Use:   "create --account <id> --name <name> [--scope <scope>]... [--expires <RFC 3339 time> | --expires-in <duration>] [--rate <requests>/<window>]",
		Short: "Creates a key and prints it once",
		Args:  cobra.NoArgs,
		RunE:  runSpk(cmdSpkCreate),
	}
	create.Flags().String("account", "", "Account that owns the key (required)")
	create.Flags().String("name", "", "Descriptive name, e.g. ci-pipeline (required)")
	create.Flags().StringSlice("scope", nil, "Scope to grant; repeat or separate with commas; none means full access")
	create.Flags().String("expires", "", "Expiry time, RFC 3339 (e.g. 2027-01-01T00:00:00Z)")
	create.Flags().Duration("expires-in", 0, "Expiry as a duration from now (e.g. 720h)")
	create.Flags().String("rate", "", "The key's own rate limit, below its account's: requests/window, e.g. 10/1s")

	list := &cobra.Command{
		Use:   "list --account <id>",
		Short: "Lists an account's active keys",
		Args:  cobra.NoArgs,
		RunE:  runSpk(cmdSpkList),
	}
	list.Flags().String("account", "", "Account whose keys to list (required)")

	revoke := &cobra.Command{
		Use:   "revoke <key id>",
		Short: "Revokes a key",
		Args:  cobra.ExactArgs(1),
		RunE:  runSpk(cmdSpkRevoke),
	}

	plan := &cobra.Command{
		Use:   "plan --account <id> <plan>",
		Short: "Records an account's plan",
		Args:  cobra.ExactArgs(1),
		RunE:  runSpk(cmdSpkPlan),
	}
	plan.Flags().String("account", "", "Account whose plan to set (required)")

	return append([]*cobra.Command{create, list, revoke, plan, usageCommand()}, lifecycleSubcommands()...)
}

// runSpk adapts a subcommand function for cobra. Usage is printed for a
// command line cobra refuses (unknown flag, wrong number of arguments), not
// for an error the command itself returns.
func runSpk(f caddycmd.CommandFunc) func(*cobra.Command, []string) error {
	run := caddycmd.WrapCommandFuncForCobra(f)
	return func(c *cobra.Command, args []string) error {
		c.SilenceUsage = true
		return run(c, args)
	}
}

func cmdSpkCreate(fl caddycmd.Flags) (int, error) {
	scopes, err := fl.GetStringSlice("scope")
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	expiresIn := fl.Duration("expires-in")
	req := keys.CreateRequest{Name: fl.String("name"), Scopes: scopes}
	switch expires := fl.String("expires"); {
	case expires != "" && expiresIn != 0:
		return caddy.ExitCodeFailedStartup, errors.New("give --expires or --expires-in, not both")
	case expires != "":
		t, err := time.Parse(time.RFC3339, expires)
		if err != nil {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("--expires: %v", err)
		}
		req.ExpiresAt = &t
	case expiresIn != 0:
		t := time.Now().Add(expiresIn)
		req.ExpiresAt = &t
	}
	if rate := fl.String("rate"); rate != "" {
		spec, err := rateFlag(rate)
		if err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
		req.RateLimit = spec
	}
	return withCLIManager(fl, func(ctx context.Context, m *keys.Manager) (any, error) {
		return m.Create(ctx, cliActor(), fl.String("account"), req)
	})
}

func cmdSpkList(fl caddycmd.Flags) (int, error) {
	return withCLIManager(fl, func(ctx context.Context, m *keys.Manager) (any, error) {
		ks, err := m.List(ctx, fl.String("account"))
		return keys.ListResponse{Keys: ks}, err
	})
}

func cmdSpkRevoke(fl caddycmd.Flags) (int, error) {
	return withCLIManager(fl, func(ctx context.Context, m *keys.Manager) (any, error) {
		return m.Revoke(ctx, cliActor(), "", fl.Arg(0))
	})
}

func cmdSpkPlan(fl caddycmd.Flags) (int, error) {
	plan := fl.Arg(0)
	return withCLIManager(fl, func(ctx context.Context, m *keys.Manager) (any, error) {
		if err := m.SetPlan(ctx, cliActor(), fl.String("account"), plan); err != nil {
			return nil, err
		}
		return keys.PlanRequest{Plan: plan}, nil
	})
}

// withCLIManager opens the store the config names, runs f and prints its
// result as JSON.
func withCLIManager(fl caddycmd.Flags, f func(context.Context, *keys.Manager) (any, error)) (int, error) {
	opener, err := storeFromConfig(fl.String("config"), fl.String("adapter"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	switch o := opener.(type) {
	case *SQLiteStorage:
		fmt.Fprintf(os.Stderr, "key store: sqlite %s\n", o.Path)
	case *PostgresStorage:
		fmt.Fprintln(os.Stderr, "key store: postgres (DSN from the config)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := opener.OpenStore(ctx)
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("opening key store: %w", err)
	}
	defer st.Close()
	out, err := f(ctx, &keys.Manager{Store: st, AuditLog: caddy.Log().Named("spk.audit")})
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	return caddy.ExitCodeSuccess, nil
}

// storeFromConfig loads the config and provisions the storage module of
// its spk app (the default SQLite store when it names none).
func storeFromConfig(configFile, adapter string) (StoreOpener, error) {
	cfgJSON, _, _, err := caddycmd.LoadConfig(configFile, adapter)
	if err != nil {
		return nil, err
	}
	var cfg struct {
		Apps struct {
			Spk *App `json:"spk"`
		} `json:"apps"`
	}
	if len(cfgJSON) > 0 {
		if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
			return nil, fmt.Errorf("reading config: %w", err)
		}
	}
	app := cfg.Apps.Spk
	if app == nil {
		app = new(App)
	}
	if app.StorageRaw == nil {
		app.StorageRaw = json.RawMessage(`{"driver":"sqlite"}`)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	mod, err := ctx.LoadModule(app, "StorageRaw")
	if err != nil {
		return nil, fmt.Errorf("loading storage module: %w", err)
	}
	return mod.(StoreOpener), nil
}
