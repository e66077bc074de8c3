package caddymodule_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/internal/pgtest"
	"github.com/spkgate/spkgate/internal/testkit"
	"github.com/spkgate/spkgate/keys"
)

// readmeLogFilter is the log filter README.md (Keys, "Logs") and
// Caddyfile.example tell operators to put on Caddy's default log and on
// every site's own log: Caddy writes a copy of the request taken before
// any handler runs with every handler error and in access logs, and
// redacts Authorization there, not X-Api-Key.
const readmeLogFilter = `format filter {
	wrap json
	request>headers>X-Api-Key delete
	request>uri regexp spk_[0-9A-Za-z]{36} spk_REDACTED
}`

// TestSecurityNoSecretsAtRestOrInLogs runs a Caddy that logs at debug
// level to a file and writes an access log, both with the README's filter, drives a representative mix of requests with
// several keys (valid, scoped, revoked, expired, unknown, malformed, keys
// in URLs, an upstream that is down), and then reads every log line,
// /metrics, the database files or tables: no key secret, nor its random
// part, may appear anywhere.
func TestSecurityNoSecretsAtRestOrInLogs(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testNoSecrets(t, "") })
	t.Run("postgres", func(t *testing.T) { testNoSecrets(t, pgtest.DSN(t)) })
}

func testNoSecrets(t *testing.T, dsn string) {
	dir := t.TempDir()
	debugLog, accessLog := filepath.Join(dir, "caddy.log"), filepath.Join(dir, "access.log")
	storage := ""
	if dsn != "" {
		storage = "storage postgres " + dsn
	}
	g := startSecGateway(t, secOptions{
		global:  "debug\nlog {\noutput file " + debugLog + "\nlevel DEBUG\n" + readmeLogFilter + "\n}",
		storage: storage,
		site: "log {\noutput file " + accessLog + "\n" + readmeLogFilter + "\n}\n" +
			"handle /v1/incidents/down* {\nreverse_proxy 127.0.0.1:" + fmt.Sprint(closedPort(t)) + "\n}",
		auth: "policy statuspage\nfailure_limit 1000",
	})
	g.setPlan("acct_s1", "pro")
	g.setPlan("acct_s2", "free")
	full := g.createKey("acct_s1")
	scoped := g.createKey("acct_s1", "monitors:read")
	revoked := g.createKey("acct_s1", "incidents:write")
	noPlan := g.createKey("acct_s2")
	soon := time.Now().Add(time.Second)
	expired := g.createKeyWith("acct_s1", keys.CreateRequest{Name: "expiring", ExpiresAt: &soon})
	unknown := mustGenerate(t).Secret
	secrets := []string{full.Secret, scoped.Secret, revoked.Secret, noPlan.Secret, expired.Secret, unknown}

	var list keys.ListResponse
	if st := g.adminJSON("GET", "/spk/accounts/acct_s1/keys", nil, &list); st != 200 || len(list.Keys) != 4 {
		t.Fatalf("list keys: %d, %d keys", st, len(list.Keys))
	}
	for _, k := range []string{full.Secret, scoped.Secret, revoked.Secret, expired.Secret} {
		wantStatus(t, "valid", g.do("GET", "/v1/monitors", "X-API-Key", k), map[bool]int{true: 403, false: 200}[k == revoked.Secret])
	}
	g.revoke(revoked.ID)
	g.skipAhead(time.Until(soon) + 50*time.Millisecond)

	type req struct {
		method, target string
		hdr            []string
		status         int
	}
	var reqs []req
	for _, k := range secrets {
		reqs = append(reqs,
			req{"GET", "/v1/monitors/1", []string{"X-API-Key", k}, 0},
			req{"POST", "/v1/incidents", []string{"Authorization", "Bearer " + k}, 0},
			req{"DELETE", "/v1/monitors/1?page=2", []string{"X-API-Key", k, "Authorization", "Bearer " + k}, 0},
			req{"GET", "/v1/monitors?api_key=" + k, nil, 400},
			req{"GET", "/v1/monitors/" + k, []string{"X-API-Key", k}, 400},
			req{"GET", "/v1/incidents/down", []string{"X-API-Key", k}, 0},
			req{"GET", "/v1/monitors", []string{"X-API-Key", withBadChecksum(k)}, 401},
			req{"GET", "/v1/monitors", []string{"X-API-Key", k, "X-API-Key", k}, 401},
			req{"GET", "/v1/monitors", []string{"X-API-Key", k, "Authorization", "Bearer " + unknown}, 401},
			req{"GET", "/v1/monitors/%2e%2e/x", []string{"X-API-Key", k}, 400},
			req{"GET", "/v1/monitors", []string{"Cookie", "k=" + k, "X-API-Key", k}, 0},
		)
	}
	statuses := map[int]int{}
	for _, rq := range reqs {
		r := g.do(rq.method, rq.target, rq.hdr...)
		statuses[r.status]++
		if rq.status != 0 && r.status != rq.status {
			t.Errorf("%s %s: %d, want %d", rq.method, rq.target, r.status, rq.status)
		}
	}
	// The key of the admin API's answer, the console's JSON shape.
	g.adminJSON("GET", "/spk/accounts/acct_s1/keys", nil, &list)
	t.Logf("%d requests, statuses %v", len(reqs), statuses)
	for _, st := range []int{200, 400, 401, 403, 502} {
		if statuses[st] == 0 {
			t.Errorf("no request got %d: the mix is not representative", st)
		}
	}

	// Everything that could keep a secret.
	places := map[string][]byte{}
	resp, err := g.client.Get(g.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	places["/metrics"], _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(places["/metrics"]), "spk_store_lookups_total") {
		t.Fatal("/metrics lacks the spk counters")
	}
	// Stop Caddy so that logs are flushed and the store is closed (the
	// SQLite WAL is read below as it was left, before a checkpoint
	// removes it on close: copy it first).
	if g.dbPath != "" {
		for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
			if b, err := os.ReadFile(g.dbPath + suffix); err == nil {
				places["sqlite"+suffix+" (open)"] = b
			}
		}
	}
	g.client.CloseIdleConnections()
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{debugLog, accessLog} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		places[filepath.Base(f)] = b
	}
	if n := strings.Count(string(places["access.log"]), "\n"); n < len(reqs) {
		t.Errorf("the access log has %d lines for %d requests", n, len(reqs))
	}
	// Debug lines of spk_auth and reverse_proxy, and the error line of the
	// failed upstream (with the request's headers as they arrived: without
	// the filter on the default log, X-Api-Key would be in it).
	for _, want := range []string{`"request refused"`, `"upstream roundtrip"`, `"logger":"http.log.error`, `"status":502`} {
		if !strings.Contains(string(places["caddy.log"]), want) {
			t.Errorf("the debug log lacks %s", want)
		}
	}
	if g.dbPath != "" {
		for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
			if b, err := os.ReadFile(g.dbPath + suffix); err == nil {
				places["sqlite"+suffix] = b
			}
		}
	} else {
		places["postgres"] = dumpPostgres(t, dsn)
	}

	for place, b := range places {
		for i, k := range secrets {
			for _, part := range []string{k, k[len(apikey.Marker) : len(apikey.Marker)+apikey.RandomLen], k[apikey.DisplayLen:]} {
				if strings.Contains(string(b), part) {
					t.Errorf("%s holds key %d (%s...)", place, i, apikey.Display(k))
				}
			}
		}
		t.Logf("%s: %d bytes, no key", place, len(b))
	}
}

// closedPort returns a loopback port that nothing listens on.
func closedPort(t *testing.T) int { return testkit.FreePort(t) }

// dumpPostgres returns every row of every table of the database as text.
func dumpPostgres(t *testing.T, dsn string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT quote_ident(table_schema) || '.' || quote_ident(table_name)
		FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(tables) == 0 {
		t.Fatalf("tables: %v %v", tables, err)
	}
	var b strings.Builder
	for _, tbl := range tables {
		rows, err := conn.Query(ctx, `SELECT t::text FROM `+tbl+` t`)
		if err != nil {
			t.Fatal(err)
		}
		vals, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s: %d rows\n%s\n", tbl, len(vals), strings.Join(vals, "\n"))
	}
	if !strings.Contains(b.String(), "spk_") {
		t.Fatalf("the dump has no display prefix at all:\n%s", b.String())
	}
	return []byte(b.String())
}
