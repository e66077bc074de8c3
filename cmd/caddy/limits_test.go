package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/sqlitestore"
)

// TestCommandLineRateAndUsage creates a key with its own rate and prints
// an account's usage as a table.
func TestCommandLineRateAndUsage(t *testing.T) {
	e := newEnv(t)
	cfg := []string{"--config", "Caddyfile.example"}
	out, err := e.caddy(append([]string{"spk", "create", "--account", "acct_use", "--name", "slow", "--rate", "10/1s"}, cfg...)...)
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		ID        string `json:"id"`
		RateLimit *struct {
			Requests int    `json:"requests"`
			Window   string `json:"window"`
		} `json:"rate_limit"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.RateLimit == nil ||
		created.RateLimit.Requests != 10 || created.RateLimit.Window != "1s" {
		t.Fatalf("create --rate printed %s (%v)", out, err)
	}
	for _, bad := range []string{"0/1s", "10", "1000000/1s", "10/fortnight"} {
		if _, err := e.caddy(append([]string{"spk", "create", "--account", "acct_use", "--name", "bad", "--rate", bad}, cfg...)...); err == nil ||
			!strings.Contains(err.Error(), "rate") {
			t.Errorf("--rate %s: %v", bad, err)
		}
	}

	// Usage as the gateway would have flushed it.
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(e.dataHome, "caddy", "spk", "spk.db"))
	if err != nil {
		t.Fatal(err)
	}
	day := time.Now().UTC().Truncate(24 * time.Hour)
	err = st.AddUsage(ctx, []keystore.UsageCount{
		{KeyID: created.ID, AccountID: "acct_use", Hour: day.Add(time.Hour), Allowed: 7, Forbidden: 2},
		{KeyID: created.ID, AccountID: "acct_use", Hour: day.Add(2 * time.Hour), Allowed: 5, Limited: 3},
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, err = e.caddy(append([]string{"spk", "usage", "--account", "acct_use", "--granularity", "day"}, cfg...)...)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 3 || !strings.Contains(lines[0], "ALLOWED") ||
		strings.Join(strings.Fields(lines[1]), " ") != day.Format("2006-01-02")+" "+created.ID+" 12 2 3" ||
		strings.Join(strings.Fields(lines[2]), " ") != "TOTAL 12 2 3" {
		t.Fatalf("usage table:\n%s", out)
	}
	if _, err := e.caddy(append([]string{"spk", "usage", "--account", "acct_use", "--granularity", "week"}, cfg...)...); err == nil ||
		!strings.Contains(err.Error(), "--granularity") {
		t.Fatalf("bad granularity: %v", err)
	}
}
