package main

import (
	"testing"
	"time"

	"github.com/spkgate/spkgate/internal/caddybin"
)

// TestBenchmarkRuns drives every scenario that needs no PostgreSQL once,
// briefly, against the real binary: the load benchmark must keep working
// as the gateway changes. It measures nothing.
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
	// Open loop, at a rate any machine keeps up with.
	cfg.scenarios, cfg.rate = []string{"hot"}, 200
	if err := run(cfg); err != nil {
		t.Fatal(err)
	}
}
