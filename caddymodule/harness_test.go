package caddymodule_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/spkgate/spkgate/caddymodule"
	"github.com/spkgate/spkgate/internal/pgtest"
	"github.com/spkgate/spkgate/internal/testkit"
	"github.com/spkgate/spkgate/keys"
)

func TestMain(m *testing.M) {
	caddymodule.SetKeysClock(func() time.Time { return time.Now().Add(time.Duration(keysClockOffset.Load())) })
	pgtest.Main(m)
}

// keysClockOffset is how far the clock of the key caches and keys
// services of these tests runs ahead of the real time: skipAhead moves it,
// so that a test steps over a key's expiry instead of sleeping until it.
// It is 0 outside a test that called skipAhead.
var keysClockOffset atomic.Int64

// skipAhead moves the gateway's key clock d forward until the test ends:
// keys expire as if d had passed. Only the key cache and keys service see
// it (not the limiter, the change-log poller or Caddy). Keep d under the
// cache's 5 s trust bound: PostgreSQL's heartbeats carry the real time.
func (g *gateway) skipAhead(d time.Duration) {
	keysClockOffset.Add(int64(d))
	g.t.Cleanup(func() { keysClockOffset.Store(0) })
}

// seen is what the upstream received.
type seen struct {
	Method     string
	RequestURI string
	Path       string
	Header     http.Header
	Body       string
}

// upstream is a real HTTP server standing in for the status-page API.
type upstream struct {
	addr  string
	count atomic.Int64
	mu    sync.Mutex
	last  seen
}

func startUpstream(t testing.TB) *upstream {
	t.Helper()
	u := &upstream{}
	u.addr = testkit.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.last = seen{Method: r.Method, RequestURI: r.RequestURI, Path: r.URL.Path, Header: r.Header.Clone(), Body: string(body)}
		u.mu.Unlock()
		u.count.Add(1)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "upstream saw %s %s", r.Method, r.RequestURI)
	}))
	return u
}

func (u *upstream) lastSeen() seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last
}

// gateway is a real Caddy, loaded in this process from a Caddyfile.
type gateway struct {
	t        testing.TB
	base     string // http://127.0.0.1:port
	admin    string // http://127.0.0.1:port
	upstream *upstream
	client   *http.Client
	caddyCfg string
}

// startGateway loads a Caddy whose site runs spk_auth with the given block
// in front of a fresh upstream. storage is the line for the spk option
// (e.g. "storage sqlite /tmp/x.db").
func startGateway(t testing.TB, storage, authBlock string) *gateway {
	t.Helper()
	return startSite(t, storage, "spk_auth {\n\t\t"+authBlock+"\n\t}\n\treverse_proxy "+upstreamAddr)
}

// upstreamAddr in a site body given to startSite stands for the address
// of the test's upstream.
const upstreamAddr = "{test_upstream}"

// startSite loads a Caddy with the spk app on storage (default: a SQLite
// file of the test) and one site whose directives are body.
func startSite(t testing.TB, storage, body string) *gateway {
	t.Helper()
	if storage == "" {
		storage = "storage sqlite " + filepath.Join(t.TempDir(), "spk.db")
	}
	up := startUpstream(t)
	port, adminPort := testkit.FreePort(t), testkit.FreePort(t)
	g := &gateway{
		t:        t,
		base:     fmt.Sprintf("http://127.0.0.1:%d", port),
		admin:    fmt.Sprintf("http://127.0.0.1:%d", adminPort),
		upstream: up,
		client:   &http.Client{Timeout: 10 * time.Second},
	}
	g.caddyCfg = fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	storage file_system %s
	spk {
		%s
	}
}
http://127.0.0.1:%d {
	%s
}
`, adminPort, t.TempDir(), storage, port, strings.ReplaceAll(body, upstreamAddr, up.addr))
	g.load()
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Logf("stopping caddy: %v", err)
		}
	})
	return g
}

func (g *gateway) load() {
	g.t.Helper()
	cfg, warn, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(g.caddyCfg), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		g.t.Fatalf("adapting: %v", err)
	}
	for _, w := range warn {
		g.t.Logf("adapt warning: %s", w.String())
	}
	if err := caddy.Load(cfg, true); err != nil {
		g.t.Fatalf("loading caddy: %v", err)
	}
	// A reload shuts the old servers down, closing their idle
	// connections: a request sent on one of them would fail with EOF.
	g.client.CloseIdleConnections()
}

type result struct {
	status int
	header http.Header
	body   string
}

// do sends a request to the gateway; hdr is name, value pairs (a name may
// repeat).
func (g *gateway) do(method, uri string, hdr ...string) result {
	g.t.Helper()
	req, err := http.NewRequest(method, g.base+uri, nil)
	if err != nil {
		g.t.Fatal(err)
	}
	return g.send(req, hdr...)
}

func (g *gateway) send(req *http.Request, hdr ...string) result {
	g.t.Helper()
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := g.client.Do(req)
	if err != nil && (req.Method == "GET" || req.Method == "HEAD") && req.Body == nil &&
		(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		// Right after a reload, the old server, shutting down on the
		// listener it shares with the new one, can accept a connection
		// and close it unanswered; a client retries such a request.
		resp, err = g.client.Do(req)
	}
	if err != nil {
		g.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{resp.StatusCode, resp.Header, string(b)}
}

// rawRequest sends bytes as they are, for request targets a client library
// would clean up, and returns the status code.
func (g *gateway) rawRequest(requestLine string, hdr ...string) int {
	g.t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(g.base, "http://"), 5*time.Second)
	if err != nil {
		g.t.Fatal(err)
	}
	defer conn.Close()
	var b bytes.Buffer
	b.WriteString(requestLine + "\r\nHost: " + strings.TrimPrefix(g.base, "http://") + "\r\nConnection: close\r\n")
	for i := 0; i+1 < len(hdr); i += 2 {
		b.WriteString(hdr[i] + ": " + hdr[i+1] + "\r\n")
	}
	b.WriteString("\r\n")
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(b.Bytes()); err != nil {
		g.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		g.t.Fatalf("%s: %v", requestLine, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// adminJSON calls the admin API and decodes its JSON answer into out.
func (g *gateway) adminJSON(method, path string, body any, out any) int {
	g.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, g.admin+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.client.Do(req)
	if err != nil {
		g.t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			g.t.Fatalf("admin %s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

// setPlan records the account's plan through the admin API.
func (g *gateway) setPlan(account, plan string) {
	g.t.Helper()
	if st := g.adminJSON("PUT", "/spk/accounts/"+account+"/plan", keys.PlanRequest{Plan: plan}, nil); st != http.StatusNoContent {
		g.t.Fatalf("set plan: status %d", st)
	}
}

// createKey makes a key through the admin API and returns it.
func (g *gateway) createKey(account string, scopes ...string) keys.Created {
	g.t.Helper()
	var k keys.Created
	if scopes == nil {
		scopes = []string{}
	}
	st := g.adminJSON("POST", "/spk/accounts/"+account+"/keys", keys.CreateRequest{Name: "test " + account, Scopes: scopes}, &k)
	if st != http.StatusCreated || !strings.HasPrefix(k.Secret, "spk_") {
		g.t.Fatalf("create key: status %d, %+v", st, k.Key)
	}
	return k
}
