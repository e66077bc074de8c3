package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/limits"
)

// usageCommand is "caddy spk usage".
func usageCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "usage --account <id> [--key <key id>] [--from <RFC 3339>] [--to <RFC 3339>] [--granularity hour|day]",
		Short: "Prints an account's usage per key as a table, and its quota",
		Args:  cobra.NoArgs,
		RunE:  runSpk(cmdSpkUsage),
	}
	c.Flags().String("account", "", "Account whose usage to print (required)")
	c.Flags().String("key", "", "Only this key of the account")
	c.Flags().String("from", "", "Start, RFC 3339 (default: 24 hours, or 30 days, before --to)")
	c.Flags().String("to", "", "End, RFC 3339, exclusive (default: now)")
	c.Flags().String("granularity", "hour", "Period of each row: hour or day")
	return c
}

func cmdSpkUsage(fl caddycmd.Flags) (int, error) {
	account := fl.String("account")
	if err := keys.ValidateAccount(account); err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("--account: %w", err)
	}
	rng, err := limits.ParseUsageParams(limits.UsageParams{From: fl.String("from"), To: fl.String("to"), Granularity: fl.String("granularity")}, time.Now())
	if err != nil {
		var pe *limits.ParamError
		if errors.As(err, &pe) {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("--%s: %s", pe.Field, pe.Message)
		}
		return caddy.ExitCodeFailedStartup, err
	}
	plans, err := limitsFromConfig(fl.String("config"), fl.String("adapter"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	opener, err := storeFromConfig(fl.String("config"), fl.String("adapter"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := opener.OpenStore(ctx)
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("opening key store: %w", err)
	}
	defer st.Close()
	us, ok := st.(keystore.UsageStore)
	if !ok {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("the key store %T keeps no usage", st)
	}
	rows, err := limits.Usage(ctx, us, keystore.UsageQuery{AccountID: account, KeyID: fl.String("key")}, rng)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	var quota *limits.QuotaStatus
	plan, err := st.GetPlan(ctx, account)
	if err != nil && !errors.Is(err, keystore.ErrNotFound) {
		return caddy.ExitCodeFailedStartup, err
	}
	if q, ok, err := limits.New(plans, limits.Options{}).QuotaStatus(ctx, us, account, plan); err != nil {
		return caddy.ExitCodeFailedStartup, err
	} else if ok {
		quota = &q
	}
	if err := printUsage(os.Stdout, rows, rng, quota); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	return caddy.ExitCodeSuccess, nil
}

// printUsage writes rows as a table with a total, then the quota.
func printUsage(out io.Writer, rows []keystore.UsageCount, rng limits.UsageRange, quota *limits.QuotaStatus) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	layout := "2006-01-02 15:04"
	if rng.Granularity == limits.Daily {
		layout = "2006-01-02"
	}
	fmt.Fprintf(tw, "PERIOD (UTC)\tKEY\tALLOWED\tFORBIDDEN\tLIMITED\t\n")
	var total keystore.UsageCount
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t\n", r.Hour.Format(layout), r.KeyID, r.Allowed, r.Forbidden, r.Limited)
		total.Allowed += r.Allowed
		total.Forbidden += r.Forbidden
		total.Limited += r.Limited
	}
	fmt.Fprintf(tw, "TOTAL\t\t%d\t%d\t%d\t\n", total.Allowed, total.Forbidden, total.Limited)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "from %s to %s (%s)\n", rng.From.Format(time.RFC3339), rng.To.Format(time.RFC3339), rng.Granularity)
	if quota != nil {
		fmt.Fprintf(out, "quota: %d of %d used; resets at %s\n", quota.Used, quota.Limit, quota.ResetsAt.Format(time.RFC3339))
	}
	return nil
}

// rateFlag reads --rate (10/1s, 100/m) as a key's own rate limit; the
// keys service checks its range.
func rateFlag(v string) (*keys.RateLimitSpec, error) {
	r, err := limits.ParseRate(v)
	if err != nil {
		return nil, fmt.Errorf("--rate: %v", err)
	}
	return &keys.RateLimitSpec{Requests: int(r.Requests), Window: r.Window.String()}, nil
}

// limitsFromConfig reads the spk app's limits from the config.
func limitsFromConfig(configFile, adapter string) (limits.Plans, error) {
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
	if cfg.Apps.Spk == nil {
		return nil, nil
	}
	return cfg.Apps.Spk.limitPlans()
}
