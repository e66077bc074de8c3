package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image/png"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/spkgate/spkgate/internal/testkit"
)

// browserTab is a headless Chromium tab signed in to the console of e as
// an account of Caddyfile.example, with the helpers the browser tests use.
type browserTab struct {
	t      *testing.T
	ctx    context.Context
	login  network.Headers
	mu     sync.Mutex
	toSelf []string // every request the tab sent to the console: URL, headers, body
	origin string
}

func openBrowserTab(t *testing.T, e *env, user, password string) *browserTab {
	t.Helper()
	chromium := findChromium()
	if chromium == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no Chromium found (/usr/bin/chromium): CI must run the console's browser tests")
		}
		t.Skip("no Chromium found (/usr/bin/chromium, or SPK_CHROMIUM)")
	}
	var browserLog testkit.SyncBuffer
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900), chromedp.CombinedOutput(&browserLog),
	)
	t.Cleanup(cancelAlloc)
	ctx, cancel := context.WithTimeout(allocCtx, 3*time.Minute)
	t.Cleanup(cancel)
	bctx, cancelBrowser := chromedp.NewContext(ctx)
	t.Cleanup(cancelBrowser)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("browser output:\n%s", browserLog.String())
		}
	})
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting the browser (%s): %v", chromium, err)
	}
	b := &browserTab{t: t, ctx: bctx, origin: e.console,
		login: network.Headers{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))}}
	if err := chromedp.Listen(bctx, func(ev any) {
		if req, ok := ev.(*network.EventRequestWillBeSent); ok && strings.HasPrefix(req.Request.URL, b.origin) {
			h, _ := json.Marshal(req.Request.Headers)
			var body strings.Builder
			for _, e := range req.Request.PostDataEntries {
				body.Write(e.Bytes)
			}
			b.mu.Lock()
			b.toSelf = append(b.toSelf, req.Request.URL+" "+string(h)+" "+body.String())
			b.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(bctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	b.signIn(true)
	return b
}

// signIn sends the dashboard login (basic_auth) with every request of the
// tab, or stops sending it. The header would go with the try-it panel's
// requests to the API too, so it is off while those are sent.
func (b *browserTab) signIn(on bool) {
	b.t.Helper()
	h := network.Headers{}
	if on {
		h = b.login
	}
	if _, err := chromedp.Call(b.ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: h}); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browserTab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func (b *browserTab) load(what string, status int64, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	resp, err := chromedp.RunResponse(b.ctx, actions...)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	if resp.Status != status {
		b.t.Fatalf("%s: status %d, want %d", what, resp.Status, status)
	}
}

func (b *browserTab) text(css string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(css)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", css, err)
	}
	return v
}

func (b *browserTab) wantText(css string, want ...string) {
	b.t.Helper()
	got := b.text(css)
	for _, w := range want {
		if !strings.Contains(got, w) {
			b.t.Fatalf("%s lacks %q:\n%s", css, w, got)
		}
	}
}

// waitText waits until the element's text contains want.
func (b *browserTab) waitText(css, want string) {
	b.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(css), chromedp.AtLeast(0)))
		if err == nil && strings.Contains(v, want) {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s never said %q; it says %q (%v)", css, want, v, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// textContent returns the text of every node css matches, joined.
func (b *browserTab) textContent(css string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`[...document.querySelectorAll(`+strconv.Quote(css)+`)].map(e => e.textContent.replace(/\s+/g, " ")).join(" ")`))
	if err != nil {
		b.t.Fatalf("text of %s: %v", css, err)
	}
	return v
}

func (b *browserTab) eval(expr string) int {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](expr))
	if err != nil {
		b.t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func (b *browserTab) screenshot(path string) []byte {
	b.t.Helper()
	shot, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	if _, err := png.Decode(bytes.NewReader(shot)); err != nil {
		b.t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if path != "" {
		if err := os.WriteFile(path, shot, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
	return shot
}

// adminKey creates a key through the admin API of e.
func (e *env) adminKey(account, name string, scopes ...string) string {
	e.t.Helper()
	body, _ := json.Marshal(map[string]any{"name": name, "scopes": scopes})
	resp, err := http.Post(e.admin+"/spk/accounts/"+account+"/keys", "application/json", bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var k struct {
		Key string `json:"key"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&k); err != nil || resp.StatusCode != http.StatusCreated {
		e.t.Fatalf("creating a key: %d %v", resp.StatusCode, err)
	}
	return k.Key
}

// TestExplorerInBrowser explores the API of Caddyfile.example in headless
// Chromium against the real binary: the routes of the gateway's policy by
// resource, filtered as scopes are checked, presets, the create form's
// list of what the checked scopes open, and the try-it panel sending
// requests from the browser through the real gateway (with spk_auth's
// cors) and showing its 200 and 403. The key never reaches the console
// and is not stored in the browser.
func TestExplorerInBrowser(t *testing.T) {
	e := newEnv(t)
	if *updateScreenshot {
		e.defaultPorts()
	}
	logs := e.startCaddy()
	// The pro plan is recorded when demo-pro first opens the console; the
	// key is made for that account through the admin API.
	b := openBrowserTab(t, e, demoPro, demoProPassword)
	explore := e.console + "/user/api-console/explore"
	b.load("open the explorer", 200, chromedp.Navigate(explore))
	secret := e.adminKey(demoPro, "try-it", "monitors:read")

	b.wantText("main", "Explore the API", "Status pages", "Monitors", "Maintenances", "Analytics",
		"/v1/status_pages/*/uptime", "analytics:read", "List incidents", "Full access only", "All 21 routes")
	b.wantText(".tabs", "API keys", "Explore the API")
	visible := `[...document.querySelectorAll("#routes tr[data-route-scope]")].filter(r => r.offsetParent !== null).length`
	if n := b.eval(visible); n != 21 {
		t.Fatalf("%d routes shown, want 21", n)
	}

	// Checking a box filters at once; a preset only checks boxes.
	b.do("check monitors:read", chromedp.Click(chromedp.ID("filter-monitors-read")))
	b.wantText("[data-open-count]", "These scopes open 2 of 21 routes")
	if n := b.eval(visible); n != 2 {
		t.Fatalf("%d routes shown for monitors:read, want 2", n)
	}
	b.do("preset", chromedp.Click(chromedp.Search(`//a[@data-preset and text()="Incident responder"]`)))
	b.wantText("[data-open-count]", "These scopes open 6 of 21 routes")
	if n := b.eval(`document.querySelectorAll("#filter input[name=scopes]:checked").length`); n != 2 {
		t.Fatalf("the preset checked %d boxes, want 2", n)
	}
	if n := b.eval(`document.getElementById("filter-monitors-read").checked ? 1 : 0`); n != 0 {
		t.Fatal("the preset left monitors:read checked")
	}
	b.do("full access again", chromedp.Click(chromedp.ID("filter-incidents-write")), chromedp.Click(chromedp.ID("filter-status_pages-read")))
	b.wantText("[data-open-count]", "All 21 routes")

	// Try it: GET /v1/monitors with the key gets 200 through the gateway.
	b.do("pick GET /v1/monitors", chromedp.SetValue(chromedp.ID("try-route"), "4:GET"))
	b.do("paste the key", chromedp.SendKeys(chromedp.ID("try-key"), secret))
	b.signIn(false)
	b.do("send", chromedp.Click(chromedp.CSS("[data-try-send]")))
	b.waitText("[data-try-status]", "200")
	b.wantText("[data-try-response]", "status-page API stand-in", "GET /v1/monitors", "X-Spk-Scopes: monitors:read")

	// A path parameter, then a route the key's scope does not open: 403,
	// with the WWW-Authenticate header that says which scope is needed.
	b.do("pick GET /v1/monitors/*", chromedp.SetValue(chromedp.ID("try-route"), "6:GET"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("try-route").dispatchEvent(new Event("change"))`))
	b.do("fill the id", chromedp.SendKeys(chromedp.ID("try-rest"), "42/checks"))
	b.do("send", chromedp.Click(chromedp.CSS("[data-try-send]")))
	b.waitText("[data-try-response]", "GET /v1/monitors/42/checks")
	b.do("pick POST /v1/monitors", chromedp.SetValue(chromedp.ID("try-route"), "5:POST"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("try-route").dispatchEvent(new Event("change"))`))
	b.do("send", chromedp.Click(chromedp.CSS("[data-try-send]")))
	b.waitText("[data-try-status]", "403")
	b.wantText(".try-headers", "WWW-Authenticate", `error="insufficient_scope", scope="monitors:write"`)
	b.wantText("[data-try-response]", `"required_scope": "monitors:write"`)
	b.signIn(true)
	// For the picture: what an incident responder's key can call, next to
	// the answer to a call it cannot make.
	b.do("preset for the picture", chromedp.Click(chromedp.Search(`//a[@data-preset and text()="Incident responder"]`)))
	b.wantText("main", "Uptime of a status page")
	if *updateScreenshot {
		b.screenshot("../../docs/console-explorer.png")
	} else {
		b.screenshot("")
	}

	// The key went to the API only: never to the console, never into the
	// browser's storage or Caddy's output.
	b.mu.Lock()
	for _, req := range b.toSelf {
		if strings.Contains(req, secret[4:]) {
			t.Fatalf("the key was sent to the console: %s", req)
		}
	}
	b.mu.Unlock()
	if n := b.eval(`localStorage.length + sessionStorage.length`); n != 0 {
		t.Fatalf("the page stored %d items in the browser", n)
	}
	if strings.Contains(logs.String(), secret[4:]) {
		t.Fatal("the key appeared in Caddy's output")
	}

	// The create form shows what the checked scopes open, as they are
	// checked; a preset checks boxes only.
	b.load("create form", 200, chromedp.Navigate(e.console+"/user/api-console/new"))
	b.wantText(".opens summary", "All 21 routes")
	b.do("check incidents:write", chromedp.Click(chromedp.ID("scope-incidents-write")))
	b.wantText(".opens summary", "These scopes open 4 of 21 routes")
	b.do("read only", chromedp.Click(chromedp.Search(`//a[@data-preset and text()="Read only"]`)))
	b.wantText(".opens summary", "These scopes open 11 of 21 routes")
	b.do("name", chromedp.SendKeys(chromedp.ID("name"), "reader"))
	b.load("create", 200, chromedp.Click(chromedp.CSS("form button[type=submit]")))
	b.wantText("main", "reader", "analytics:read", "maintenances:read")
}
