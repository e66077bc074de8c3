package caddymodule_test

import (
	"context"
	"database/sql"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spkgate/spkgate/caddymodule"
	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore/sqlitestore"
)

// TestReloadKeepsFailureLimit: a client that used up its failure budget is
// still limited after a config reload (the limiter's state lives in a
// usage pool), and a reload that changes failure_limit applies the new
// limit to that state.
func TestReloadKeepsFailureLimit(t *testing.T) {
	clock := caddymodule.UseFailureClock(t)
	g := startGateway(t, "", "policy statuspage\n\t\tfailure_limit 5 10s")
	g.setPlan("acct_r", "pro")
	valid := g.createKey("acct_r")
	for range 5 {
		wantInvalid(t, "guess", g.do("GET", "/v1/monitors", "X-API-Key", mustGenerate(t).Secret))
	}
	wantStatus(t, "sixth guess", g.do("GET", "/v1/monitors", "X-API-Key", mustGenerate(t).Secret), http.StatusTooManyRequests)

	g.load() // the same config, reloaded (a deploy)
	wantStatus(t, "guess after a reload", g.do("GET", "/v1/monitors", "X-API-Key", mustGenerate(t).Secret), http.StatusTooManyRequests)
	wantStatus(t, "uncached valid key after a reload", g.do("GET", "/v1/monitors", "X-API-Key", valid.Secret), http.StatusTooManyRequests)

	// 100 tries per 10s: one back every 100ms, where the old limit gave
	// one every 2s.
	g.caddyCfg = strings.Replace(g.caddyCfg, "failure_limit 5 10s", "failure_limit 100 10s", 1)
	g.load()
	clock.Advance(150 * time.Millisecond)
	wantStatus(t, "valid key under the new limit", g.do("GET", "/v1/monitors", "X-API-Key", valid.Secret), http.StatusOK)
}

// TestReloadAppliesPollIntervalAndLogger: the store and cache outlive a
// reload, but a reload that changes change_poll_interval or the logs
// changes how they run: revocations made elsewhere (here, straight in the
// store, as "caddy spk revoke" does) arrive at the new interval, and the
// background work logs to the new configuration's logger.
func TestReloadAppliesPollIntervalAndLogger(t *testing.T) {
	dir := t.TempDir()
	logA, logB := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	logTo := func(path string) string { return "log spk_logs {\noutput file " + path + "\ninclude spk\n}" }
	g := startSecGateway(t, secOptions{global: logTo(logA), spk: "change_poll_interval 1m", auth: "policy statuspage"})
	g.setPlan("acct_p", "pro")
	k1, k2 := g.createKey("acct_p"), g.createKey("acct_p")
	wantStatus(t, "k1", g.do("GET", "/v1/monitors", "X-API-Key", k1.Secret), 200)

	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, g.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	elsewhere := &keys.Manager{Store: st}
	eventually401 := func(what, secret string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := g.do("GET", "/v1/monitors", "X-API-Key", secret)
			if r.status == 401 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: still %d 10s after its revocation (the change log is read every minute, as before the reload?)", what, r.status)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if _, err := elsewhere.Revoke(ctx, keys.Actor{Name: "test", Source: keys.SourceCLI}, "", k1.ID); err != nil {
		t.Fatal(err)
	}
	g.caddyCfg = strings.Replace(g.caddyCfg, "change_poll_interval 1m", "change_poll_interval 100ms", 1)
	g.caddyCfg = strings.Replace(g.caddyCfg, logA, logB, 1)
	g.load()
	eventually401("key revoked before the reload", k1.Secret)
	wantStatus(t, "k2", g.do("GET", "/v1/monitors", "X-API-Key", k2.Secret), 200)
	if _, err := elsewhere.Revoke(ctx, keys.Actor{Name: "test", Source: keys.SourceCLI}, "", k2.ID); err != nil {
		t.Fatal(err)
	}
	eventually401("key revoked after the reload", k2.Secret)

	// Make the change log unreadable: the failure goes to the new logs.
	db, err := sql.Open("sqlite", "file:"+g.dbPath+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`ALTER TABLE changes RENAME TO changes_away`); err != nil {
		t.Fatal(err)
	}
	defer db.Exec(`ALTER TABLE changes_away RENAME TO changes`)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(logB)
		if strings.Contains(string(b), "key store background work failed") {
			break
		}
		if time.Now().After(deadline) {
			a, _ := os.ReadFile(logA)
			t.Fatalf("the failure is not in the new configuration's log:\n%s\nold log:\n%s", b, a)
		}
	}
}
