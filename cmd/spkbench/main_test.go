package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spkgate/spkgate/internal/caddybin"
)

// TestBenchmarkRuns drives every scenario that needs no PostgreSQL, and
// hot with -limits, once, briefly, against the real binary: the load
// benchmark must keep working as the gateway changes. It measures nothing.
func TestBenchmarkRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Caddy and runs it under load")
	}
	dir := t.TempDir()
	bin, err := caddybin.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config{
		caddyBin:  bin,
		scenarios: []string{"hot", "spread", "attack", "million", "propagation"},
		trials:    5,
		store:     "sqlite",
		conns:     4,
		duration:  300 * time.Millisecond,
		warmup:    100 * time.Millisecond,
		rounds:    2,
		keys:      50,
		stored:    200,
		active:    20,
		workDir:   dir,
	}
	if err := run(cfg); err != nil {
		t.Fatal(err)
	}
	// Open loop, at a rate any machine keeps up with, with a CPU profile
	// of every measured run.
	cfg.scenarios, cfg.rate, cfg.rounds, cfg.profileDir = []string{"hot"}, 200, 1, t.TempDir()
	if err := run(cfg); err != nil {
		t.Fatal(err)
	}
	// pprof writes gzipped protocol buffers; Caddy's admin endpoint
	// answers errors in plain text.
	for _, caddy := range []string{"plain", "headers", "spk-hot"} {
		f := filepath.Join(cfg.profileDir, "hot-"+caddy+"-1.pprof")
		b, err := os.ReadFile(f)
		if err != nil {
			t.Error(err)
			continue
		}
		if len(b) < 100 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("%s: not a pprof profile (%d bytes: %.40q)", f, len(b), b)
		}
	}
	// Limits on, closed loop: every answer must be 200 with a RateLimit
	// header.
	cfg.scenarios, cfg.rate, cfg.profileDir, cfg.limits = []string{"hot"}, 0, "", true
	if err := run(cfg); err != nil {
		t.Fatal(err)
	}
	// The flood: at 200 requests/s against a limit of 20/s it must be
	// limited while the other three accounts (30/s in all) never are.
	cfg.scenarios, cfg.limits, cfg.rounds, cfg.accounts, cfg.floodLimit = []string{"flood"}, false, 2, 3, 20
	if err := run(cfg); err != nil {
		t.Fatal(err)
	}
}
