package main

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// status sends one request with key to the gateway of e.
func (e *env) status(method, path, key string) int {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.gateway+path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestKeyLifecycleInBrowser edits a key through the confirmation step,
// sees its own rate limit answer 429 in the try-it panel, rolls it with a
// grace period with JavaScript off, reads its usage chart after the
// traffic, and finds every change in the activity, against the real
// binary running Caddyfile.example.
func TestKeyLifecycleInBrowser(t *testing.T) {
	e := newEnv(t)
	if *updateScreenshot {
		e.defaultPorts()
	}
	logs := e.startCaddy()
	home := e.console + "/user/api-console"
	b := openBrowserTab(t, e, demoPro, demoProPassword)
	b.load("open the console", 200, chromedp.Navigate(home))
	secret := e.adminKey(demoPro, "deploy-bot", "monitors:read")
	b.load("list", 200, chromedp.Navigate(home))
	b.wantText("section.quota", "of 100000 requests used")

	// Edit: a rate of its own and one more scope, confirmed on a second page.
	b.load("edit", 200, chromedp.Click(chromedp.Search(`//a[contains(., "Edit") and contains(., "deploy-bot")]`)))
	b.do("fill", chromedp.SetValue(chromedp.ID("rate-requests"), "2"),
		chromedp.SetValue(chromedp.ID("rate-window"), "1m"),
		chromedp.Click(chromedp.ID("scope-incidents-read")))
	b.wantText(".opens summary", "These scopes open 4 of 21 routes")
	b.load("review", 200, chromedp.Click(chromedp.CSS("form button[type=submit]")))
	b.wantText("main", "Save changes to “deploy-bot”?", "2 requests per minute", "monitors:read, incidents:read")
	if got := e.status("GET", "/v1/incidents", secret); got != 403 {
		t.Fatalf("the review page changed the key: %d", got)
	}
	b.load("save", 200, chromedp.Click(chromedp.CSS(`button[name=confirm][value=yes]`)))
	b.wantText(".notice.success", "“deploy-bot” was saved")

	// Try it: the third request within the minute is limited by the key's
	// own rate, and the page shows why and when to retry.
	b.load("explorer", 200, chromedp.Navigate(home+"/explore"))
	b.do("pick GET /v1/incidents", chromedp.SetValue(chromedp.ID("try-route"), "8:GET"))
	b.do("paste the key", chromedp.SendKeys(chromedp.ID("try-key"), secret))
	b.signIn(false)
	for i, want := range []string{"200", "200", "429"} {
		b.do("send", chromedp.Evaluate[chromedp.Void](`document.querySelector("[data-try-status]").textContent = ""`),
			chromedp.Click(chromedp.CSS("[data-try-send]")))
		b.waitText("[data-try-status]", want)
		if i == 2 {
			b.wantText(".try-headers", "Retry-After", "RateLimit")
			b.wantText("[data-try-response]", `"error": "rate_limited"`)
		}
	}
	b.signIn(true)

	// Roll with a grace period of an hour, with JavaScript off: the
	// confirmation page is the form.
	if _, err := chromedp.Call(b.ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatal(err)
	}
	b.load("list", 200, chromedp.Navigate(home))
	b.load("roll", 200, chromedp.Click(chromedp.Search(`//a[contains(., "Roll") and contains(., "deploy-bot")]`)))
	b.wantText("h1", "Roll “deploy-bot”?")
	b.do("an hour", chromedp.Click(chromedp.Search(`//label[contains(., "In 1 hour")]`)))
	b.load("roll it", 200, chromedp.Click(chromedp.Search(`//button[text()="Roll key"]`)))
	b.wantText("main", "“deploy-bot” was rolled", "The old key stops working", "shown only once")
	rolled, err := chromedp.Run(b.ctx, chromedp.Value(chromedp.ID("secret")))
	if err != nil || !strings.HasPrefix(rolled, "spk_") || rolled == secret {
		t.Fatalf("the new key %q (%v)", rolled, err)
	}
	if got := e.status("GET", "/v1/monitors", rolled); got != 200 {
		t.Fatalf("the new key: %d", got)
	}
	if got := e.status("GET", "/v1/monitors", secret); got == 401 {
		t.Fatal("the old key stopped before its grace period ended")
	}
	b.load("list", 200, chromedp.Navigate(home))
	b.wantText("table.keys", "Old key stops working in ", "Rolled")
	if _, err := chromedp.Call(b.ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: false}); err != nil {
		t.Fatal(err)
	}

	// Usage: the old key's chart shows what it was allowed and refused,
	// once the counts are written (every few seconds).
	b.load("old key", 200, chromedp.Click(chromedp.Search(`//tr[.//span[contains(@class, "badge") and text()="Rolled"]]//a[contains(@class, "key-name")]`)))
	deadline := time.Now().Add(30 * time.Second)
	limitedShown := regexp.MustCompile(`Rate limited or over quota \(429\) [1-9]`)
	for !limitedShown.MatchString(b.textContent("figcaption")) {
		if time.Now().After(deadline) {
			t.Fatalf("the usage never showed the 429: %s", b.textContent("figcaption"))
		}
		time.Sleep(time.Second)
		b.load("reload", 200, chromedp.Reload())
	}
	if got := b.textContent("figcaption"); !strings.Contains(got, "Refused for scope (403) 1") {
		t.Fatalf("the usage lacks the 403: %s", got)
	}
	if n := b.eval(`document.querySelectorAll("svg.usage-chart g").length`); n != 30 {
		t.Fatalf("%d days in the chart, want 30", n)
	}
	if *updateScreenshot {
		b.screenshot("../../docs/console-usage.png")
	} else {
		b.screenshot("")
	}

	// The activity lists every change, newest first, by the signed-in user.
	b.load("activity", 200, chromedp.Navigate(home+"/activity"))
	b.wantText("table.events", "Rolled key", "Edited key", "Created key", "demo-pro", "API Console", "admin API")
	order := b.text("table.events tbody")
	if !(strings.Index(order, "Rolled key") < strings.Index(order, "Edited key") && strings.Index(order, "Edited key") < strings.Index(order, "Created key")) {
		t.Fatalf("the activity is not newest first:\n%s", order)
	}
	if strings.Contains(logs.String(), secret[4:]) || strings.Contains(logs.String(), rolled[4:]) {
		t.Fatal("a key appeared in Caddy's output")
	}
}
