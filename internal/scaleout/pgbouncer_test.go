package scaleout

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spkgate/spkgate/internal/pgtest"
)

// hotLoad is how long TestScaleOutThroughPgBouncer sends hot keys through
// each setup.
const hotLoad = 20 * time.Second

// metric sums the samples of the instance's /metrics whose line starts
// with prefix (a name, or a name and labels).
func (in *instance) metric(prefix string) float64 {
	in.t.Helper()
	resp, err := client.Get("http://" + in.admin + "/metrics")
	if err != nil {
		in.t.Fatalf("%s: metrics: %v", in.name, err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			in.t.Fatalf("%s: metric line %q: %v", in.name, line, err)
		}
		sum += v
	}
	return sum
}

// storeQueries counts the key store queries the instance's cache made:
// lookups of every result, and reloads.
func (in *instance) storeQueries() float64 {
	return in.metric("spk_store_lookups_total") + in.metric("spk_store_reloads_total")
}

// pooledResult is what TestScaleOutThroughPgBouncer measured for one setup.
type pooledResult struct {
	setup       string
	revocations []time.Duration
	queries     float64 // store queries during the hot load
	requests    int64   // answered during the hot load
	failures    int64   // answers other than 200 during the hot load
}

// TestScaleOutThroughPgBouncer: two gateway processes on one PostgreSQL, A
// connected directly and B in each of the setups that docs/postgres.md
// describes: directly, through a real PgBouncer in session mode, through
// PgBouncer in transaction mode with the listener on a direct connection
// (storage postgres <dsn> { listen <dsn> }), and through PgBouncer in
// transaction mode alone (no listener: B polls the change log). In every
// setup, revocations made on A reach B within a second; 20 s of 50 hot
// keys on B cause no store query beyond the first lookup of each (the
// /metrics counters); no request through B gets anything but 200. The
// log prints the three modes side by side: propagation, store queries
// and requests per second.
func TestScaleOutThroughPgBouncer(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.DSN(t)
	upstream := startUpstream(t)
	session := pgtest.NewBouncer(t, srv, pgtest.SessionPooling)
	transaction := pgtest.NewBouncer(t, srv, pgtest.TransactionPooling)
	setups := []struct {
		name, dsn, listen string
	}{
		{"direct", dsn, ""},
		{"pgbouncer session", session.DSN(t, dsn), ""},
		{"pgbouncer transaction + listen direct", transaction.DSN(t, dsn), dsn},
		{"pgbouncer transaction, no listener", transaction.DSN(t, dsn), ""},
	}
	var results []pooledResult
	for i, setup := range setups {
		t.Run(strings.NewReplacer(" ", "_", ",", "", "+", "and").Replace(setup.name), func(t *testing.T) {
			// The instances' Caddyfile says listen {env.SPK_DATABASE_LISTEN_URL}:
			// empty (the storage's own DSN) unless set here.
			t.Setenv("SPK_DATABASE_LISTEN_URL", setup.listen)
			// Entries outlive the load, so that no timer-driven reload
			// (the cache's own business) counts as a store query here.
			const extra = "cache_ttl 1m"
			a := start(t, "A (direct)", dsn, upstream, extra)
			b := start(t, "B ("+setup.name+")", setup.dsn, upstream, extra)
			a.ready(time.Minute)
			b.ready(time.Minute)
			account := fmt.Sprintf("acct_pool%d", i)
			a.setPlan(account, "pro")
			res := pooledResult{setup: setup.name}

			// Hot keys, each looked up once by B after B has heard of its
			// creation (a creation B hears of later invalidates what B
			// cached of that key, as it must: B may have cached it as
			// unknown). The sentinel's revocation, made after the
			// creations and seen by B, shows that B has heard of them;
			// the sentinel has an account of its own, so that its
			// revocation, which B may apply twice (notified, then read
			// from the log), does not invalidate the hot keys.
			a.setPlan(account+"_sentinel", "pro")
			sentinel := a.createKey(account + "_sentinel")
			if st, body := b.get(sentinel.Secret); st != 200 {
				t.Fatalf("B: sentinel: %d %s", st, body)
			}
			hot := make([]string, 50)
			for j := range hot {
				hot[j] = a.createKey(account).Secret
			}
			if st := a.call("DELETE", "/spk/keys/"+sentinel.ID, nil, nil); st != 204 {
				t.Fatalf("revoke on A: %d", st)
			}
			if _, err := b.until(sentinel.Secret, 401, time.Now(), 200); err != nil {
				t.Fatal(err)
			}
			for _, k := range hot {
				if st, body := b.get(k); st != 200 {
					t.Fatalf("B: first use of a hot key: %d %s", st, body)
				}
			}
			before := b.storeQueries()
			var (
				requests, failures atomic.Int64
				wg                 sync.WaitGroup
				firstFailure       atomic.Pointer[string]
			)
			end := time.Now().Add(hotLoad)
			for w := range 4 {
				wg.Go(func() {
					for n := w; time.Now().Before(end); n++ {
						st, body, err := b.try(hot[n%len(hot)])
						requests.Add(1)
						if err != nil || st != http.StatusOK {
							failures.Add(1)
							msg := fmt.Sprintf("status %d, %v: %s", st, err, body)
							firstFailure.CompareAndSwap(nil, &msg)
						}
					}
				})
			}
			wg.Wait()
			lookups, reloads := b.metric("spk_store_lookups_total"), b.metric("spk_store_reloads_total")
			res.queries = lookups + reloads - before
			res.requests, res.failures = requests.Load(), failures.Load()
			if res.queries != 0 {
				t.Errorf("%v s of hot keys made %v store queries on B (now %v lookups, %v reloads in all), want none beyond the first lookups",
					hotLoad.Seconds(), res.queries, lookups, reloads)
			}
			if res.failures != 0 {
				t.Errorf("%d of %d hot requests through B failed; first: %s", res.failures, res.requests, *firstFailure.Load())
			}

			// Revocations on A reach B, whose cache holds the key.
			for range 20 {
				k := a.createKey(account)
				for range 2 {
					if st, body := b.get(k.Secret); st != 200 {
						t.Fatalf("B: warm: %d %s", st, body)
					}
				}
				if st := a.call("DELETE", "/spk/keys/"+k.ID, nil, nil); st != 204 {
					t.Fatalf("revoke on A: %d", st)
				}
				revoked := time.Now()
				d, err := b.until(k.Secret, 401, revoked, 200)
				if err != nil {
					t.Fatal(err)
				}
				res.revocations = append(res.revocations, d)
			}
			report(t, "revocation A -> B, "+setup.name, res.revocations)
			results = append(results, res)
		})
	}
	t.Log("side by side (B is the instance in the setup named; A is direct):")
	t.Logf("%-40s %12s %12s %14s %10s", "setup", "revoke p50", "revoke max", "store queries", "req/s")
	for _, r := range results {
		s := append([]time.Duration(nil), r.revocations...)
		t.Logf("%-40s %10.1fms %10.1fms %14.0f %10.0f", r.setup, ms(quantile(s, 0.5)), ms(s[len(s)-1]),
			r.queries, float64(r.requests)/hotLoad.Seconds())
	}
}

// TestScaleOutRefusesWhatCannotWork: a gateway whose listen connection
// string leads through PgBouncer in transaction mode, where LISTEN cannot
// work, is refused at start with the fix named.
func TestScaleOutRefusesWhatCannotWork(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.DSN(t)
	pooled := pgtest.NewBouncer(t, srv, pgtest.TransactionPooling).DSN(t, dsn)
	t.Setenv("SPK_DATABASE_LISTEN_URL", pooled)
	out := start(t, "A", pooled, startUpstream(t), "").refused(time.Minute)
	if !strings.Contains(out, "LISTEN cannot work") || !strings.Contains(out, "point it at PostgreSQL itself or at a session-pooling proxy") {
		t.Errorf("output does not say why and what to do:\n%s", out)
	}
}
