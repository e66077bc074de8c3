// Command spkbench is spkgate's load benchmark of record. It starts an
// upstream, a Caddy doing plain reverse_proxy to it and a Caddy doing
// spk_auth + reverse_proxy to it (the same binary), drives them in turn in
// interleaved rounds with the same connections and duration, and prints
// requests/s, p50, p99, Caddy's CPU time per request and the ratios.
//
//	go run ./cmd/spkbench                       # hot, spread and attack on SQLite
//	go run ./cmd/spkbench -scenarios million    # 1,000,000 keys stored, 100,000 active
//	go run ./cmd/spkbench -store postgres -dsn postgres://...
//
// The Caddy processes are pinned to one core and the load generator and
// upstream to the other (taskset) when the machine has two or more; on a
// small machine they still share memory bandwidth and caches, and the
// load generator's own CPU use limits the request rate: compare the ratios
// and the CPU time per request, not the absolute requests/s.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/pgstore"
	"github.com/spkgate/spkgate/keystore/sqlitestore"

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
}

func main() {
	log.SetFlags(0)
	var cfg config
	var scen string
	flag.StringVar(&cfg.caddyBin, "caddy", "", "Caddy binary with spkgate (default: go build ./cmd/caddy)")
	flag.StringVar(&scen, "scenarios", "hot,spread,attack", "comma-separated: hot, spread, attack, million, propagation")
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
	flag.StringVar(&cfg.profileDir, "cpuprofile", "", "directory for a CPU profile of every measured run (scenario-caddy-round.pprof), from Caddy's /debug/pprof; read with go tool pprof")
	flag.Parse()
	cfg.scenarios = strings.Split(scen, ",")
	switch {
	case cfg.trials < 1:
		log.Fatal("-trials must be at least 1")
	case cfg.rate < 0 || cfg.rate > 1_000_000:
		log.Fatal("-rate must be between 0 (closed loop) and 1,000,000 requests/s")
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

// series is one Caddy under test and its results, round by round.
type series struct {
	name    string
	proc    *caddyProc
	results []result
}

func scenario(cfg config, name string, plain *caddyProc, upstream string) error {
	storeDir := filepath.Join(cfg.workDir, name)
	if err := os.MkdirAll(storeDir, 0o700); err != nil {
		return err
	}
	storage := "storage sqlite " + filepath.Join(storeDir, "spk.db")
	if cfg.store == "postgres" {
		if cfg.dsn == "" {
			return fmt.Errorf("-store postgres needs -dsn or SPK_DATABASE_URL")
		}
		storage = "storage postgres " + cfg.dsn
	}
	var secrets []string
	var err error
	switch name {
	case "hot", "attack":
		secrets, err = seed(cfg, storeDir, 1, 1)
	case "spread":
		secrets, err = seed(cfg, storeDir, cfg.keys, cfg.keys)
	case "million":
		secrets, err = seed(cfg, storeDir, cfg.stored, cfg.active)
	case "propagation":
		return propagation(cfg, storage, upstream)
	default:
		return fmt.Errorf("unknown scenario (known: hot, spread, attack, million, propagation)")
	}
	if err != nil {
		return err
	}
	spk, err := startCaddy(cfg, "spk-"+name, upstream, storage, spkAuth)
	if err != nil {
		return err
	}
	defer spk.stop()

	all := []*series{{name: "reverse_proxy", proc: plain}}
	if name == "hot" {
		// The same header edits as spk_auth, by Caddy's request_header and
		// without any check: what the identity-header contract costs.
		hdr, err := startCaddy(cfg, "headers", upstream, "", headersOnly)
		if err != nil {
			return err
		}
		defer hdr.stop()
		all = append(all, &series{name: "request_header+reverse_proxy", proc: hdr})
	}
	all = append(all, &series{name: "spk_auth+reverse_proxy", proc: spk})

	attack := false
	legitConns := cfg.conns
	if name == "attack" {
		attack = true
		legitConns = cfg.conns / 2
	}
	fmt.Printf("== %s: %s\n", name, describe(name, cfg))
	lookupsBefore := spk.metric(`spk_store_lookups_total{result="not_found"}`)
	foundBefore := spk.metric(`spk_store_lookups_total{result="found"}`)
	reloadsBefore, reloadedBefore := spk.metric("spk_store_reloads_total"), spk.metric("spk_keys_reloaded_total")
	for r := range cfg.rounds {
		// Interleaved: each round starts with a different Caddy.
		for k := range all {
			s := all[(r+k)%len(all)]
			// Every Caddy gets the same requests, keys included: the
			// only difference between the runs is what the Caddy does.
			prof := ""
			if cfg.profileDir != "" {
				prof = filepath.Join(cfg.profileDir, fmt.Sprintf("%s-%s-%d.pprof", name, s.proc.name, r+1))
			}
			s.results = append(s.results, drive(cfg, s.proc, legitConns, secrets, attack, prof))
		}
	}
	lookups := spk.metric(`spk_store_lookups_total{result="not_found"}`) - lookupsBefore
	report(all, attack)
	fmt.Printf("store lookups that found a key during the spk_auth runs (warm-ups included): %.0f; reloads ahead of expiry: %.0f queries for %.0f keys\n",
		spk.metric(`spk_store_lookups_total{result="found"}`)-foundBefore,
		spk.metric("spk_store_reloads_total")-reloadsBefore, spk.metric("spk_keys_reloaded_total")-reloadedBefore)
	for _, s := range all {
		for _, r := range s.results {
			if r.requests == 0 || r.errors > 0 {
				return fmt.Errorf("a run of %s had %d requests answered 200 and %d errors: the numbers above are not comparable", s.name, r.requests, r.errors)
			}
		}
	}
	if name == "attack" {
		var attackReqs int64
		var secs float64
		for _, r := range all[len(all)-1].results {
			attackReqs += r.attackRequests
			secs += r.elapsed.Seconds()
		}
		fmt.Printf("attack: %d refused requests with random keys (%.0f/s); store lookups for unknown keys: %.0f (%.0f/s); legitimate traffic on %d of %d connections\n",
			attackReqs, float64(attackReqs)/secs, lookups, lookups/(secs+float64(cfg.rounds)*cfg.warmup.Seconds()), legitConns, cfg.conns)
	}
	fmt.Println()
	return nil
}

func describe(name string, cfg config) string {
	switch name {
	case "hot":
		return "one full-access key, cached"
	case "spread":
		return fmt.Sprintf("%d distinct keys, round robin", cfg.keys)
	case "attack":
		return "half the connections: a cached key; the other half: 50% random well-formed unknown keys, 50% bad checksums"
	case "million":
		return fmt.Sprintf("%d keys stored, %d used round robin", cfg.stored, cfg.active)
	case "propagation":
		return "three spk_auth Caddys on one store: a key hot in all three is revoked through A's admin API; time until B and C refuse it"
	}
	return ""
}

// seed creates n keys for one account directly in the store (before Caddy
// starts) and returns the secrets of the first active ones.
func seed(cfg config, dir string, n, active int) ([]string, error) {
	ctx := context.Background()
	var st keystore.Store
	var err error
	if cfg.store == "postgres" {
		st, err = pgstore.Open(ctx, cfg.dsn)
	} else {
		st, err = sqlitestore.Open(ctx, filepath.Join(dir, "spk.db"))
	}
	if err != nil {
		return nil, err
	}
	defer st.Close()
	m := &keys.Manager{Store: st}
	account := fmt.Sprintf("acct_bench_%d", time.Now().UnixNano())
	if err := m.SetPlan(ctx, account, "pro"); err != nil {
		return nil, err
	}
	start := time.Now()
	secrets := make([]string, active)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	workers := 1
	if cfg.store == "postgres" {
		workers = 8
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				k, err := m.Create(ctx, account, keys.CreateRequest{Name: fmt.Sprintf("bench-%d", i)})
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				if i < active {
					secrets[i] = k.Secret
				}
				if i > 0 && i%100_000 == 0 {
					log.Printf("seeded %d of %d keys (%s)", i, n, time.Since(start).Round(time.Second))
				}
			}
		}()
	}
	wg.Wait()
	if n >= 1000 {
		log.Printf("seeded %d keys in %s", n, time.Since(start).Round(time.Millisecond))
	}
	return secrets, firstErr
}

// attackKey returns a key that no store holds: every second one is
// well-formed (valid checksum, so it costs a store lookup), the others have
// a wrong checksum.
func attackKey(wellFormed bool) string {
	g, err := apikey.Generate()
	if err != nil {
		log.Fatal(err)
	}
	if wellFormed {
		return g.Secret
	}
	last, repl := g.Secret[len(g.Secret)-1], byte('0')
	if last == '0' {
		repl = '1'
	}
	return g.Secret[:len(g.Secret)-1] + string(repl)
}

func startUpstream() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	body := []byte(`{"monitors":[]}`)
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	return ln, nil
}

// caddyProc is one Caddy process under test.
type caddyProc struct {
	name  string
	cmd   *exec.Cmd
	base  string
	admin string
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// The directives in front of reverse_proxy in the Caddys under test.
const (
	spkAuth = "spk_auth {\n\t\tpolicy statuspage\n\t}"
	// headersOnly makes spk_auth's header edits for a full-access key,
	// with no check.
	headersOnly = `request_header -Authorization
	request_header X-Spk-Account-Id acct_bench_1795600000000000000
	request_header X-Spk-Key-Id key_01JDBENCH0000000000000000
	request_header X-Spk-Scopes *
	request_header X-Spk-Plan pro`
)

// startCaddy starts a Caddy proxying to upstream, with directives in front
// of the proxy and, with a storage line, the spk app. All keep 1024 idle
// connections per upstream (Caddy's default of 32 makes reverse_proxy open
// a connection per request under this load).
func startCaddy(cfg config, name, upstream, storage, directives string) (*caddyProc, error) {
	port, adminPort := freePort(), freePort()
	dir := filepath.Join(cfg.workDir, "caddy-"+name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var global string
	if storage != "" {
		global = "spk {\n\t\t" + storage + "\n\t}"
	}
	caddyfile := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	storage file_system %s
	%s
}
http://127.0.0.1:%d {
	%s
	reverse_proxy %s {
		transport http {
			keepalive_idle_conns_per_host 1024
		}
	}
}
`, adminPort, dir, global, port, directives, upstream)
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(caddyfile), 0o600); err != nil {
		return nil, err
	}
	args := []string{cfg.caddyBin, "run", "--config", file, "--adapter", "caddyfile"}
	if cfg.caddyCPU != "" {
		if ts, err := exec.LookPath("taskset"); err == nil {
			args = append([]string{ts, "-c", cfg.caddyCPU}, args...)
		}
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	logf, err := os.Create(filepath.Join(dir, "caddy.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &caddyProc{name: name, cmd: cmd, base: fmt.Sprintf("http://127.0.0.1:%d", port), admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort)}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.admin + "/config/")
		if err == nil {
			resp.Body.Close()
			return p, nil
		}
		if time.Now().After(deadline) {
			p.stop()
			log, _ := os.ReadFile(filepath.Join(dir, "caddy.log"))
			return nil, fmt.Errorf("caddy %s did not start:\n%s", name, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *caddyProc) stop() {
	p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// cpuTicks returns the process's user+system CPU time in clock ticks.
func (p *caddyProc) cpuTicks() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	var utime, stime int64
	fmt.Sscan(fields[11], &utime)
	fmt.Sscan(fields[12], &stime)
	return utime + stime
}

// metric reads one sample of the process's Prometheus metrics.
func (p *caddyProc) metric(name string) float64 {
	resp, err := http.Get(p.admin + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

type result struct {
	requests       int64
	attackRequests int64
	errors         int64
	elapsed        time.Duration
	p50, p99       time.Duration
	cpuPerReq      time.Duration
}

const clockTick = 10 * time.Millisecond // USER_HZ on Linux

// cpuProfile writes a CPU profile of p, taken for d (whole seconds, at
// least one) through its admin endpoint, to path.
func (p *caddyProc) cpuProfile(path string, d time.Duration) error {
	secs := max(1, int(d/time.Second))
	resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", p.admin, secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("admin answered %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pace sends the due time of each request at rate per second until stop,
// then closes tickets. A request that finds no free connection waits in
// the channel, and its wait counts as latency.
func pace(tickets chan<- time.Time, rate int, stop *atomic.Bool) {
	defer close(tickets)
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	sent := 0
	for !stop.Load() {
		due := int(time.Since(start) / interval)
		for ; sent <= due; sent++ {
			select {
			case tickets <- start.Add(time.Duration(sent) * interval):
			default:
				// Over 65,536 requests behind: the Caddy cannot keep up
				// with the rate, and that shows as latency already.
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// drive sends GET /v1/monitors/42 over conns connections for the warm-up
// and the measured duration. With secrets, requests carry them round
// robin; with attack, the remaining connections send a new random key with
// every request.
func drive(cfg config, p *caddyProc, conns int, secrets []string, attack bool, profile string) result {
	tr := &http.Transport{MaxIdleConnsPerHost: cfg.conns, MaxConnsPerHost: cfg.conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := p.base + "/v1/monitors/42"

	var measuring atomic.Bool
	var measureFrom atomic.Int64
	var stop atomic.Bool
	var next atomic.Uint64
	lat := make([][]time.Duration, conns)
	var attackCount, errCount atomic.Int64
	var wg sync.WaitGroup
	// Open loop: a pacer hands out the times at which requests are due,
	// and latency counts from then, so a slow answer that delays the next
	// requests shows in their latency too (no coordinated omission).
	var tickets chan time.Time
	if cfg.rate > 0 {
		tickets = make(chan time.Time, 1<<16)
		go pace(tickets, cfg.rate, &stop)
	}
	worker := func(keysList []string, record []time.Duration, out *[]time.Duration, isAttack bool) {
		defer wg.Done()
		req, _ := http.NewRequest("GET", url, nil)
		for n := 0; !stop.Load(); n++ {
			switch {
			case isAttack:
				req.Header.Set("Authorization", "Bearer "+attackKey(n%2 == 0))
			case len(keysList) > 0:
				req.Header.Set("Authorization", "Bearer "+keysList[next.Add(1)%uint64(len(keysList))])
			}
			t0 := time.Now()
			if tickets != nil && !isAttack {
				due, ok := <-tickets
				if !ok {
					break
				}
				t0 = due
			}
			resp, err := client.Do(req)
			d := time.Since(t0)
			if err != nil {
				errCount.Add(1)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			// Only requests sent (or, open loop, due) inside the measured
			// window: a request due in the warm-up that waited into the
			// window would carry the warm-up's cold cache into p99.
			if !measuring.Load() || t0.UnixNano() < measureFrom.Load() {
				continue
			}
			if isAttack {
				attackCount.Add(1)
				continue
			}
			if resp.StatusCode != 200 {
				errCount.Add(1)
			}
			record = append(record, d)
		}
		*out = record
	}
	for i := range conns {
		wg.Add(1)
		go worker(secrets, make([]time.Duration, 0, 1<<16), &lat[i], false)
	}
	if attack {
		for range cfg.conns - conns {
			wg.Add(1)
			var discard []time.Duration
			go worker(nil, nil, &discard, true)
		}
	}
	time.Sleep(cfg.warmup)
	cpu0 := p.cpuTicks()
	start := time.Now()
	measureFrom.Store(start.UnixNano())
	measuring.Store(true)
	profiled := make(chan error, 1)
	if profile != "" {
		go func() { profiled <- p.cpuProfile(profile, cfg.duration) }()
	}
	time.Sleep(cfg.duration)
	measuring.Store(false)
	elapsed := time.Since(start)
	cpu1 := p.cpuTicks()
	stop.Store(true)
	wg.Wait()
	if profile != "" {
		if err := <-profiled; err != nil {
			log.Printf("profile of %s: %v", p.name, err)
		}
	}

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	r := result{requests: int64(len(all)), attackRequests: attackCount.Load(), errors: errCount.Load(), elapsed: elapsed}
	if len(all) > 0 {
		r.p50 = all[len(all)/2]
		r.p99 = all[len(all)*99/100]
		total := r.requests + r.attackRequests
		r.cpuPerReq = time.Duration(cpu1-cpu0) * clockTick / time.Duration(total)
	}
	return r
}

func summarize(rs []result) (rps float64, p50, p99, cpu time.Duration, errs int64) {
	var reqs int64
	var secs float64
	var p50s, p99s, cpus []time.Duration
	for _, r := range rs {
		reqs += r.requests
		secs += r.elapsed.Seconds()
		p50s = append(p50s, r.p50)
		p99s = append(p99s, r.p99)
		cpus = append(cpus, r.cpuPerReq)
		errs += r.errors
	}
	return float64(reqs) / secs, median(p50s), median(p99s), median(cpus), errs
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func report(all []*series, attack bool) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "\tround\treq/s\tp50\tp99\tCPU/req\terrors\t")
	for i := range all[0].results {
		for _, s := range all {
			r := s.results[i]
			fmt.Fprintf(w, "%s\t%d\t%.0f\t%s\t%s\t%s\t%d\t\n", s.name, i+1, float64(r.requests)/r.elapsed.Seconds(),
				us(r.p50), us(r.p99), us(r.cpuPerReq), r.errors)
		}
	}
	type sum struct {
		rps           float64
		p50, p99, cpu time.Duration
	}
	sums := make([]sum, len(all))
	for k, s := range all {
		rps, p50, p99, cpu, errs := summarize(s.results)
		sums[k] = sum{rps, p50, p99, cpu}
		fmt.Fprintf(w, "%s\tall\t%.0f\t%s\t%s\t%s\t%d\t\n", s.name, rps, us(p50), us(p99), us(cpu), errs)
	}
	w.Flush()
	base := sums[0]
	for k, s := range all[1:] {
		c := sums[k+1]
		if attack {
			fmt.Printf("legitimate requests under attack (%s): p50 %+.0fµs, p99 %+.0fµs against %s (req/s counts only the legitimate half; CPU/req divides by all requests)\n",
				s.name, float64(c.p50-base.p50)/1e3, float64(c.p99-base.p99)/1e3, all[0].name)
			continue
		}
		fmt.Printf("%s against %s: throughput ratio %.3f (%+.1f%%), p50 %+.0fµs, p99 %+.0fµs, CPU per request %+.1fµs (%+.1f%%)\n",
			s.name, all[0].name, c.rps/base.rps, (c.rps/base.rps-1)*100, float64(c.p50-base.p50)/1e3, float64(c.p99-base.p99)/1e3,
			float64(c.cpu-base.cpu)/1e3, (float64(c.cpu)/float64(base.cpu)-1)*100)
	}
}

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/1e3) }

// propagation starts three spk_auth Caddys on one store and times, over
// cfg.trials revocations through A's admin API, how long B and C keep
// accepting a key that was hot in their caches.
func propagation(cfg config, storage, upstream string) error {
	fmt.Printf("== propagation: %s\n", describe("propagation", cfg))
	var procs []*caddyProc
	for _, n := range []string{"A", "B", "C"} {
		// The poll after each revocation ends on a 401 from B and C:
		// a hundred trials would trip the failure limit of 127.0.0.1.
		p, err := startCaddy(cfg, "propagation-"+n, upstream, storage,
			"spk_auth {\n\t\tpolicy statuspage\n\t\tfailure_limit off\n\t}")
		if err != nil {
			return err
		}
		defer p.stop()
		procs = append(procs, p)
	}
	a := procs[0]
	account := fmt.Sprintf("acct_propagation_%d", time.Now().UnixNano())
	if err := a.adminJSON("PUT", "/spk/accounts/"+account+"/plan", keys.PlanRequest{Plan: "pro"}, nil); err != nil {
		return err
	}
	client := &http.Client{Timeout: 5 * time.Second}
	var worst, each []time.Duration
	for range cfg.trials {
		var k keys.Created
		if err := a.adminJSON("POST", "/spk/accounts/"+account+"/keys", keys.CreateRequest{Name: "propagation", Scopes: []string{}}, &k); err != nil {
			return err
		}
		for _, p := range procs {
			if st := p.status(client, k.Secret); st != http.StatusOK {
				return fmt.Errorf("new key on %s: status %d", p.name, st)
			}
		}
		if err := a.adminJSON("DELETE", "/spk/keys/"+k.ID, nil, nil); err != nil {
			return err
		}
		revoked := time.Now()
		// B and C polled at once, each on its own, so that C's time does
		// not include B's; a short pause between polls leaves the pinned
		// core to the Caddys.
		took := make([]time.Duration, len(procs)-1)
		var wg sync.WaitGroup
		for i, p := range procs[1:] {
			wg.Go(func() {
				for p.status(client, k.Secret) != http.StatusUnauthorized {
					if time.Since(revoked) > 10*time.Second {
						took[i] = -1
						return
					}
					time.Sleep(100 * time.Microsecond)
				}
				took[i] = time.Since(revoked)
			})
		}
		wg.Wait()
		for i, d := range took {
			if d < 0 {
				return fmt.Errorf("%s still accepts a key revoked 10 s ago", procs[i+1].name)
			}
		}
		each = append(each, took...)
		worst = append(worst, slices.Max(took))
	}
	pct := func(ds []time.Duration, q int) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[min(len(s)-1, len(s)*q/100)]
	}
	how := "the change log, read every second"
	if cfg.store == "postgres" {
		how = "LISTEN/NOTIFY, with the change log as backstop"
	}
	fmt.Printf("%d revocations, carried by %s\n", len(worst), how)
	fmt.Printf("until B or C refuses (each instance): p50 %s, p99 %s, max %s\n", ms(pct(each, 50)), ms(pct(each, 99)), ms(pct(each, 100)))
	fmt.Printf("until both refuse (each revocation):   p50 %s, p99 %s, max %s\n\n", ms(pct(worst, 50)), ms(pct(worst, 99)), ms(pct(worst, 100)))
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/1e6) }

// status sends one API request with key and returns the status.
func (p *caddyProc) status(client *http.Client, key string) int {
	req, _ := http.NewRequest("GET", p.base+"/v1/monitors/42", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// adminJSON calls the spk admin API of p; a status other than 2xx is an
// error.
func (p *caddyProc) adminJSON(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, p.admin+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s on %s: %s %s", method, path, p.name, resp.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}
