// Command spkbench is spkgate's load benchmark of record. It starts an
// upstream, a Caddy doing plain reverse_proxy to it and a Caddy doing
// spk_auth + reverse_proxy to it (the same binary), drives them in turn in
// interleaved rounds with the same connections and duration, and prints
// requests/s, p50, p99, Caddy's CPU time per request and the ratios.
//
//	go run ./cmd/spkbench                       # hot, spread and attack on SQLite
//	go run ./cmd/spkbench -scenarios million    # 1,000,000 keys stored, 100,000 active
//	go run ./cmd/spkbench -store postgres -dsn postgres://...
//	go run ./cmd/spkbench -scenarios hot,spread -limits   # limits on, none reached
//	go run ./cmd/spkbench -scenarios flood      # one account at 10x its rate
//
// The Caddy processes are pinned to one core and the load generator and
// upstream to the other (taskset) when the machine has two or more; on a
// small machine they still share memory bandwidth and caches, and the
// load generator's own CPU use limits the request rate: compare the ratios
// and the CPU time per request, not the absolute requests/s.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/spkgate/spkgate/internal/caddybin"
)

type config struct {
	caddyBin  string
	scenarios []string
	store     string
	dsn       string
	conns     int
	duration  time.Duration
	warmup    time.Duration
	rounds    int
	keys      int
	stored    int
	active    int
	caddyCPU  string
	loadCPU   string
	workDir   string
	// rate, when positive, sends the legitimate requests open loop at this
	// many per second (latency counted from when each was due).
	rate int
	// trials is the number of revocations the propagation scenario times.
	trials int
	// profileDir, when set, receives a CPU profile of each Caddy's
	// measured window, taken through its admin endpoint.
	profileDir string
	// limits gives the seeded keys' plan limits that the limiter checks
	// on every request but that no request reaches (see limitsOn).
	limits bool
	// accounts is the number of accounts, one key each, whose traffic the
	// flood scenario measures beside the flood.
	accounts int
	// floodLimit is the flood scenario's rate limit per account, in
	// requests per second; the flood account sends ten times as many.
	floodLimit int
}

func main() {
	log.SetFlags(0)
	var cfg config
	var scen string
	flag.StringVar(&cfg.caddyBin, "caddy", "", "Caddy binary with spkgate (default: go build ./cmd/caddy)")
	flag.StringVar(&scen, "scenarios", "hot,spread,attack", "comma-separated: hot, spread, attack, million, propagation, flood")
	flag.StringVar(&cfg.store, "store", "sqlite", "key store: sqlite or postgres")
	flag.StringVar(&cfg.dsn, "dsn", os.Getenv("SPK_DATABASE_URL"), "PostgreSQL DSN for -store postgres")
	flag.IntVar(&cfg.conns, "conns", 64, "concurrent connections")
	flag.DurationVar(&cfg.duration, "duration", 5*time.Second, "measured time per run")
	flag.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured time before each run")
	flag.IntVar(&cfg.rounds, "rounds", 3, "interleaved rounds per scenario")
	flag.IntVar(&cfg.keys, "keys", 10_000, "distinct keys of the spread scenario")
	flag.IntVar(&cfg.stored, "stored", 1_000_000, "keys stored in the million scenario")
	flag.IntVar(&cfg.active, "active", 100_000, "keys used in the million scenario")
	flag.StringVar(&cfg.caddyCPU, "caddy-cpu", "1", "CPU list for the Caddy processes (taskset); empty: no pinning")
	flag.StringVar(&cfg.loadCPU, "load-cpu", "0", "CPU list for the load generator and upstream (taskset); empty: no pinning")
	flag.IntVar(&cfg.rate, "rate", 0, "requests/s sent open loop, below saturation, to measure added latency (0: closed loop, as fast as Caddy answers)")
	flag.IntVar(&cfg.trials, "trials", 100, "revocations timed by the propagation scenario")
	flag.BoolVar(&cfg.limits, "limits", false, "give the seeded keys' plan a rate and quota that no request reaches (hot, spread, attack, million): what the limiter costs")
	flag.IntVar(&cfg.accounts, "accounts", 20, "accounts (one key each) beside the flooding one in the flood scenario")
	flag.IntVar(&cfg.floodLimit, "flood-limit", 100, "rate limit per account in the flood scenario, requests/s; the flood sends 10 times as many")
	flag.StringVar(&cfg.profileDir, "cpuprofile", "", "directory for a CPU profile of every measured run (scenario-caddy-round.pprof), from Caddy's /debug/pprof; read with go tool pprof")
	flag.Parse()
	cfg.scenarios = strings.Split(scen, ",")
	switch {
	case cfg.trials < 1:
		log.Fatal("-trials must be at least 1")
	case cfg.rate < 0 || cfg.rate > 1_000_000:
		log.Fatal("-rate must be between 0 (closed loop) and 1,000,000 requests/s")
	case cfg.accounts < 1:
		log.Fatal("-accounts must be at least 1")
	case cfg.floodLimit < 1 || cfg.floodLimit > 100_000:
		log.Fatal("-flood-limit must be between 1 and 100,000 requests/s (the flood sends 10 times as many)")
	case cfg.conns < 1 || cfg.rounds < 1 || cfg.duration <= 0:
		log.Fatal("-conns, -rounds and -duration must be positive")
	}
	if os.Getenv("SPKBENCH_PINNED") == "" && runtime.NumCPU() < 2 {
		cfg.caddyCPU, cfg.loadCPU = "", ""
	}
	if cfg.profileDir != "" {
		if err := os.MkdirAll(cfg.profileDir, 0o755); err != nil {
			log.Fatal(err)
		}
	}
	pinSelf(cfg.loadCPU)

	dir, err := os.MkdirTemp("", "spkbench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg.workDir = dir
	if cfg.caddyBin == "" {
		log.Printf("building %s", caddybin.Package)
		if cfg.caddyBin, err = caddybin.Build(dir); err != nil {
			log.Fatal(err)
		}
	}
	if err := run(cfg); err != nil {
		log.Fatal(err)
	}
}

// pinSelf re-executes this program under taskset so that every thread of
// the load generator runs on cpus.
func pinSelf(cpus string) {
	if cpus == "" || os.Getenv("SPKBENCH_PINNED") != "" {
		return
	}
	ts, err := exec.LookPath("taskset")
	if err != nil {
		log.Printf("taskset not found: not pinning (apt-get install util-linux)")
		return
	}
	self, err := os.Executable()
	if err != nil {
		return
	}
	cmd := exec.Command(ts, append([]string{"-c", cpus, self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), "SPKBENCH_PINNED=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			os.Exit(ee.ExitCode())
		}
		log.Fatal(err)
	}
	os.Exit(0)
}

func run(cfg config) error {
	up, err := startUpstream()
	if err != nil {
		return err
	}
	defer up.Close()

	fmt.Printf("spkbench %s, %s, Caddy on CPU %q, load generator and upstream on CPU %q\n",
		time.Now().UTC().Format("2006-01-02"), cpuModel(), cfg.caddyCPU, cfg.loadCPU)
	load := "closed loop (each connection sends its next request when the last is answered)"
	if cfg.rate > 0 {
		load = fmt.Sprintf("open loop at %d requests/s (latency counted from when each request was due)", cfg.rate)
	}
	fmt.Printf("%d connections, %s per run after %s warm-up, %d interleaved rounds, store %s\nload: %s\n\n",
		cfg.conns, cfg.duration, cfg.warmup, cfg.rounds, cfg.store, load)

	plain, err := startCaddy(cfg, "plain", up.Addr().String(), "", "")
	if err != nil {
		return err
	}
	defer plain.stop()

	for _, sc := range cfg.scenarios {
		if err := scenario(cfg, strings.TrimSpace(sc), plain, up.Addr().String()); err != nil {
			return fmt.Errorf("scenario %s: %v", sc, err)
		}
	}
	return nil
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, l := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(l, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
		}
	}
	return runtime.GOARCH
}
