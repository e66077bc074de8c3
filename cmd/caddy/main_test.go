package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spkgate/spkgate/internal/caddybin"
	"github.com/spkgate/spkgate/internal/testkit"
)

// These tests build the real binary and drive it as a user would: the
// README's run command with Caddyfile.example, the "caddy spk" command,
// and the admin API.

var binary string

func TestMain(m *testing.M) { caddybin.Main(&binary, m.Run) }

// env is an isolated environment: its own data directory and ports.
type env struct {
	t        *testing.T
	vars     []string
	dataHome string
	gateway  string
	admin    string
	upstream string
	console  string
}

func newEnv(t *testing.T) *env {
	home := t.TempDir()
	e := &env{t: t, dataHome: filepath.Join(home, "data")}
	gw, up, ad, co := testkit.FreePort(t), testkit.FreePort(t), testkit.FreePort(t), testkit.FreePort(t)
	e.console = fmt.Sprintf("http://localhost:%d", co)
	e.gateway = fmt.Sprintf("http://localhost:%d", gw)
	e.upstream = fmt.Sprintf("http://localhost:%d", up)
	e.admin = fmt.Sprintf("http://localhost:%d", ad)
	e.vars = append(os.Environ(),
		"HOME="+home,
		"XDG_DATA_HOME="+e.dataHome,
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"),
		fmt.Sprintf("SPK_GATEWAY_PORT=%d", gw),
		fmt.Sprintf("SPK_UPSTREAM_PORT=%d", up),
		fmt.Sprintf("SPK_ADMIN=localhost:%d", ad),
		fmt.Sprintf("SPK_CONSOLE_PORT=%d", co),
	)
	return e
}

// runExample runs the binary with Caddyfile.example, as the README says,
// until the test ends.
func (e *env) runExample() *caddybin.Process {
	cmd := exec.Command(binary, "run", "--config", "Caddyfile.example")
	cmd.Dir = "../.."
	cmd.Env = e.vars
	return caddybin.Start(e.t, "caddy", cmd)
}

// caddy runs the binary to completion and returns its stdout.
func (e *env) caddy(args ...string) (string, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = "../.." // where Caddyfile.example is
	cmd.Env = e.vars
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("caddy %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), err
}

func TestListModulesMatchesXcaddyJSON(t *testing.T) {
	e := newEnv(t)
	out, err := e.caddy("list-modules", "--skip-standard")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.Contains(l, " ") && !strings.HasPrefix(l, "Standard") {
			got = append(got, l)
		}
	}
	var rec struct {
		Caddy   string   `json:"caddy_version"`
		Modules []string `json:"modules"`
	}
	b, err := os.ReadFile("../../xcaddy.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	sort.Strings(rec.Modules)
	if strings.Join(got, " ") != strings.Join(rec.Modules, " ") {
		t.Fatalf("non-standard modules of the build:\n%s\nxcaddy.json lists:\n%s", strings.Join(got, "\n"), strings.Join(rec.Modules, "\n"))
	}
	ver, err := e.caddy("version")
	if err != nil || !strings.HasPrefix(ver, rec.Caddy) {
		t.Fatalf("caddy version %q, xcaddy.json says %s (%v)", ver, rec.Caddy, err)
	}
}

func TestCommandLineManagesKeys(t *testing.T) {
	e := newEnv(t)
	cfg := []string{"--config", "Caddyfile.example"}
	if _, err := e.caddy(append([]string{"spk", "plan", "--account", "acct_cli", "pro"}, cfg...)...); err != nil {
		t.Fatal(err)
	}
	out, err := e.caddy(append([]string{"spk", "create", "--account", "acct_cli", "--name", "ci-pipeline", "--scope", "monitors:read,incidents:read", "--expires-in", "720h"}, cfg...)...)
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		ID, Key, Name, Prefix string
		Scopes                []string
		ExpiresAt             *time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || !strings.HasPrefix(created.Key, "spk_") || created.ExpiresAt == nil || len(created.Scopes) != 2 {
		t.Fatalf("create printed %s (%v)", out, err)
	}
	out, err = e.caddy(append([]string{"spk", "list", "--account", "acct_cli"}, cfg...)...)
	if err != nil || !strings.Contains(out, created.ID) || strings.Contains(out, created.Key) {
		t.Fatalf("list: %v\n%s", err, out)
	}
	if _, err := e.caddy(append([]string{"spk", "create", "--account", "acct_cli", "--name", "", "--scope", "x"}, cfg...)...); err == nil || !strings.Contains(err.Error(), "name") {
		t.Fatalf("bad create: %v", err)
	}
	if _, err := e.caddy(append([]string{"spk", "revoke", created.ID}, cfg...)...); err != nil {
		t.Fatal(err)
	}
	if _, err := e.caddy(append([]string{"spk", "revoke", created.ID}, cfg...)...); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("second revoke: %v", err)
	}
	// The key store is where Caddyfile.example says: under the data dir.
	if _, err := os.Stat(filepath.Join(e.dataHome, "caddy", "spk", "spk.db")); err != nil {
		t.Fatalf("default store location: %v", err)
	}
}

// TestReadmeTour runs the README's first command and its quick tour.
func TestReadmeTour(t *testing.T) {
	e := newEnv(t)
	logs := e.runExample().Logs
	client := &http.Client{Timeout: 5 * time.Second}
	call := func(method, url, body string, hdr ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, _ := call("GET", e.gateway+"/v1/monitors", ""); st == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("gateway did not come up")
		}
		time.Sleep(100 * time.Millisecond)
	}

	if st, body := call("PUT", e.admin+"/spk/accounts/acct_demo/plan", `{"plan":"pro"}`); st != 204 {
		t.Fatalf("set plan: %d %s", st, body)
	}
	st, body := call("POST", e.admin+"/spk/accounts/acct_demo/keys", `{"name":"readme-tour","scopes":["monitors:read"]}`)
	var k struct{ ID, Key string }
	if st != 201 || json.Unmarshal([]byte(body), &k) != nil || k.Key == "" {
		t.Fatalf("create: %d %s", st, body)
	}
	st, body = call("GET", e.gateway+"/v1/monitors", "", "Authorization", "Bearer "+k.Key)
	for _, want := range []string{"GET /v1/monitors", "X-Spk-Account-Id: acct_demo", "X-Spk-Key-Id: " + k.ID, "X-Spk-Scopes: monitors:read", "X-Spk-Plan: pro", "Authorization: \n", "X-Api-Key: \n"} {
		if st != 200 || !strings.Contains(body, want) {
			t.Fatalf("call: %d, %q lacks %q", st, body, want)
		}
	}
	if st, body = call("POST", e.gateway+"/v1/monitors", "{}", "X-API-Key", k.Key); st != 403 || !strings.Contains(body, `"required_scope":"monitors:write"`) {
		t.Fatalf("write with read key: %d %s", st, body)
	}
	// Revoked from the command line while the server runs: the server's
	// cache learns it from the store's change log.
	if _, err := e.caddy("spk", "revoke", "--config", "Caddyfile.example", k.ID); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		st, body = call("GET", e.gateway+"/v1/monitors", "", "X-API-Key", k.Key)
		if st == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked key still answered %d after 5s", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(logs.String(), k.Key) || strings.Contains(logs.String(), k.Key[4:]) {
		t.Fatal("the key appeared in Caddy's output")
	}
	// Caddyfile.example is clean: no server of it logs keys.
	if strings.Contains(logs.String(), "access log would record API keys") {
		t.Fatalf("Caddyfile.example draws the access-log warning:\n%s", logs.String())
	}
}
