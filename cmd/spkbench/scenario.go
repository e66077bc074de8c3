package main

import (
	"fmt"
	"os"
	"path/filepath"
)

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
	case "flood":
		return flood(cfg, storeDir, storage, upstream)
	default:
		return fmt.Errorf("unknown scenario (known: hot, spread, attack, million, propagation, flood)")
	}
	if err != nil {
		return err
	}
	app, desc := storage, describe(name, cfg)
	if cfg.limits {
		app += "\n\t\t" + limitsOn
		desc += "; limits on (plan pro: rate 1000000 1s, quota 1000000000000000 month; no request reaches them)"
	}
	spk, err := startCaddy(cfg, "spk-"+name, upstream, app, spkAuth)
	if err != nil {
		return err
	}
	defer spk.stop()
	// With limits on, every answer to the seeded keys must carry a
	// RateLimit header: proof that the limiter ran.
	spk.wantRateLimit = cfg.limits

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
	fmt.Printf("== %s: %s\n", name, desc)
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
			s.results = append(s.results, drive(cfg, s.proc, legitConns, secrets, attack, prof, nil))
		}
	}
	lookups := spk.metric(`spk_store_lookups_total{result="not_found"}`) - lookupsBefore
	report(all, attack)
	fmt.Printf("store lookups that found a key during the spk_auth runs (warm-ups included): %.0f; background reloads: %.0f queries for %.0f keys\n",
		spk.metric(`spk_store_lookups_total{result="found"}`)-foundBefore,
		spk.metric("spk_store_reloads_total")-reloadsBefore, spk.metric("spk_keys_reloaded_total")-reloadedBefore)
	for _, s := range all {
		for _, r := range s.results {
			if r.requests == 0 || r.errors > 0 {
				return fmt.Errorf("a run of %s had %d requests answered 200 and %d errors%s: the numbers above are not comparable",
					s.name, r.requests, r.errors, rateLimitNote(s.proc))
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
	case "flood":
		return fmt.Sprintf("%d accounts, one key each, open loop at %d requests/s in all, round robin; rate limit %d requests/s per account; "+
			"series idle: that traffic alone; series flood: the same plus one more account's key sent open loop at %d requests/s (10x its limit)",
			cfg.accounts, othersRate(cfg), cfg.floodLimit, 10*cfg.floodLimit)
	case "propagation":
		return "three spk_auth Caddys on one store: a key hot in all three is revoked through A's admin API; time until B and C refuse it"
	}
	return ""
}

// rateLimitNote says, for a Caddy whose answers must carry a RateLimit
// header, that an answer without one counts as an error.
func rateLimitNote(p *caddyProc) string {
	if p.wantRateLimit {
		return " (an answer without a RateLimit header is an error)"
	}
	return ""
}
