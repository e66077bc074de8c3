package caddymodule_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spkgate/spkgate/caddymodule"
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
