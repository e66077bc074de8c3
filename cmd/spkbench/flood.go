package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// floodRun is one run of the flood scenario: the other accounts' traffic
// as drive measured it and, in the flood series, the flood's answers
// inside the same measured window.
type floodRun struct {
	others result
	// sent = admitted (200) + limited (429) + errors (anything else).
	sent, admitted, limited, errors int64
	// cpuPerReq divides the Caddy's CPU time by the other accounts' and
	// the flood's requests together.
	cpuPerReq time.Duration
}

// flood runs the flood scenario (see describe): one spk_auth Caddy whose
// plan pro has a rate of cfg.floodLimit per account, driven in rounds by
// the other accounts alone (idle) and by them beside a flood (flood).
func flood(cfg config, dir, storage, upstream string) error {
	limit := cfg.floodLimit
	switch {
	case cfg.accounts < 1 || limit < 1 || limit > 100_000:
		return fmt.Errorf("-accounts must be at least 1 and -flood-limit between 1 and 100,000")
	case cfg.rate >= cfg.accounts*limit:
		return fmt.Errorf("-rate %d would send each of the %d accounts %d requests/s or more, its limit: the others must not be limited",
			cfg.rate, cfg.accounts, limit)
	}
	secrets, err := seedAccounts(cfg, dir, "acct_flood", cfg.accounts+1)
	if err != nil {
		return err
	}
	others, flooding := secrets[:cfg.accounts], secrets[cfg.accounts]
	app := fmt.Sprintf("%s\n\t\tlimits pro {\n\t\t\trate %d 1s\n\t\t}", storage, limit)
	spk, err := startCaddy(cfg, "spk-flood", upstream, app, spkAuth)
	if err != nil {
		return err
	}
	defer spk.stop()
	spk.wantRateLimit = true
	fmt.Printf("== flood: %s\n", describe("flood", cfg))

	// One request per key before the rounds fills the cache: from then on
	// no request should reach the store.
	client := &http.Client{Timeout: 5 * time.Second}
	for i, k := range secrets {
		if st := spk.status(client, k); st != http.StatusOK {
			return fmt.Errorf("first request with account %d's key: status %d", i, st)
		}
	}
	found, notFound := `spk_store_lookups_total{result="found"}`, `spk_store_lookups_total{result="not_found"}`
	lookups0 := spk.metric(found) + spk.metric(notFound)
	reloads0, reloaded0 := spk.metric("spk_store_reloads_total"), spk.metric("spk_keys_reloaded_total")
	var commits0 int64
	if cfg.store == "postgres" {
		if commits0, err = pgCommits(cfg.dsn); err != nil {
			return err
		}
	}

	runCfg := cfg
	runCfg.rate = othersRate(cfg)
	var idle, flooded []floodRun
	start := time.Now()
	for r := range cfg.rounds {
		// Interleaved: each round starts with the other series.
		for k := range 2 {
			on := (r+k)%2 == 1
			name := "idle"
			if on {
				name = "flood"
			}
			prof := ""
			if cfg.profileDir != "" {
				prof = filepath.Join(cfg.profileDir, fmt.Sprintf("flood-%s-%d.pprof", name, r+1))
			}
			run := floodOnce(runCfg, spk, others, flooding, on, prof)
			if on {
				flooded = append(flooded, run)
			} else {
				idle = append(idle, run)
			}
		}
	}
	wall := time.Since(start)
	lookups := spk.metric(found) + spk.metric(notFound) - lookups0

	floodReport(idle, flooded, limit)
	fmt.Printf("store lookups during the rounds (warm-ups included, after one request per key): %.0f; background reloads: %.0f queries for %.0f keys\n",
		lookups, spk.metric("spk_store_reloads_total")-reloads0, spk.metric("spk_keys_reloaded_total")-reloaded0)
	if cfg.store == "postgres" {
		commits, err := pgCommits(cfg.dsn)
		if err != nil {
			return err
		}
		// Measured windows only, while the transactions span the whole
		// rounds: two rates, not a count per request. PostgreSQL's
		// statistics lag up to a few seconds behind the commits.
		var reqs int64
		var secs float64
		for _, run := range append(idle, flooded...) {
			reqs += run.others.requests + run.sent
			secs += run.others.elapsed.Seconds()
		}
		fmt.Printf("PostgreSQL: %d transactions committed in %s of rounds (%.1f/s, every client of the database) while Caddy answered %.0f requests/s\n",
			commits-commits0, wall.Round(time.Millisecond), float64(commits-commits0)/wall.Seconds(), float64(reqs)/secs)
	}
	fmt.Println()
	return floodCheck(idle, flooded, limit, lookups, len(secrets))
}

// othersRate is what the other accounts send in all, requests/s: -rate if
// given, else half their limits together, so that each account sends half
// its rate and is never limited, whatever -accounts and -flood-limit.
// (Putting them on a plan without a limit would leave the limiter idle
// for them: the point is that one account's limit does not slow the
// others' checks.)
func othersRate(cfg config) int {
	if cfg.rate > 0 {
		return cfg.rate
	}
	return max(1, cfg.accounts*cfg.floodLimit/2)
}

// floodOnce drives p with the other accounts' keys round robin, open loop
// at cfg.rate, and, if on, the flooding key beside them at ten times
// cfg.floodLimit, counted over the same measured window.
func floodOnce(cfg config, p *caddyProc, others []string, flooding string, on bool, profile string) floodRun {
	var win window
	var f *flooder
	if on {
		f = startFlood(p, max(2, cfg.conns/4), flooding, 10*cfg.floodLimit, &win)
	}
	run := floodRun{others: drive(cfg, p, cfg.conns, others, false, profile, &win)}
	if f != nil {
		f.halt()
		run.sent, run.admitted, run.limited, run.errors = f.sent.Load(), f.admitted.Load(), f.limited.Load(), f.errors.Load()
	}
	if n := run.others.requests + run.sent; n > 0 {
		run.cpuPerReq = run.others.cpu / time.Duration(n)
	}
	return run
}

// flooder sends one key open loop at a fixed rate over connections of its
// own, paced apart from the other traffic, and counts its answers inside
// a measured window.
type flooder struct {
	sent, admitted, limited, errors atomic.Int64
	stop                            atomic.Bool
	wg                              sync.WaitGroup
	tr                              *http.Transport
}

func startFlood(p *caddyProc, conns int, key string, rate int, win *window) *flooder {
	f := &flooder{tr: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}}
	client := &http.Client{Transport: f.tr, Timeout: 10 * time.Second}
	tickets := make(chan time.Time, 1<<16)
	go pace(tickets, rate, &f.stop)
	for range conns {
		f.wg.Go(func() {
			req, _ := http.NewRequest("GET", p.base+"/v1/monitors/42", nil)
			req.Header.Set("Authorization", "Bearer "+key)
			// pace closes tickets once stopped and never blocks, so
			// leaving what is still queued is safe.
			for due := range tickets {
				if f.stop.Load() {
					return
				}
				resp, err := client.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if !win.counts(due) {
					continue
				}
				f.sent.Add(1)
				switch {
				case err != nil || p.wantRateLimit && resp.Header.Get("RateLimit") == "":
					f.errors.Add(1)
				case resp.StatusCode == http.StatusOK:
					f.admitted.Add(1)
				case resp.StatusCode == http.StatusTooManyRequests:
					f.limited.Add(1)
				default:
					f.errors.Add(1)
				}
			}
		})
	}
	return f
}

// halt stops the flood and waits for its answers.
func (f *flooder) halt() {
	f.stop.Store(true)
	f.wg.Wait()
	f.tr.CloseIdleConnections()
}

// pgCommits reads the transactions committed so far in the database at
// dsn, over a connection of its own.
func pgCommits(dsn string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int64
	err = conn.QueryRow(ctx, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").Scan(&n)
	return n, err
}
