package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"flag"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/spkgate/spkgate/internal/testkit"
)

var updateScreenshot = flag.Bool("update", false, "rewrite docs/console.png with the screenshot that TestConsoleInBrowser takes")

// Demo accounts of Caddyfile.example.
const (
	demoPro, demoProPassword   = "demo-pro", "spk-demo-pro"
	demoFree, demoFreePassword = "demo-free", "spk-demo-free"
)

// findChromium returns the path of a Chromium or Chrome, or "".
// SPK_CHROMIUM names one explicitly.
func findChromium() string {
	if p := os.Getenv("SPK_CHROMIUM"); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// defaultPorts moves e to Caddyfile.example's default ports where they are
// free, so that the screenshot for the docs shows the URLs a reader gets.
func (e *env) defaultPorts() {
	free := func(port string) bool {
		ln, err := net.Listen("tcp", "localhost:"+port)
		if err != nil {
			return false
		}
		ln.Close()
		return true
	}
	if !free("8080") || !free("8081") || !free("8082") {
		e.t.Log("default ports busy: the screenshot shows other ports")
		return
	}
	// The last of duplicate variables wins.
	e.vars = append(e.vars, "SPK_GATEWAY_PORT=8080", "SPK_UPSTREAM_PORT=8081", "SPK_CONSOLE_PORT=8082")
	e.gateway, e.upstream, e.console = "http://localhost:8080", "http://localhost:8081", "http://localhost:8082"
}

// startCaddy runs the binary with Caddyfile.example until the test ends,
// and waits until the console answers (401: basic_auth wants a login).
func (e *env) startCaddy() *testkit.SyncBuffer {
	t := e.t
	t.Helper()
	logs := e.runExample().Logs
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(e.console + "/user/api-console")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return logs
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the console did not come up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestConsoleInBrowser is the console as a person uses it: headless
// Chromium against the real binary running Caddyfile.example. It logs in,
// creates a key with two scopes, reads it from the page once, uses it
// through spk_auth, revokes it through the confirmation page with
// JavaScript off, and sees that the free account gets the upgrade prompt.
func TestConsoleInBrowser(t *testing.T) {
	chromium := findChromium()
	if chromium == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no Chromium found (/usr/bin/chromium): CI must run the console's browser test; install Debian's chromium package")
		}
		t.Skip("no Chromium found (/usr/bin/chromium, or SPK_CHROMIUM): install Debian's chromium package to run the console's browser test")
	}
	began := time.Now()
	e := newEnv(t)
	if *updateScreenshot {
		e.defaultPorts()
	}
	logs := e.startCaddy()
	home := e.console + "/user/api-console"
	shots := os.Getenv("SPK_SCREENSHOT_DIR") // optional: keep every screenshot

	var browserLog testkit.SyncBuffer
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		// The network here is closed: no QUIC probes, no updates, no sync.
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.CombinedOutput(&browserLog),
	)
	defer cancelAlloc()
	ctx, cancel := context.WithTimeout(allocCtx, 3*time.Minute)
	defer cancel()
	bctx, cancelBrowser := chromedp.NewContext(ctx)
	defer cancelBrowser()
	if err := chromedp.Do(bctx); err != nil { // starts the browser that the tabs share
		t.Fatalf("starting the browser (%s): %v", chromium, err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("browser output:\n%s", browserLog.String())
		}
	}()

	// A tab per account: the dashboard login is basic_auth, sent by the
	// browser on every request of the tab.
	tab := func(user, password string) context.Context {
		t.Helper()
		tctx, cancel := chromedp.NewContext(bctx)
		t.Cleanup(cancel)
		if err := chromedp.Do(tctx); err != nil {
			t.Fatalf("opening a tab: %v", err)
		}
		if _, err := chromedp.Call(tctx, network.Enable, network.EnableParams{}); err != nil {
			t.Fatal(err)
		}
		auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
		if _, err := chromedp.Call(tctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}}); err != nil {
			t.Fatal(err)
		}
		return tctx
	}
	do := func(ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// load runs the actions and waits for the page they load.
	load := func(ctx context.Context, what string, status int64, actions ...chromedp.Action[chromedp.Void]) *network.Response {
		t.Helper()
		resp, err := chromedp.RunResponse(ctx, actions...)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if resp.Status != status {
			t.Fatalf("%s: status %d, want %d", what, resp.Status, status)
		}
		return resp
	}
	run := func(ctx context.Context, what string, a chromedp.Action[string]) string {
		t.Helper()
		v, err := chromedp.Run(ctx, a)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	text := func(ctx context.Context, css string) string {
		t.Helper()
		return run(ctx, "text of "+css, chromedp.Text(chromedp.CSS(css)))
	}
	wantText := func(ctx context.Context, css string, want ...string) {
		t.Helper()
		got := text(ctx, css)
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Fatalf("%s lacks %q:\n%s", css, w, got)
			}
		}
	}
	screenshot := func(ctx context.Context, name string) []byte {
		t.Helper()
		b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if _, err := png.Decode(bytes.NewReader(b)); err != nil {
			t.Fatalf("screenshot %s is not a PNG: %v", name, err)
		}
		if shots != "" {
			if err := os.WriteFile(filepath.Join(shots, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return b
	}
	api := func(method, path, key string) int {
		t.Helper()
		req, _ := http.NewRequest(method, e.gateway+path, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}

	// demo-pro logs in and sees the empty state, which says what to do.
	pro := tab(demoPro, demoProPassword)
	load(pro, "open the console", 200, chromedp.Navigate(home))
	wantText(pro, "main", "No API keys yet", "Create your first API key", e.gateway+"/v1", "monitors:write")
	wantText(pro, ".who", demoPro, "Pro plan")
	screenshot(pro, "empty.png")

	// Create: the name is checked by the server, next to the field, and
	// what was typed stays.
	load(pro, "open the form", 200, chromedp.Click(chromedp.CSS(".empty a.button")))
	long := strings.Repeat("n", 101)
	do(pro, "fill the form",
		chromedp.SetValue(chromedp.ID("name"), long),
		chromedp.Click(chromedp.ID("scope-monitors-read")),
		chromedp.Click(chromedp.ID("scope-incidents-read")),
		chromedp.Click(chromedp.ID("exp-90")),
	)
	load(pro, "submit a long name", 400, chromedp.Click(chromedp.CSS("form button[type=submit]")))
	wantText(pro, "#name-error", "101 characters long; at most 100")
	if v := run(pro, "typed name", chromedp.Value(chromedp.ID("name"))); v != long {
		t.Fatalf("the typed name was not kept: %q", v)
	}
	kept, err := chromedp.Run(pro, chromedp.Evaluate[bool](`["scope-monitors-read", "scope-incidents-read", "exp-90"].every(id => document.getElementById(id).checked) && !document.getElementById("scope-monitors-write").checked`))
	if err != nil || !kept {
		t.Fatalf("the picked scopes and expiry were not kept (%v)", err)
	}
	screenshot(pro, "form-error.png")

	do(pro, "correct the name", chromedp.SetValue(chromedp.ID("name"), "ci-pipeline"))
	resp := load(pro, "create the key", 200, chromedp.Click(chromedp.CSS("form button[type=submit]")))
	if resp.Headers["Cache-Control"] != "no-store" {
		t.Fatalf("the key page may be cached: %v", resp.Headers)
	}
	secret := run(pro, "read the key", chromedp.Value(chromedp.ID("secret")))
	if !strings.HasPrefix(secret, "spk_") || len(secret) != 40 {
		t.Fatalf("the page shows %q as the key", secret)
	}
	if loc := run(pro, "location", chromedp.Location()); strings.Contains(loc, secret[4:]) || !strings.HasSuffix(loc, "/user/api-console/new") {
		t.Fatalf("the key page is at %s", loc)
	}
	wantText(pro, "main", "shown only once", "ci-pipeline", "monitors:read", "incidents:read", "in 3 months")
	// JavaScript adds a Copy button that puts the key on the clipboard.
	for _, perm := range []string{"clipboard-write", "clipboard-read"} {
		if _, err := chromedp.CallBrowser(pro, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: perm}, Setting: browser.PermissionSettingGranted, Origin: e.console,
		}); err != nil {
			t.Fatal(err)
		}
	}
	copyButton := chromedp.CSS(`button[data-copy="secret"]`)
	do(pro, "copy", chromedp.WaitVisible(copyButton), chromedp.Click(copyButton),
		chromedp.WaitVisible(chromedp.Search(`//button[@data-copy="secret" and text()="Copied"]`)))
	if clip, err := chromedp.Run(pro, chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise)); err != nil || clip != secret {
		t.Fatalf("the clipboard holds %q (%v)", clip, err)
	}
	screenshot(pro, "key.png")

	// The key works through spk_auth, within its scopes only.
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/v1/monitors", 200},
		{"GET", "/v1/incidents/7", 200},
		{"POST", "/v1/incidents", 403},
		{"GET", "/v1/analytics", 403},
	} {
		if got := api(c.method, c.path, secret); got != c.status {
			t.Fatalf("%s %s with the new key: %d, want %d", c.method, c.path, got, c.status)
		}
	}

	// Back on the list the key shows, but never its secret again.
	load(pro, "back to the list", 200, chromedp.Click(chromedp.Search(`//a[contains(., "Done, back to API keys")]`)))
	page := run(pro, "list html", chromedp.OuterHTML(chromedp.CSS("html")))
	if !strings.Contains(page, "ci-pipeline") || strings.Contains(page, secret[10:]) {
		t.Fatal("the list lacks the key, or shows its secret")
	}
	// A second key, full access, for the picture.
	load(pro, "open the form again", 200, chromedp.Click(chromedp.CSS(".page-head a.button")))
	do(pro, "name it", chromedp.SetValue(chromedp.ID("name"), "zapier-integration"))
	load(pro, "create a full-access key", 200, chromedp.Click(chromedp.CSS("form button[type=submit]")))
	load(pro, "list two keys", 200, chromedp.Navigate(home))
	if *updateScreenshot {
		// For the picture: wait for the batched last-used time (written
		// every 10s) of the key that was used.
		lastUsed := chromedp.CSS(`tbody tr:last-child td[data-label="Last used"]`)
		for deadline := time.Now().Add(15 * time.Second); run(pro, "last used", chromedp.Text(lastUsed)) == "Never" && time.Now().Before(deadline); {
			time.Sleep(time.Second)
			load(pro, "reload", 200, chromedp.Reload())
		}
	}
	wantText(pro, "table.keys", "ci-pipeline", "zapier-integration", "Full access", "monitors:read", "in 3 months", "Never")
	shot := screenshot(pro, "console.png")
	if *updateScreenshot {
		if err := os.WriteFile("../../docs/console.png", shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	do(pro, "phone size", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)))
	screenshot(pro, "console-phone.png")
	do(pro, "desktop size", chromedp.EmulateViewport(1280, 900))

	// Revoke through the confirmation page, with JavaScript off.
	if _, err := chromedp.Call(pro, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatal(err)
	}
	load(pro, "reload without javascript", 200, chromedp.Navigate(home))
	load(pro, "ask to revoke", 200, chromedp.Click(chromedp.Search(`//tr[.//a[@class="key-name" and text()="ci-pipeline"]]//a[contains(@class, "danger-ghost")]`)))
	wantText(pro, "h1", "Revoke “ci-pipeline”?")
	if got := api("GET", "/v1/monitors", secret); got != 200 {
		t.Fatalf("the confirmation page alone revoked the key: %d", got)
	}
	screenshot(pro, "revoke.png")
	load(pro, "confirm", 200, chromedp.Click(chromedp.CSS("button.danger")))
	wantText(pro, ".notice.success", "“ci-pipeline” was revoked", "401")
	wantText(pro, "table.keys", "zapier-integration")
	if got := api("GET", "/v1/monitors", secret); got != 401 {
		t.Fatalf("the revoked key got %d, want 401", got)
	}

	// demo-free sees the upgrade prompt, which leads to the billing page.
	free := tab(demoFree, demoFreePassword)
	load(free, "free account", 403, chromedp.Navigate(home))
	wantText(free, "main", "API access needs a Pro plan", "Free plan", "Upgrade your plan")
	if strings.Contains(text(free, "main"), "zapier-integration") {
		t.Fatal("the free account sees another account's key")
	}
	screenshot(free, "upgrade.png")
	load(free, "follow the upgrade link", 200, chromedp.Click(chromedp.Search(`//a[contains(., "Upgrade your plan")]`)))
	wantText(free, "body", "billing page")

	if strings.Contains(logs.String(), secret[4:]) {
		t.Fatal("the key appeared in Caddy's output")
	}
	t.Logf("browser test took %s", time.Since(began).Round(time.Millisecond))
}
