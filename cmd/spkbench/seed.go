package main

import (
	"context"
	"fmt"
	"log"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/pgstore"
	"github.com/spkgate/spkgate/keystore/sqlitestore"
)

// seed creates n keys for one account directly in the store (before Caddy
// starts) and returns the secrets of the first active ones.
func seed(cfg config, dir string, n, active int) ([]string, error) {
	ctx := context.Background()
	st, err := openStore(ctx, cfg, dir)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	m := &keys.Manager{Store: st}
	account := fmt.Sprintf("acct_bench_%d", time.Now().UnixNano())
	if err := m.SetPlan(ctx, benchActor, account, "pro"); err != nil {
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
				k, err := m.Create(ctx, benchActor, account, keys.CreateRequest{Name: fmt.Sprintf("bench-%d", i)})
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

// seedAccounts creates n accounts named prefix_<time>_<i> on plan pro, one
// key each, directly in the store (before Caddy starts) and returns their
// secrets, account i's at index i.
func seedAccounts(cfg config, dir, prefix string, n int) ([]string, error) {
	ctx := context.Background()
	st, err := openStore(ctx, cfg, dir)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	m := &keys.Manager{Store: st}
	stamp := time.Now().UnixNano()
	secrets := make([]string, n)
	for i := range n {
		account := fmt.Sprintf("%s_%d_%d", prefix, stamp, i)
		if err := m.SetPlan(ctx, benchActor, account, "pro"); err != nil {
			return nil, err
		}
		k, err := m.Create(ctx, benchActor, account, keys.CreateRequest{Name: "bench"})
		if err != nil {
			return nil, err
		}
		secrets[i] = k.Secret
	}
	return secrets, nil
}

// benchActor is who the audit events of the seeding name.
var benchActor = keys.Actor{Name: "spkbench", Source: keys.SourceCLI}

// openStore opens the store of cfg.store: PostgreSQL at cfg.dsn, or SQLite
// in dir, where the scenario's Caddy will open it.
func openStore(ctx context.Context, cfg config, dir string) (keystore.Store, error) {
	if cfg.store == "postgres" {
		return pgstore.Open(ctx, cfg.dsn)
	}
	return sqlitestore.Open(ctx, filepath.Join(dir, "spk.db"))
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
