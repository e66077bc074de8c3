package main

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/spkgate/spkgate/keys"
)

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
