package caddymodule_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/caddymodule"
	"github.com/spkgate/spkgate/internal/pgtest"
	"github.com/spkgate/spkgate/keycache"
	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore/pgstore"
)

// These tests put the gateway of this process (instance A) on a real
// PostgreSQL next to "another instance": a store of its own on the same
// database, changing keys as a second gateway or the command line would,
// without touching A's cache. The database is stopped, partitioned away
// through a proxy, or has its backends terminated while A serves.
// (cmd/caddy's scale-out tests run three gateway processes.)

// bound is how long A trusts a cached entry it cannot confirm.
const bound = keycache.DefaultMaxStale

// otherInstance opens the database as another instance would.
func otherInstance(t *testing.T, dsn string) *keys.Manager {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := pgstore.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &keys.Manager{Store: st}
}

// spkCache is the cache of A's running configuration.
func spkCache(t *testing.T) *keycache.Cache {
	t.Helper()
	app, err := caddy.ActiveContext().App("spk")
	if err != nil {
		t.Fatal(err)
	}
	return app.(*caddymodule.App).Cache()
}

func adminConn(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// listeners counts (or, with kill, terminates) the listening connections to
// the database of conn.
func listeners(t *testing.T, conn *pgx.Conn, kill bool) int {
	t.Helper()
	n, err := countListeners(conn, kill)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// countListeners is listeners for any goroutine: it returns the error.
func countListeners(conn *pgx.Conn, kill bool) (int, error) {
	q := `SELECT count(*) FROM pg_stat_activity`
	if kill {
		q = `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity`
	}
	var n int
	err := conn.QueryRow(context.Background(), q+` WHERE datname = current_database()
		AND application_name = 'spkgate'||$1`, pgstore.ListenerSuffix).Scan(&n)
	return n, err
}

// waitListening waits until A listens on the database and has caught up.
func waitListening(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for listeners(t, conn, false) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the gateway does not listen for changes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(2 * pgstore.HeartbeatInterval) // a heartbeat vouches for the cache
}

// untilStatus polls key on A until it gets want, failing on any status
// outside allowed, and returns how long that took from since.
func (g *gateway) untilStatus(key string, want int, since time.Time, within time.Duration, allowed ...int) time.Duration {
	g.t.Helper()
	deadline := since.Add(within)
	for {
		r := g.do("GET", "/v1/monitors", "X-API-Key", key)
		took := time.Since(since)
		if r.status == want {
			return took
		}
		ok := false
		for _, a := range allowed {
			ok = ok || r.status == a
		}
		if !ok {
			g.t.Fatalf("status %d after %v, want %d (or %v meanwhile): %s", r.status, took, want, allowed, r.body)
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("still %d after %v, want %d", r.status, within, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestScaleOutOutageBoundAndRecovery: PostgreSQL stops. A's cached key
// keeps working up to the bound and then gets 503; an uncached key gets
// 503 from the start; neither is ever 401 or forwarded. When PostgreSQL is
// back, A recovers without a restart, and a key revoked the moment the
// database takes writes again is never accepted.
func TestScaleOutOutageBoundAndRecovery(t *testing.T) {
	srv := pgtest.NewServer(t)
	dsn := srv.DSN(t)
	g := startGateway(t, "storage postgres "+dsn, "policy statuspage\n\t\tfailure_limit off")
	other := otherInstance(t, dsn)
	g.setPlan("acct_o", "pro")
	hot, cold, later := g.createKey("acct_o"), g.createKey("acct_o"), g.createKey("acct_o")
	waitListening(t, adminConn(t, dsn))
	wantStatus(t, "warm", g.do("GET", "/v1/monitors", "X-API-Key", hot.Secret), 200)
	wantStatus(t, "warm", g.do("GET", "/v1/monitors", "X-API-Key", later.Secret), 200)
	spkCache(t).Wait()

	srv.Stop(t)
	stopped := time.Now()
	down := true
	defer func() {
		if down {
			srv.Start(t)
		}
	}()
	wantStatus(t, "cached key, database down", g.do("GET", "/v1/monitors", "X-API-Key", hot.Secret), 200)
	forwarded := g.upstream.count.Load()
	r := g.do("GET", "/v1/monitors", "X-API-Key", cold.Secret)
	wantStatus(t, "uncached key, database down", r, 503)
	if r.body != `{"error":"unavailable"}` || g.upstream.count.Load() != forwarded {
		t.Fatalf("503 body %s; forwarded %d", r.body, g.upstream.count.Load()-forwarded)
	}

	var refused time.Duration // when the cached key stopped working
	for deadline := stopped.Add(bound + 3*time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		forwarded := g.upstream.count.Load()
		r := g.do("GET", "/v1/monitors", "X-API-Key", hot.Secret)
		at := time.Since(stopped)
		switch {
		case r.status == 200 && refused == 0:
		case r.status == 503:
			if g.upstream.count.Load() != forwarded {
				t.Fatal("a 503 request was forwarded")
			}
			if refused == 0 {
				refused = at
			}
		default:
			t.Fatalf("cached key %v into the outage: %d %s (refused since %v)", at, r.status, r.body, refused)
		}
		if refused != 0 && at > refused+time.Second {
			break
		}
	}
	switch {
	case refused == 0:
		t.Fatalf("the cached key was still accepted %v into the outage; the bound is %v", bound+3*time.Second, bound)
	case refused > bound+500*time.Millisecond:
		t.Errorf("the cached key was accepted for %v of the outage, past the bound of %v", refused, bound)
	case refused < 2*time.Second:
		t.Errorf("the cached key stopped working after %v of the outage; it should work up to the bound (%v)", refused, bound)
	}
	t.Logf("cached key worked for %v of the outage, then 503 (bound %v)", refused.Round(10*time.Millisecond), bound)

	srv.Start(t)
	down = false
	started := time.Now()
	var revokedAt time.Time
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := other.Revoke(ctx, keys.Actor{Name: "test", Source: keys.SourceCLI}, "", later.ID)
		cancel()
		if err == nil {
			revokedAt = time.Now()
			break
		}
		if time.Since(started) > 15*time.Second {
			t.Fatalf("the other instance could not revoke after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := g.untilStatus(cold.Secret, 200, started, 15*time.Second, 503)
	t.Logf("recovered %v after the database came back", took.Round(10*time.Millisecond))
	g.untilStatus(later.Secret, 401, revokedAt, 5*time.Second, 503)
	for range 20 {
		wantInvalid(t, "key revoked at the recovery", g.do("GET", "/v1/monitors", "X-API-Key", later.Secret))
	}
	wantStatus(t, "cached key after the recovery", g.do("GET", "/v1/monitors", "X-API-Key", hot.Secret), 200)
}

// TestScaleOutPartitionedInstanceHonoursTheBound: A alone is cut off from
// PostgreSQL by a network that drops everything silently, and another
// instance revokes a key A has cached. A cannot hear of it, so it refuses
// the key (503) once the bound has passed since it was last in sync, and
// answers 401 once the network heals.
func TestScaleOutPartitionedInstanceHonoursTheBound(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.DSN(t)
	proxy := pgtest.NewProxy(t, srv.Addr())
	g := startGateway(t, "storage postgres "+proxy.DSN(t, dsn), "policy statuspage\n\t\tfailure_limit off")
	other := otherInstance(t, dsn)
	g.setPlan("acct_p", "pro")
	k := g.createKey("acct_p")
	waitListening(t, adminConn(t, dsn))
	wantStatus(t, "warm", g.do("GET", "/v1/monitors", "X-API-Key", k.Secret), 200)
	spkCache(t).Wait()

	proxy.Blackhole()
	cut := time.Now()
	if _, err := other.Revoke(context.Background(), keys.Actor{Name: "test", Source: keys.SourceCLI}, "", k.ID); err != nil {
		t.Fatal(err)
	}
	var last200, first503 time.Duration
	for time.Since(cut) < bound+2*time.Second {
		r := g.do("GET", "/v1/monitors", "X-API-Key", k.Secret)
		at := time.Since(cut)
		switch r.status {
		case 200:
			last200 = at
		case 503:
			if first503 == 0 {
				first503 = at
			}
		default:
			t.Fatalf("partitioned, %v after the cut: %d %s", at, r.status, r.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("revoked elsewhere while partitioned: accepted until %v after the cut, 503 from %v (bound %v)",
		last200.Round(10*time.Millisecond), first503.Round(10*time.Millisecond), bound)
	if last200 > bound+500*time.Millisecond {
		t.Errorf("the partitioned instance accepted the key %v after the cut, past the bound of %v", last200, bound)
	}
	if first503 == 0 || first503 < last200 {
		t.Errorf("no 503 after the last 200 (%v, %v)", last200, first503)
	}

	proxy.Heal()
	healed := time.Now()
	took := g.untilStatus(k.Secret, 401, healed, 15*time.Second, 503)
	t.Logf("401 %v after the network healed", took.Round(10*time.Millisecond))
}

// TestScaleOutListenerKilledDuringRevocation: A's listening connection is
// terminated (pg_terminate_backend) just before, at and just after another
// instance revokes a key A has cached; A refuses the key within a second
// every time, and listens again.
func TestScaleOutListenerKilledDuringRevocation(t *testing.T) {
	dsn := pgtest.DSN(t)
	g := startGateway(t, "storage postgres "+dsn, "policy statuspage\n\t\tfailure_limit off")
	other := otherInstance(t, dsn)
	conn := adminConn(t, dsn)
	g.setPlan("acct_l", "pro")
	for i, offset := range []time.Duration{-20 * time.Millisecond, 0, 5 * time.Millisecond, 20 * time.Millisecond} {
		waitListening(t, conn)
		k := g.createKey("acct_l")
		wantStatus(t, "warm", g.do("GET", "/v1/monitors", "X-API-Key", k.Secret), 200)
		spkCache(t).Wait()

		killer := adminConn(t, dsn)
		killed := make(chan int, 1)
		go func() {
			time.Sleep(20*time.Millisecond + offset)
			n, err := countListeners(killer, true)
			if err != nil {
				t.Error(err)
			}
			killed <- n
		}()
		time.Sleep(20 * time.Millisecond)
		if _, err := other.Revoke(context.Background(), keys.Actor{Name: "test", Source: keys.SourceCLI}, "", k.ID); err != nil {
			t.Fatal(err)
		}
		revokedAt := time.Now()
		took := g.untilStatus(k.Secret, 401, revokedAt, 5*time.Second, 200)
		if n := <-killed; n != 1 {
			t.Fatalf("terminated %d listeners, want 1", n)
		}
		t.Logf("trial %d (listener killed %v after the revocation began): 401 %v after the revocation returned",
			i, offset, took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("trial %d: the revoked key was accepted for %v", i, took)
		}
	}
	waitListening(t, conn)
}

// TestScaleOutRevocationRacesInFlightLookups: clients hammer A with a key A
// has not cached yet while another instance revokes it, so lookups are in
// flight across the revocation. Once A has answered 401, no request sent
// later gets 200, and the first 401 comes within a second.
func TestScaleOutRevocationRacesInFlightLookups(t *testing.T) {
	dsn := pgtest.DSN(t)
	g := startGateway(t, "storage postgres "+dsn, "policy statuspage\n\t\tfailure_limit off")
	other := otherInstance(t, dsn)
	g.setPlan("acct_r", "pro")
	waitListening(t, adminConn(t, dsn))
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()

	type answer struct {
		sent, received time.Time
		status         int
	}
	for trial := range 8 {
		k, err := other.Create(context.Background(), keys.Actor{Name: "test", Source: keys.SourceCLI}, "acct_r", keys.CreateRequest{Name: "race"})
		if err != nil {
			t.Fatal(err)
		}
		var (
			mu      sync.Mutex
			answers []answer
			wg      sync.WaitGroup
		)
		stop := make(chan struct{})
		for range 6 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					req, _ := http.NewRequest("GET", g.base+"/v1/monitors", nil)
					req.Header.Set("X-API-Key", k.Secret)
					sent := time.Now()
					resp, err := client.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					resp.Body.Close()
					mu.Lock()
					answers = append(answers, answer{sent, time.Now(), resp.StatusCode})
					mu.Unlock()
				}
			})
		}
		time.Sleep(time.Duration(rand.IntN(15)) * time.Millisecond)
		if _, err := other.Revoke(context.Background(), keys.Actor{Name: "test", Source: keys.SourceCLI}, "", k.ID); err != nil {
			t.Fatal(err)
		}
		revokedAt := time.Now()
		time.Sleep(300 * time.Millisecond)
		close(stop)
		wg.Wait()

		sort.Slice(answers, func(i, j int) bool { return answers[i].sent.Before(answers[j].sent) })
		var first401 time.Time
		for _, a := range answers {
			if a.status == 401 && (first401.IsZero() || a.received.Before(first401)) {
				first401 = a.received
			}
		}
		if first401.IsZero() {
			t.Fatalf("trial %d: no 401 within 300ms of the revocation (%d requests)", trial, len(answers))
		}
		ok200 := 0
		for _, a := range answers {
			switch {
			case a.status == 200 && a.sent.After(first401):
				t.Fatalf("trial %d: a request sent %v after a 401 was answered got 200", trial, a.sent.Sub(first401))
			case a.status == 200:
				ok200++
			case a.status != 401:
				t.Fatalf("trial %d: status %d", trial, a.status)
			}
		}
		if d := first401.Sub(revokedAt); d > time.Second {
			t.Errorf("trial %d: first 401 %v after the revocation", trial, d)
		}
		t.Logf("trial %d: %d requests, %d answered 200 (before or across the revocation), first 401 %v after it",
			trial, len(answers), ok200, first401.Sub(revokedAt).Round(100*time.Microsecond))
	}
}

// TestScaleOut10000KeysRevokedInOneTransaction: another instance revokes
// 10,000 keys, all hot in A's cache, in one transaction; within a second
// none of them is accepted by A. Once as one account's keys (the store's
// RevokeAccountKeys, as the admin API does it), once as the keys of 1,000
// accounts (an operator's SQL transaction), where each of the 10,000
// notifications has to be applied.
func TestScaleOut10000KeysRevokedInOneTransaction(t *testing.T) {
	t.Run("one account", func(t *testing.T) {
		bulkRevocation(t, 1, func(ctx context.Context, other *keys.Manager, _ *pgx.Conn) (int, error) {
			return other.RevokeAccount(ctx, keys.Actor{Name: "test", Source: keys.SourceCLI}, "acct_bulk_0")
		})
	})
	t.Run("1000 accounts", func(t *testing.T) {
		bulkRevocation(t, 1000, func(ctx context.Context, _ *keys.Manager, conn *pgx.Conn) (int, error) {
			// What RevokeAccountKeys does, for many accounts at once. No
			// other writer runs, so the change log's advisory lock can be
			// left out.
			var n int
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, `WITH r AS (
						UPDATE api_keys SET revoked_at = now()
						WHERE account_id LIKE 'acct_bulk_%' AND revoked_at IS NULL
						RETURNING account_id, key_hash),
					c AS (INSERT INTO changes (kind, account_id, key_hash, at)
						SELECT 'revoked', account_id, key_hash, now() FROM r RETURNING 1)
					SELECT count(*) FROM c`).Scan(&n)
			})
			return n, err
		})
	})
}

// bulkRevocation seeds 10,000 keys over the given number of accounts,
// warms them all in A's cache, revokes them with revoke and measures how
// long until A accepts none of them.
func bulkRevocation(t *testing.T, accounts int, revoke func(context.Context, *keys.Manager, *pgx.Conn) (int, error)) {
	dsn := pgtest.DSN(t)
	g := startGateway(t, "storage postgres "+dsn, "policy statuspage\n\t\tfailure_limit off")
	other := otherInstance(t, dsn)
	conn := adminConn(t, dsn)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `INSERT INTO accounts (id, plan)
		SELECT 'acct_bulk_' || i, 'pro' FROM generate_series(0, $1::int - 1) AS i`, accounts); err != nil {
		t.Fatal(err)
	}
	const n = 10_000
	secrets := make([]string, n)
	rows := make([][]any, n)
	now := time.Now()
	for i := range rows {
		k, err := apikey.Generate()
		if err != nil {
			t.Fatal(err)
		}
		secrets[i] = k.Secret
		rows[i] = []any{k.ID, fmt.Sprintf("acct_bulk_%d", i%accounts), "bulk", k.Display, k.Hash[:], []string{}, now}
	}
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"api_keys"},
		[]string{"id", "account_id", "name", "prefix", "key_hash", "scopes", "created_at"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	waitListening(t, conn)

	// Warm every key in A's cache: through the gateway for a sample, through
	// the cache the gateway uses for the rest. ristretto drops entries
	// offered faster than it admits them: offer the missing ones again
	// until all are in.
	c := spkCache(t)
	for _, s := range secrets[:100] {
		wantStatus(t, "warm", g.do("GET", "/v1/monitors", "X-API-Key", s), 200)
	}
	missing := secrets
	for pass := 0; len(missing) > 0; pass++ {
		if pass == 20 {
			t.Fatalf("%d of %d keys still not cached", len(missing), n)
		}
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := w; i < len(missing); i += 4 {
					if _, st := c.Verify(ctx, missing[i]); st != keycache.Valid {
						t.Errorf("warming a key: %v", st)
						return
					}
				}
			})
		}
		wg.Wait()
		c.Wait()
		var still []string
		for _, s := range missing {
			if _, st := c.Cached(s); st != keycache.Valid {
				still = append(still, s)
			}
		}
		missing = still
	}

	revoked, err := revoke(ctx, other, conn)
	if err != nil || revoked != n {
		t.Fatalf("revoked %d keys, %v; want %d", revoked, err, n)
	}
	revokedAt := time.Now()
	// Invalidation is per account: watch one key of each account (key i
	// belongs to account i%accounts), then check them all.
	accepted := func(keys []string) int {
		still := 0
		for _, s := range keys {
			if _, st := c.Cached(s); st == keycache.Valid {
				still++
			}
		}
		return still
	}
	var took time.Duration
	for {
		still := accepted(secrets[:accounts])
		took = time.Since(revokedAt)
		if still == 0 {
			break
		}
		if took > 5*time.Second {
			t.Fatalf("keys of %d of %d accounts still accepted from A's cache %v after the revocation", still, accounts, took)
		}
		time.Sleep(time.Millisecond)
	}
	if still := accepted(secrets); still != 0 {
		t.Fatalf("%d of %d revoked keys still accepted from A's cache", still, n)
	}
	t.Logf("%d hot keys of %d accounts revoked in one transaction: none accepted by A %v after the transaction returned",
		n, accounts, took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("the bulk revocation took %v to reach A, want under 1s", took)
	}
	for _, s := range secrets[:300] {
		wantInvalid(t, "bulk-revoked key", g.do("GET", "/v1/monitors", "X-API-Key", s))
	}
}

// TestScaleOutRolledBackRevocationLeavesKeyValid: a revocation whose
// transaction rolls back tells A nothing (its cache is not even
// disturbed) and the key keeps working; the next real revocation, whose
// change comes after the unused sequence number, still reaches A within a
// second.
func TestScaleOutRolledBackRevocationLeavesKeyValid(t *testing.T) {
	dsn := pgtest.DSN(t)
	g := startGateway(t, "storage postgres "+dsn, "policy statuspage\n\t\tfailure_limit off")
	other := otherInstance(t, dsn)
	g.setPlan("acct_rb", "pro")
	k := g.createKey("acct_rb")
	conn := adminConn(t, dsn)
	waitListening(t, conn)
	wantStatus(t, "warm", g.do("GET", "/v1/monitors", "X-API-Key", k.Secret), 200)
	c := spkCache(t)
	c.Wait()
	lookups := c.Stats().Lookups

	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE api_keys SET revoked_at = now() WHERE id = $1`, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO changes (kind, account_id, key_hash, at)
		SELECT 'revoked', account_id, key_hash, now() FROM api_keys WHERE id = $1`, k.ID); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		wantStatus(t, "after a rolled-back revocation", g.do("GET", "/v1/monitors", "X-API-Key", k.Secret), 200)
	}
	if got := c.Stats().Lookups; got != lookups {
		t.Errorf("a rolled-back revocation cost A %d store lookups: something was invalidated", got-lookups)
	}

	if _, err := other.Revoke(ctx, keys.Actor{Name: "test", Source: keys.SourceCLI}, "", k.ID); err != nil {
		t.Fatal(err)
	}
	took := g.untilStatus(k.Secret, 401, time.Now(), 5*time.Second, 200)
	if took > time.Second {
		t.Errorf("the revocation after a rolled-back one took %v", took)
	}
}

// TestScaleOutRevokeAccountThroughAdminAPI: DELETE
// /spk/accounts/{account}/keys revokes every key of the account and no
// other.
func TestScaleOutRevokeAccountThroughAdminAPI(t *testing.T) {
	g := startGateway(t, "storage postgres "+pgtest.DSN(t), "policy statuspage\n\t\tfailure_limit off")
	g.setPlan("acct_x", "pro")
	g.setPlan("acct_y", "pro")
	x1, x2, y := g.createKey("acct_x"), g.createKey("acct_x"), g.createKey("acct_y")
	for _, k := range []keys.Created{x1, x2, y} {
		wantStatus(t, "warm", g.do("GET", "/v1/monitors", "X-API-Key", k.Secret), 200)
	}
	var out keys.RevokedResponse
	if st := g.adminJSON("DELETE", "/spk/accounts/acct_x/keys", nil, &out); st != 200 || out.Revoked != 2 {
		t.Fatalf("DELETE account keys: %d %+v", st, out)
	}
	wantInvalid(t, "x1", g.do("GET", "/v1/monitors", "X-API-Key", x1.Secret))
	wantInvalid(t, "x2", g.do("GET", "/v1/monitors", "X-API-Key", x2.Secret))
	wantStatus(t, "another account's key", g.do("GET", "/v1/monitors", "X-API-Key", y.Secret), 200)
	if st := g.adminJSON("DELETE", "/spk/accounts/acct_x/keys", nil, &out); st != 200 || out.Revoked != 0 {
		t.Fatalf("second DELETE: %d %+v", st, out)
	}
	var list keys.ListResponse
	if st := g.adminJSON("GET", "/spk/accounts/acct_x/keys", nil, &list); st != 200 || len(list.Keys) != 0 {
		t.Fatalf("list after revoking all: %d, %d keys", st, len(list.Keys))
	}
}
