package console_test

import (
	"context"
	"encoding/json"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spkgate/spkgate/console"
	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
)

var alice = console.Identity{AccountID: "acct_pro", Plan: "pro", User: "alice@example.com", ClientIP: "203.0.113.7"}

func TestEditThroughConfirmation(t *testing.T) {
	f := newFixture(t)
	k := f.create("acct_pro", "ci-pipeline", "monitors:read")
	edit := base + "/keys/" + k.ID + "/edit"
	want(t, "form", f.do(alice, "GET", edit, nil), 200, `value="ci-pipeline"`, `value="monitors:read" checked`, `id="exp-keep"`, "These scopes open 2 of 20 routes")

	form := url.Values{"name": {"deploy-bot"}, "scopes": {"incidents:write"}, "expires": {"keep"},
		"allowed_ips": {"203.0.113.0/24\n2001:db8::/32"}, "rate_requests": {"10"}, "rate_window": {"1s"}}
	a := f.do(alice, "POST", edit, form)
	want(t, "confirm", a, 200, "Save changes to “ci-pipeline”?", "deploy-bot", "monitors:read", "incidents:write",
		"203.0.113.0/24, 2001:db8::/32", "10 requests per second", `name="confirm" value="yes"`)
	if got := findKey(t, f.list("acct_pro"), "ci-pipeline"); got.ID != k.ID {
		t.Fatal("the confirmation page changed the key")
	}
	// Back to the form keeps what was typed.
	form.Set("confirm", "back")
	want(t, "back", f.do(alice, "POST", edit, form), 200, `value="deploy-bot"`, `value="incidents:write" checked`, "2001:db8::/32")

	form.Set("confirm", "yes")
	a = f.do(alice, "POST", edit, form)
	if a.status != 303 || !strings.HasSuffix(a.header.Get("Location"), "?updated="+k.ID) {
		t.Fatalf("save: %d %s", a.status, a.header.Get("Location"))
	}
	got := findKey(t, f.list("acct_pro"), "deploy-bot")
	if strings.Join(got.Scopes, ",") != "incidents:write" || len(got.AllowedIPs) != 2 || got.RateLimit == nil || got.RateLimit.Requests != 10 {
		t.Fatalf("saved %+v", got)
	}
	want(t, "banner", f.do(alice, "GET", base+"?updated="+k.ID, nil), 200, "“deploy-bot” was saved")

	// The activity names the signed-in user, the console and their address.
	a = f.do(alice, "GET", base+"/activity", nil)
	want(t, "activity", a, 200, "Edited key", "deploy-bot", "alice@example.com", "API Console", "203.0.113.7",
		"Changed allowed IPs, name, own rate limit, scopes", "Created key")
	if strings.Index(a.body, "Edited key") > strings.Index(a.body, "Created key") {
		t.Fatal("the activity is not newest first")
	}

	// Nothing changed: said so, no confirmation.
	same := url.Values{"name": {"deploy-bot"}, "scopes": {"incidents:write"}, "expires": {"keep"},
		"allowed_ips": {"203.0.113.0/24\n2001:db8::/32"}, "rate_requests": {"10"}, "rate_window": {"1s"}}
	want(t, "unchanged", f.do(alice, "POST", edit, same), 200, "Nothing changed")
}

func TestEditShowsEveryMistakeByItsField(t *testing.T) {
	f := newFixture(t)
	k := f.create("acct_pro", "ci-pipeline")
	a := f.do(pro, "POST", base+"/keys/"+k.ID+"/edit", url.Values{"name": {""}, "expires": {"date"}, "expires_date": {"2001-01-01"},
		"allowed_ips": {"10.0.0.1/8"}, "rate_requests": {"ten"}, "rate_window": {"1s"}})
	want(t, "errors", a, 400, `id="name-error"`, `id="expiry-error"`, `id="ips-error"`, "did you mean 10.0.0.0/8", `id="rate-error"`, "whole number")
	if n := strings.Count(a.body, `aria-invalid="true"`); n < 3 {
		t.Fatalf("%d fields marked invalid", n)
	}
	if findKey(t, f.list("acct_pro"), "ci-pipeline").ID != k.ID {
		t.Fatal("a refused edit changed the key")
	}
	// Another account's key, or an unknown one: 404, nothing changed.
	other := f.create("acct_other", "theirs")
	for _, p := range []string{"/keys/" + other.ID + "/edit", "/keys/" + other.ID + "/roll", "/keys/" + other.ID, "/keys/nope/edit"} {
		want(t, p, f.do(pro, "GET", base+p, nil), 404, "Key not found")
	}
	want(t, "post other", f.do(pro, "POST", base+"/keys/"+other.ID+"/edit", url.Values{"name": {"mine"}, "confirm": {"yes"}}), 404)
	if findKey(t, f.list("acct_other"), "theirs").ID != other.ID {
		t.Fatal("another account's key was edited")
	}
}

func TestRollWithGrace(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	f := newFixture(t, func(c *console.Config) { c.Now = func() time.Time { return now } })
	f.keys.Now = func() time.Time { return now }
	k := f.create("acct_pro", "zapier", "monitors:read")
	roll := base + "/keys/" + k.ID + "/roll"
	a := f.do(pro, "GET", roll, nil)
	want(t, "roll page", a, 200, "Roll “zapier”?", "Now", "In 1 hour", "In 24 hours", "In 7 days", `value="24h" checked`)
	id := formID(t, a.body)
	a = f.do(pro, "POST", roll, url.Values{"form_id": {id}, "grace": {"24h"}})
	want(t, "rolled", a, 200, "“zapier” was rolled", "The old key stops working", "tomorrow", "shown only once")
	m := secretRe.FindStringSubmatch(a.body)
	if m == nil || m[1] == k.Secret || !strings.HasPrefix(m[1], "spk_") {
		t.Fatalf("no new secret on the page")
	}
	// Reloading the one-time page does not roll again.
	want(t, "reload", f.do(pro, "POST", roll, url.Values{"form_id": {id}, "grace": {"24h"}}), 409)
	a = f.do(pro, "GET", base, nil)
	want(t, "list", a, 200, "Old key stops working", "Rolled")
	if n := strings.Count(a.body, `class="key-name"`); n != 2 {
		t.Fatalf("%d keys listed, want the new and the rolling one", n)
	}
	// A rolled key can no longer be edited or rolled.
	want(t, "roll again", f.do(pro, "GET", roll, nil), 409, "This key was rolled")
	want(t, "bad grace", f.do(pro, "POST", base+"/keys/"+findNewest(t, f, "zapier")+"/roll", url.Values{"grace": {"30d"}}), 400, "Choose when the old key stops working")
}

func findNewest(t *testing.T, f *fixture, name string) string {
	t.Helper()
	for _, k := range f.list("acct_pro") {
		if k.Name == name && k.ReplacedBy == "" {
			return k.ID
		}
	}
	t.Fatalf("no active %s", name)
	return ""
}

func TestKeyPageDrawsUsage(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	f := newFixture(t, func(c *console.Config) { c.Now = func() time.Time { return now } })
	k := f.create("acct_pro", "ci-pipeline")
	other := f.create("acct_pro", "other")
	err := f.sql.AddUsage(context.Background(), []keystore.UsageCount{
		{KeyID: k.ID, AccountID: "acct_pro", Hour: now.Truncate(time.Hour), Allowed: 120, Forbidden: 3, Limited: 2},
		{KeyID: k.ID, AccountID: "acct_pro", Hour: now.Add(-49 * time.Hour).Truncate(time.Hour), Allowed: 40},
		{KeyID: k.ID, AccountID: "acct_pro", Hour: now.AddDate(0, 0, -40), Allowed: 999}, // before the chart
		{KeyID: other.ID, AccountID: "acct_pro", Hour: now.Truncate(time.Hour), Allowed: 7},
	})
	if err != nil {
		t.Fatal(err)
	}
	a := f.do(pro, "GET", base+"/keys/"+k.ID, nil)
	want(t, "key page", a, 200, `<svg viewBox="0 0 600 180" role="img" aria-labelledby="chart-title chart-desc"`,
		"Last 30 days: 160 requests allowed, 3 refused for scope (403), 2 limited (429).",
		"4 Dec: 120 allowed, 3 forbidden, 2 limited", "2 Dec: 40 allowed", `<th scope="row">4 Dec</th><td>120</td><td>3</td><td>2</td>`)
	if n := len(regexp.MustCompile(`<g><title>`).FindAllString(a.body, -1)); n != 30 {
		t.Fatalf("%d bars, want 30", n)
	}

	// The JSON API: the same counts in the admin API's shape.
	a = f.do(pro, "GET", base+"/api/keys/"+k.ID+"/usage?granularity=day", nil)
	var u console.UsageResponse
	if err := json.Unmarshal([]byte(a.body), &u); err != nil || a.status != 200 || len(u.Usage) != 2 || u.Usage[1].Allowed != 120 || u.Usage[1].KeyID != k.ID {
		t.Fatalf("usage: %d %s", a.status, a.body)
	}
	want(t, "account usage", f.do(pro, "GET", base+"/api/usage", nil), 200, `"key_id":"`+other.ID+`"`, `"period_start":"2026-12-04T12:00:00Z"`)
	want(t, "bad from", f.do(pro, "GET", base+"/api/usage?from=yesterday", nil), 400, `"field":"from"`)
	want(t, "other account", f.do(console.Identity{AccountID: "acct_x", Plan: "pro"}, "GET", base+"/api/keys/"+k.ID+"/usage", nil), 404)
}

func TestLifecycleJSONAPI(t *testing.T) {
	f := newFixture(t)
	k := f.create("acct_pro", "ci-pipeline")
	a := f.do(alice, "PATCH", base+"/api/keys/"+k.ID, `{"name":"renamed","allowed_ips":["198.51.100.0/24"],"rate_limit":{"requests":5,"window":"1m"}}`)
	want(t, "patch", a, 200, `"name":"renamed"`, `"allowed_ips":["198.51.100.0/24"]`)
	if strings.Contains(a.body, `"key"`) {
		t.Fatal("an edit returned a secret")
	}
	want(t, "patch bad", f.do(alice, "PATCH", base+"/api/keys/"+k.ID, `{"nope":1}`), 400, `"field":"nope"`)
	want(t, "patch form", f.do(alice, "PATCH", base+"/api/keys/"+k.ID, url.Values{"name": {"x"}}), 415)
	a = f.do(alice, "POST", base+"/api/keys/"+k.ID+"/roll", `{"grace":"1h"}`)
	want(t, "roll", a, 201, `"key":"spk_`, `"replaces":"`+k.ID+`"`, `"old_key_expires_at"`)
	want(t, "roll again", f.do(alice, "POST", base+"/api/keys/"+k.ID+"/roll", `{"grace":"1h"}`), 409, `"error":"key_rolled"`)
	a = f.do(alice, "GET", base+"/api/events?limit=2", nil)
	var evs keys.EventsResponse
	if err := json.Unmarshal([]byte(a.body), &evs); err != nil || len(evs.Events) != 2 {
		t.Fatalf("events: %d %s", a.status, a.body)
	}
	if e := evs.Events[0]; e.Action != keystore.ActionKeyRolled || e.Actor != "alice@example.com" || e.Source != keystore.SourceConsole || e.IP != "203.0.113.7" {
		t.Fatalf("newest event %+v", e)
	}
	a = f.do(alice, "GET", base+"/api/events?before="+itoa(evs.Events[1].ID), nil)
	var older keys.EventsResponse
	if err := json.Unmarshal([]byte(a.body), &older); err != nil || len(older.Events) == 0 || older.Events[0].ID >= evs.Events[1].ID {
		t.Fatalf("older events: %s", a.body)
	}
	a = f.do(console.Identity{AccountID: "acct_x", Plan: "pro"}, "GET", base+"/api/events", nil)
	want(t, "events of another account", a, 200, `"account.plan_changed"`)
	if strings.Contains(a.body, k.ID) || strings.Contains(a.body, "renamed") {
		t.Fatalf("another account sees these events: %s", a.body)
	}
	want(t, "free plan", f.do(free, "GET", base+"/api/events", nil), 403, "plan_upgrade_required")
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestActivityPages(t *testing.T) {
	f := newFixture(t)
	want(t, "record the plan first", f.do(pro, "GET", base, nil), 200)
	for i := range 30 {
		f.create("acct_pro", "key-"+itoa(int64(i)))
	}
	a := f.do(pro, "GET", base+"/activity", nil)
	want(t, "first page", a, 200, "key-29", "Older events")
	if strings.Contains(a.body, ">key-0 <") || strings.Count(a.body, "Created key") != 25 {
		t.Fatalf("first page shows %d events", strings.Count(a.body, "Created key"))
	}
	older := regexp.MustCompile(`href="([^"]*activity\?before=\d+)"`).FindStringSubmatch(a.body)
	if older == nil {
		t.Fatal("no link to older events")
	}
	a = f.do(pro, "GET", strings.ReplaceAll(older[1], "&amp;", "&"), nil)
	want(t, "second page", a, 200, "key-0", "Newest")
	if strings.Count(a.body, "Created key") != 5 || !strings.Contains(a.body, "Plan changed") {
		t.Fatalf("second page shows %d events", strings.Count(a.body, "Created key"))
	}
	want(t, "bad page", f.do(pro, "GET", base+"/activity?before=x", nil), 400)
}
