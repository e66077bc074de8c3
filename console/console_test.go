package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/console"
	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/sqlitestore"
	"github.com/spkgate/spkgate/scope"
)

const (
	base    = "/user/api-console"
	baseURL = "https://api.example.com/v1"
	upgrade = "https://example.com/billing/upgrade"
)

var (
	pro  = console.Identity{AccountID: "acct_pro", Plan: "pro"}
	free = console.Identity{AccountID: "acct_free", Plan: "free"}
)

// countingStore is the real SQLite store, counting the plan writes that
// reach it.
type countingStore struct {
	keystore.Store
	setPlans atomic.Int64
}

func (s *countingStore) SetPlan(ctx context.Context, accountID, plan string) (bool, error) {
	s.setPlans.Add(1)
	return s.Store.SetPlan(ctx, accountID, plan)
}

// fixture is a console on a real SQLite store in a temporary directory.
type fixture struct {
	t     *testing.T
	h     *console.Handler
	keys  *keys.Manager
	store *countingStore
	sql   *sqlitestore.Store
}

func newFixture(t *testing.T, mod ...func(*console.Config)) *fixture {
	t.Helper()
	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "spk.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cs := &countingStore{Store: st}
	m := &keys.Manager{Store: cs}
	cfg := console.Config{
		BaseURL:          baseURL,
		UpgradeURL:       upgrade,
		Keys:             m,
		Usage:            st,
		PlanHasAPIAccess: func(p string) bool { return p == "pro" || p == "business" || p == "enterprise" },
		OnError:          func(op string, err error) { t.Logf("console error: %s: %v", op, err) },
	}
	for _, f := range mod {
		f(&cfg)
	}
	h, err := console.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, h: h, keys: m, store: cs, sql: st}
}

type answer struct {
	status int
	header http.Header
	body   string
}

// do serves one request for id; hdr is name, value pairs. A body that is
// url.Values is sent as a form, anything else not nil as JSON.
func (f *fixture) do(id console.Identity, method, target string, body any, hdr ...string) answer {
	f.t.Helper()
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case url.Values:
		rd, ctype = strings.NewReader(b.Encode()), "application/x-www-form-urlencoded"
	case string:
		rd, ctype = strings.NewReader(b), "application/json"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			f.t.Fatal(err)
		}
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	req := httptest.NewRequest(method, target, rd)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	f.h.ServeConsole(rec, req, id)
	res := rec.Result()
	b, _ := io.ReadAll(res.Body)
	if res.Header.Get("X-Content-Type-Options") != "nosniff" {
		f.t.Errorf("%s %s: no X-Content-Type-Options: nosniff", method, target)
	}
	return answer{res.StatusCode, res.Header, string(b)}
}

func (f *fixture) list(account string) []keystore.Key {
	f.t.Helper()
	ks, err := f.keys.List(context.Background(), account)
	if err != nil {
		f.t.Fatal(err)
	}
	return ks
}

func (f *fixture) create(account, name string, scopes ...string) keys.Created {
	f.t.Helper()
	c, err := f.keys.Create(context.Background(), keys.Actor{Name: "test", Source: keys.SourceCLI}, account, keys.CreateRequest{Name: name, Scopes: scopes})
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func want(t *testing.T, what string, a answer, status int, contains ...string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("%s: status %d, want %d\n%s", what, a.status, status, a.body)
	}
	for _, s := range contains {
		if !strings.Contains(a.body, s) {
			t.Fatalf("%s: body lacks %q\n%s", what, s, a.body)
		}
	}
}

var (
	formIDRe = regexp.MustCompile(`name="form_id" value="([A-Za-z0-9_-]+)"`)
	secretRe = regexp.MustCompile(`id="secret" type="text" readonly value="([^"]*)"`)
)

func formID(t *testing.T, page string) string {
	t.Helper()
	m := formIDRe.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no form id in\n%s", page)
	}
	return m[1]
}

func TestEmptyStateSaysWhatToDo(t *testing.T) {
	f := newFixture(t)
	a := f.do(pro, "GET", base, nil)
	want(t, "home", a, 200, "No API keys yet", "Create your first API key", `href="/user/api-console/new"`,
		baseURL, "Authorization: Bearer spk_", "X-API-Key: spk_", "Pro plan", "acct_pro")
	for _, s := range scope.All {
		if !strings.Contains(a.body, "<code>"+s.Name+"</code></td><td>"+s.Description+"</td>") {
			t.Errorf("scope table lacks %s", s.Name)
		}
	}
	for name, v := range map[string]string{
		"Cache-Control":   "no-store",
		"Content-Type":    "text/html; charset=utf-8",
		"X-Frame-Options": "DENY",
	} {
		if got := a.header.Get(name); got != v {
			t.Errorf("%s = %q, want %q", name, got, v)
		}
	}
	if csp := a.header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	// The trailing-slash form is the same page.
	want(t, "home with slash", f.do(pro, "GET", base+"/", nil), 200, "No API keys yet")
}

func TestCreateShowsTheKeyOnceInTheResponse(t *testing.T) {
	f := newFixture(t)
	form := f.do(pro, "GET", base+"/new", nil)
	want(t, "form", form, 200, "Leave all unchecked for full access", `name="scopes" value="monitors:read"`,
		"Read monitors and availability metrics", `value="30d"`, `value="90d"`, `type="date"`, `<label for="name">Name</label>`)
	id := formID(t, form.body)

	a := f.do(pro, "POST", base+"/new", url.Values{
		"form_id": {id}, "name": {"  ci-pipeline  "}, "scopes": {"incidents:read", "monitors:read"}, "expires": {"30d"},
	}, "Sec-Fetch-Site", "same-origin", "Origin", "http://example.com")
	want(t, "create", a, 200, "shown only once", "ci-pipeline", "<code>monitors:read</code>", "<code>incidents:read</code>", "in 30 days", `data-copy="secret"`)
	if a.header.Get("Cache-Control") != "no-store" || a.header.Get("Location") != "" {
		t.Fatalf("key page: Cache-Control %q, Location %q", a.header.Get("Cache-Control"), a.header.Get("Location"))
	}
	m := secretRe.FindStringSubmatch(a.body)
	if m == nil || apikey.Check(m[1]) != nil {
		t.Fatalf("no valid key on the page:\n%s", a.body)
	}
	secret := m[1]
	if strings.Count(a.body, secret) != 1 {
		t.Errorf("the key appears %d times on its page", strings.Count(a.body, secret))
	}

	ks := f.list("acct_pro")
	if len(ks) != 1 || ks[0].Name != "ci-pipeline" || strings.Join(ks[0].Scopes, ",") != "monitors:read,incidents:read" ||
		ks[0].ExpiresAt == nil || time.Until(*ks[0].ExpiresAt) < 29*24*time.Hour || !strings.HasPrefix(secret, ks[0].Prefix) {
		t.Fatalf("stored %+v", ks)
	}

	// The list shows the key without its secret.
	home := f.do(pro, "GET", base, nil)
	want(t, "list", home, 200, "ci-pipeline", ks[0].Prefix+"…", "<code>monitors:read</code>", "1 active", "Never", "just now",
		`href="/user/api-console/keys/`+ks[0].ID+`/revoke"`)
	if strings.Contains(home.body, secret) || strings.Contains(home.body, secret[10:]) {
		t.Fatal("the list shows the secret")
	}
	// Exact times on hover.
	if !regexp.MustCompile(`<time datetime="[0-9T:Z-]+" title="\d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d UTC">just now</time>`).MatchString(home.body) {
		t.Errorf("no exact time in a title:\n%s", home.body)
	}

	// Reloading the key page posts the form again: no second key, no secret.
	again := f.do(pro, "POST", base+"/new", url.Values{"form_id": {id}, "name": {"ci-pipeline"}})
	want(t, "resubmit", again, 409, "already created")
	if secretRe.MatchString(again.body) || len(f.list("acct_pro")) != 1 {
		t.Fatal("a resubmitted form created another key")
	}
	// A new rendering of the form makes a new key.
	want(t, "second form", f.do(pro, "POST", base+"/new", url.Values{"form_id": {formID(t, f.do(pro, "GET", base+"/new", nil).body)}, "name": {"zapier-integration"}}), 200, "Full access")
	if n := len(f.list("acct_pro")); n != 2 {
		t.Fatalf("%d keys", n)
	}
}

func TestCreateFormKeepsInputAndShowsErrorsByTheField(t *testing.T) {
	f := newFixture(t)
	long := strings.Repeat("ü", 101)
	a := f.do(pro, "POST", base+"/new", url.Values{
		"form_id": {"abc"}, "name": {long}, "scopes": {"monitors:write", "analytics:read"}, "expires": {"date"}, "expires_date": {"2001-02-03"},
	})
	want(t, "too long", a, 400, "The key was not created",
		`value="`+long+`"`, "Name is 101 characters long; at most 100 are allowed.", `aria-invalid="true"`, `aria-describedby="name-hint name-error"`,
		`id="scope-monitors-write" name="scopes" value="monitors:write" checked`,
		`id="scope-analytics-read" name="scopes" value="analytics:read" checked`,
		`value="date" checked`, `value="2001-02-03"`, "The expiry date must be today or later.")
	if strings.Contains(a.body, `value="monitors:read" checked`) {
		t.Error("an unpicked scope is checked")
	}
	// The error is next to its field: between the label and the input.
	label, errAt, input := strings.Index(a.body, `<label for="name">`), strings.Index(a.body, "Name is 101"), strings.Index(a.body, `<input id="name"`)
	if !(label < errAt && errAt < input) {
		t.Errorf("name error at %d, not between label %d and input %d", errAt, label, input)
	}

	for _, tc := range []struct {
		form url.Values
		msg  string
	}{
		{url.Values{"name": {"   "}}, "Name is required."},
		{url.Values{"name": {"ok"}, "scopes": {"monitors:admin"}}, `Unknown scope &#34;monitors:admin&#34;`},
		{url.Values{"name": {"ok"}, "expires": {"date"}}, "Pick the date on which the key should stop working."},
		{url.Values{"name": {"ok"}, "expires": {"date"}, "expires_date": {"03/04/2030"}}, "Enter the date as YYYY-MM-DD."},
		{url.Values{"name": {"ok"}, "expires": {"forever"}}, "Choose when the key expires."},
		{url.Values{"name": {"a\x00b"}}, "Name must not contain control characters."},
	} {
		want(t, tc.form.Encode(), f.do(pro, "POST", base+"/new", tc.form), 400, tc.msg)
	}
	if n := len(f.list("acct_pro")); n != 0 {
		t.Fatalf("invalid forms created %d keys", n)
	}

	// The form id of a failed attempt can still be used once corrected.
	// The key stops working at the end of the chosen day (UTC). The page's
	// relative wording ("in 3 days" or "in 4 days") depends on the hour,
	// so the exact time is what is checked.
	day := time.Now().UTC().AddDate(0, 0, 3)
	want(t, "corrected", f.do(pro, "POST", base+"/new", url.Values{"form_id": {"abc"}, "name": {"fixed"}, "expires": {"date"}, "expires_date": {day.Format(time.DateOnly)}}), 200,
		"shown only once", `datetime="`+day.AddDate(0, 0, 1).Format(time.DateOnly)+`T00:00:00Z"`)
	want(t, "not a form", f.do(pro, "POST", base+"/new", `{"name":"x"}`), 415)
	want(t, "huge form", f.do(pro, "POST", base+"/new", url.Values{"name": {strings.Repeat("x", 70<<10)}}), 413)
}

func TestExpiryChoices(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	for choice, d := range map[string]time.Duration{"30d": 30 * 24 * time.Hour, "90d": 90 * 24 * time.Hour} {
		want(t, choice, f.do(pro, "POST", base+"/new", url.Values{"name": {choice}, "expires": {choice}}), 200)
		k := findKey(t, f.list("acct_pro"), choice)
		if k.ExpiresAt == nil || k.ExpiresAt.Sub(now.Add(d)).Abs() > time.Minute {
			t.Errorf("%s: expires %v", choice, k.ExpiresAt)
		}
	}
	date := now.UTC().AddDate(1, 0, 0).Format(time.DateOnly)
	want(t, "date", f.do(pro, "POST", base+"/new", url.Values{"name": {"dated"}, "expires": {"date"}, "expires_date": {date}}), 200)
	k := findKey(t, f.list("acct_pro"), "dated")
	if k.ExpiresAt == nil || k.ExpiresAt.UTC().Format(time.RFC3339) != now.UTC().AddDate(1, 0, 1).Format(time.DateOnly)+"T00:00:00Z" {
		t.Errorf("date: expires %v, want the end of %s", k.ExpiresAt, date)
	}
	want(t, "never", f.do(pro, "POST", base+"/new", url.Values{"name": {"never"}, "expires": {"never"}}), 200)
	if k := findKey(t, f.list("acct_pro"), "never"); k.ExpiresAt != nil {
		t.Errorf("never: expires %v", k.ExpiresAt)
	}
}

func findKey(t *testing.T, ks []keystore.Key, name string) keystore.Key {
	t.Helper()
	for _, k := range ks {
		if k.Name == name {
			return k
		}
	}
	t.Fatalf("no key %q", name)
	return keystore.Key{}
}

func TestKeyNamesAreEscapedEverywhere(t *testing.T) {
	f := newFixture(t)
	const evil = `<script>alert(1)</script>`
	const escaped = `&lt;script&gt;alert(1)&lt;/script&gt;`
	created := f.do(pro, "POST", base+"/new", url.Values{"name": {evil}, "scopes": {"monitors:read"}})
	k := f.list("acct_pro")[0]
	for what, a := range map[string]answer{
		"key page":   created,
		"list":       f.do(pro, "GET", base, nil),
		"confirm":    f.do(pro, "GET", base+"/keys/"+k.ID+"/revoke", nil),
		"form error": f.do(pro, "POST", base+"/new", url.Values{"name": {`"><script>alert(1)</script>` + strings.Repeat("x", 100)}}),
		"revoked msg": func() answer {
			f.keys.Revoke(context.Background(), keys.Actor{Name: "test", Source: keys.SourceCLI}, "acct_pro", k.ID)
			return f.do(pro, "GET", base+"?revoked="+k.ID, nil)
		}(),
	} {
		if strings.Contains(a.body, "<script>alert") {
			t.Errorf("%s: the name is not escaped:\n%s", what, a.body)
		}
		if !strings.Contains(a.body, escaped) {
			t.Errorf("%s: the name is not shown as text:\n%s", what, a.body)
		}
	}
	// In JSON too, the name is data, never markup.
	f.create("acct_pro", evil)
	a := f.do(pro, "GET", base+"/api/keys", nil)
	if strings.Contains(a.body, "<script>") || !strings.Contains(a.body, `\u003cscript\u003e`) {
		t.Errorf("json: %s", a.body)
	}
}

func TestRevokeThroughConfirmation(t *testing.T) {
	f := newFixture(t)
	k := f.create("acct_pro", "zapier-integration", "incidents:write")
	other := f.create("acct_other", "not yours")
	confirm := base + "/keys/" + k.ID + "/revoke"

	for range 3 {
		a := f.do(pro, "GET", confirm, nil)
		want(t, "confirm page", a, 200, "Revoke “zapier-integration”?", "401 Unauthorized", k.Prefix+"…",
			`<form method="post" action="`+confirm+`"`, `<button type="submit" class="button danger">Revoke key</button>`, `href="/user/api-console"`)
	}
	if len(f.list("acct_pro")) != 1 {
		t.Fatal("showing the confirmation revoked the key")
	}

	a := f.do(pro, "POST", confirm, url.Values{"confirm": {"yes"}}, "Sec-Fetch-Site", "same-origin")
	if a.status != http.StatusSeeOther || a.header.Get("Location") != base+"?revoked="+k.ID {
		t.Fatalf("revoke: %d to %q", a.status, a.header.Get("Location"))
	}
	if len(f.list("acct_pro")) != 0 {
		t.Fatal("the key is still active")
	}
	home := f.do(pro, "GET", a.header.Get("Location"), nil)
	want(t, "after revoke", home, 200, "“zapier-integration” was revoked.", "No API keys yet")

	want(t, "revoke again", f.do(pro, "POST", confirm, url.Values{}), 404, "Key not found")
	want(t, "confirm revoked", f.do(pro, "GET", confirm, nil), 404, "Key not found")

	// Another account's key: not found, and left alone.
	otherConfirm := base + "/keys/" + other.ID + "/revoke"
	want(t, "confirm another's", f.do(pro, "GET", otherConfirm, nil), 404)
	want(t, "revoke another's", f.do(pro, "POST", otherConfirm, url.Values{}), 404)
	if len(f.list("acct_other")) != 1 {
		t.Fatal("another account's key was revoked")
	}
	// Its revocation banner is not shown to another account either.
	f.keys.Revoke(context.Background(), keys.Actor{Name: "test", Source: keys.SourceCLI}, "acct_other", other.ID)
	if a := f.do(pro, "GET", base+"?revoked="+other.ID, nil); strings.Contains(a.body, "not yours") {
		t.Fatal("another account's key name was shown")
	}
}

func TestJSONAPI(t *testing.T) {
	f := newFixture(t)
	var list keys.ListResponse
	a := f.do(pro, "GET", base+"/api/keys", nil)
	if want(t, "empty list", a, 200, `{"keys":[]}`); a.header.Get("Content-Type") != "application/json" {
		t.Fatalf("content type %q", a.header.Get("Content-Type"))
	}

	future := time.Now().Add(72 * time.Hour).UTC().Truncate(time.Second)
	a = f.do(pro, "POST", base+"/api/keys", map[string]any{"name": " ci-pipeline ", "scopes": []string{"incidents:read", "monitors:read"}, "expires_at": future})
	want(t, "create", a, 201)
	var c keys.Created
	if err := json.Unmarshal([]byte(a.body), &c); err != nil || apikey.Check(c.Secret) != nil || c.Name != "ci-pipeline" ||
		c.AccountID != "acct_pro" || strings.Join(c.Scopes, ",") != "monitors:read,incidents:read" || c.ExpiresAt == nil || !c.ExpiresAt.Equal(future) {
		t.Fatalf("create: %v %s", err, a.body)
	}
	if a.header.Get("Cache-Control") != "no-store" {
		t.Fatal("the created key may be cached")
	}
	want(t, "full access", f.do(pro, "POST", base+"/api/keys", `{"name":"everything","scopes":[]}`), 201, `"scopes":[]`)

	a = f.do(pro, "GET", base+"/api/keys", nil)
	if err := json.Unmarshal([]byte(a.body), &list); err != nil || len(list.Keys) != 2 || strings.Contains(a.body, `"key"`) || strings.Contains(a.body, c.Secret) {
		t.Fatalf("list: %v %s", err, a.body)
	}

	// Validation: 400 with the field named; nothing created.
	for body, field := range map[string]string{
		`{"name":""}`: "name",
		`{"name":"` + strings.Repeat("x", 101) + `"}`:      "name",
		`{"name":"x","scopes":["monitors:admin"]}`:         "scopes",
		`{"name":"x","expires_at":"2001-01-01T00:00:00Z"}`: "expires_at",
	} {
		a := f.do(pro, "POST", base+"/api/keys", body)
		var e keys.ErrorResponse
		if err := json.Unmarshal([]byte(a.body), &e); err != nil || a.status != 400 || e.Error != "invalid_request" || len(e.Fields) != 1 || e.Fields[0].Field != field {
			t.Errorf("%s: %d %s", body, a.status, a.body)
		}
	}
	want(t, "unknown field", f.do(pro, "POST", base+"/api/keys", `{"name":"x","account_id":"acct_free"}`), 400, `"error":"invalid_request"`)
	want(t, "trailing data", f.do(pro, "POST", base+"/api/keys", `{"name":"x"} {}`), 400)
	want(t, "form body", f.do(pro, "POST", base+"/api/keys", url.Values{"name": {"x"}}), 415, `"error":"unsupported_media_type"`)
	if n := len(f.list("acct_pro")); n != 2 {
		t.Fatalf("bad requests created keys: %d", n)
	}

	// Revoke: 204, then 404; another account's or an unknown id: 404.
	other := f.create("acct_other", "other")
	want(t, "another's key", f.do(pro, "DELETE", base+"/api/keys/"+other.ID, nil), 404, `"error":"not_found"`)
	want(t, "unknown key", f.do(pro, "DELETE", base+"/api/keys/key_nope", nil), 404, `"error":"not_found"`)
	if len(f.list("acct_other")) != 1 {
		t.Fatal("another account's key was revoked")
	}
	if a := f.do(pro, "DELETE", base+"/api/keys/"+c.ID, nil); a.status != 204 || a.body != "" {
		t.Fatalf("revoke: %d %q", a.status, a.body)
	}
	want(t, "revoke again", f.do(pro, "DELETE", base+"/api/keys/"+c.ID, nil), 404)

	var scopes console.ScopesResponse
	a = f.do(pro, "GET", base+"/api/scopes", nil)
	if err := json.Unmarshal([]byte(a.body), &scopes); err != nil || a.status != 200 || !slices.Equal(scopes.Scopes, scope.All) {
		t.Fatalf("scopes: %d %s", a.status, a.body)
	}
	want(t, "info", f.do(pro, "GET", base+"/api/info", nil), 200, `{"base_url":"https://api.example.com/v1","plan":"pro","api_access":true}`)

	// Wrong methods: 405 with Allow; unknown paths: 404.
	for _, tc := range []struct{ method, path, allow string }{
		{"PUT", "/api/keys", "GET, HEAD, POST"},
		{"DELETE", "/api/keys", "GET, HEAD, POST"},
		{"GET", "/api/keys/" + other.ID, "DELETE, PATCH"},
		{"POST", "/api/keys/" + other.ID, "DELETE, PATCH"},
		{"GET", "/api/keys/" + other.ID + "/roll", "POST"},
		{"POST", "/api/events", "GET, HEAD"},
		{"POST", "/api/scopes", "GET, HEAD"},
		{"DELETE", "/api/info", "GET, HEAD"},
	} {
		a := f.do(pro, tc.method, base+tc.path, nil)
		if a.status != 405 || a.header.Get("Allow") != tc.allow || !strings.Contains(a.body, `"error":"method_not_allowed"`) {
			t.Errorf("%s %s: %d Allow %q %s", tc.method, tc.path, a.status, a.header.Get("Allow"), a.body)
		}
	}
	for _, p := range []string{"/api", "/api/", "/api/nope", "/api/keys/a/b"} {
		want(t, p, f.do(pro, "GET", base+p, nil), 404, `"error":"not_found"`)
	}
}

func TestPlanWithoutAPIAccess(t *testing.T) {
	f := newFixture(t)
	k := f.create("acct_free", "from when they were on pro")
	for _, p := range []string{"", "/new", "/keys/" + k.ID + "/revoke"} {
		a := f.do(free, "GET", base+p, nil)
		want(t, "page "+p, a, 403, "API access needs a Pro plan", "Your account is on the Free plan.", `href="`+upgrade+`"`, "Upgrade your plan")
		if strings.Contains(a.body, k.Name) {
			t.Errorf("%s: the upgrade prompt lists keys", p)
		}
	}
	want(t, "form post", f.do(free, "POST", base+"/new", url.Values{"name": {"x"}}), 403, "Upgrade your plan")
	want(t, "revoke post", f.do(free, "POST", base+"/keys/"+k.ID+"/revoke", url.Values{}), 403)

	upgradeBody := `{"error":"plan_upgrade_required","message":"API access needs a Pro plan or above","upgrade_url":"` + upgrade + `"}` + "\n"
	for _, tc := range []struct{ method, path string }{{"GET", "/api/keys"}, {"POST", "/api/keys"}, {"DELETE", "/api/keys/" + k.ID}} {
		var body any
		if tc.method == "POST" {
			body = `{"name":"x"}`
		}
		if a := f.do(free, tc.method, base+tc.path, body); a.status != 403 || a.body != upgradeBody {
			t.Errorf("%s %s: %d %s", tc.method, tc.path, a.status, a.body)
		}
	}
	if len(f.list("acct_free")) != 1 {
		t.Fatal("a free account changed keys")
	}
	want(t, "info", f.do(free, "GET", base+"/api/info", nil), 200,
		`{"base_url":"https://api.example.com/v1","plan":"free","api_access":false,"upgrade_url":"`+upgrade+`"}`)
	want(t, "scopes", f.do(free, "GET", base+"/api/scopes", nil), 200, "monitors:write")
}

func TestCrossOriginRequestsChangeNothing(t *testing.T) {
	f := newFixture(t)
	k := f.create("acct_pro", "keep me")
	revoke := base + "/keys/" + k.ID + "/revoke"
	form := url.Values{"name": {"csrf"}}
	for _, hdr := range [][]string{
		{"Sec-Fetch-Site", "cross-site"},
		{"Sec-Fetch-Site", "same-site"},
		{"Origin", "https://evil.example"},
		{"Origin", "null"},
	} {
		what := strings.Join(hdr, ": ")
		want(t, what+" create", f.do(pro, "POST", base+"/new", form, hdr...), 403, "came from another site")
		want(t, what+" revoke", f.do(pro, "POST", revoke, url.Values{}, hdr...), 403)
		want(t, what+" api create", f.do(pro, "POST", base+"/api/keys", `{"name":"csrf"}`, hdr...), 403, `"error":"cross_origin_request"`)
		want(t, what+" api delete", f.do(pro, "DELETE", base+"/api/keys/"+k.ID, nil, hdr...), 403, `"error":"cross_origin_request"`)
		// Reading is allowed: the browser keeps the answer from the other site.
		want(t, what+" get", f.do(pro, "GET", base, nil, hdr...), 200)
	}
	ks := f.list("acct_pro")
	if len(ks) != 1 || ks[0].ID != k.ID {
		t.Fatalf("cross-origin requests changed the keys: %+v", ks)
	}
	// The same requests from the console's own origin work.
	want(t, "same origin", f.do(pro, "POST", base+"/new", form, "Sec-Fetch-Site", "same-origin", "Origin", "http://example.com"), 200)
	want(t, "same origin api", f.do(pro, "DELETE", base+"/api/keys/"+k.ID, nil, "Origin", "http://example.com"), 204)
}

func TestAPIKeysCannotUseTheConsole(t *testing.T) {
	f := newFixture(t)
	k := f.create("acct_pro", "a key")
	for what, hdr := range map[string][]string{
		"bearer":       {"Authorization", "Bearer " + k.Secret},
		"lower bearer": {"Authorization", "bearer " + k.Secret},
		"x-api-key":    {"X-API-Key", k.Secret},
		"not a key":    {"X-API-Key", "spk_nope"},
	} {
		want(t, what+" page", f.do(pro, "GET", base, nil, hdr...), 403, "An API key cannot be used to manage API keys")
		want(t, what+" api", f.do(pro, "GET", base+"/api/keys", nil, hdr...), 403, `"error":"api_key_not_allowed"`)
		want(t, what+" create", f.do(pro, "POST", base+"/api/keys", `{"name":"x"}`, hdr...), 403)
	}
	// Authenticated by spk_auth in front (its key id placeholder is set).
	viaKey := console.Identity{AccountID: "acct_pro", Plan: "pro", APIKeyID: k.ID}
	want(t, "identity from a key", f.do(viaKey, "GET", base+"/api/keys", nil), 403, `"error":"api_key_not_allowed"`)
	want(t, "delete with a key", f.do(viaKey, "DELETE", base+"/api/keys/"+k.ID, nil), 403)
	if len(f.list("acct_pro")) != 1 {
		t.Fatal("a key changed keys")
	}
	// A login layer's own credentials are fine.
	want(t, "basic auth", f.do(pro, "GET", base, nil, "Authorization", "Basic ZGVtbzpkZW1v"), 200, "a key")
	want(t, "session bearer", f.do(pro, "GET", base, nil, "Authorization", "Bearer eyJhbGciOi.session.token"), 200)
}

func TestNobodySignedInSeesNothing(t *testing.T) {
	f := newFixture(t)
	f.create("acct_pro", "secret-project")
	for _, id := range []console.Identity{{}, {Plan: "pro"}, {AccountID: "bad\naccount", Plan: "pro"}} {
		for _, p := range []string{"", "/new", "/api/keys", "/api/info", "/api/scopes"} {
			a := f.do(id, "GET", base+p, nil)
			if a.status != 401 || strings.Contains(a.body, "secret-project") {
				t.Fatalf("%+v GET %s: %d %s", id, p, a.status, a.body)
			}
		}
		want(t, "api", f.do(id, "GET", base+"/api/keys", nil), 401, `{"error":"unauthorized","message":"sign in to the dashboard to manage API keys"}`)
		want(t, "page", f.do(id, "GET", base, nil), 401, "Sign in to manage your API keys")
		want(t, "create", f.do(id, "POST", base+"/api/keys", `{"name":"x"}`), 401)
	}
	// Without an identity in the context at all (ServeHTTP used directly).
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, httptest.NewRequest("GET", base+"/api/keys", nil))
	if rec.Code != 401 {
		t.Fatalf("no identity: %d", rec.Code)
	}
	if n := len(f.list("acct_pro")); n != 1 {
		t.Fatal("keys changed")
	}
}

func TestGetNeverChangesState(t *testing.T) {
	f := newFixture(t)
	k := f.create("acct_pro", "a key")
	f.do(pro, "GET", base, nil) // records the plan once
	ctx := context.Background()
	before, err := f.sql.LastChange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		"", "/new", "/new?name=x&scopes=monitors:read&form_id=x", "/keys/" + k.ID + "/revoke", "/keys/" + k.ID + "/revoke?confirm=yes",
		"/api/keys", "/api/keys?name=x", "/api/keys/" + k.ID, "/api/scopes", "/api/info", "?revoked=" + k.ID,
	} {
		for _, m := range []string{"GET", "HEAD", "OPTIONS"} {
			f.do(pro, m, base+p, nil)
		}
	}
	after, err := f.sql.LastChange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ks := f.list("acct_pro"); before != after || len(ks) != 1 || ks[0].ID != k.ID {
		t.Fatalf("GET changed state: change log %d → %d, keys %+v", before, after, ks)
	}
}

func TestPlanIsRecordedWhenItChanges(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for range 5 {
		f.do(pro, "GET", base, nil)
		f.do(pro, "GET", base+"/api/keys", nil)
	}
	if n := f.store.setPlans.Load(); n != 1 {
		t.Fatalf("%d plan writes for one plan", n)
	}
	if p, err := f.sql.GetPlan(ctx, "acct_pro"); err != nil || p != "pro" {
		t.Fatalf("recorded plan %q, %v", p, err)
	}
	downgraded := console.Identity{AccountID: "acct_pro", Plan: "free"}
	want(t, "downgraded", f.do(downgraded, "GET", base, nil), 403, "Upgrade your plan")
	f.do(downgraded, "GET", base, nil)
	if n := f.store.setPlans.Load(); n != 2 {
		t.Fatalf("%d plan writes after one change", n)
	}
	if p, _ := f.sql.GetPlan(ctx, "acct_pro"); p != "free" {
		t.Fatalf("recorded plan %q after the downgrade", p)
	}

	// Without a plan from the login layer, the recorded plan decides.
	noPlan := console.Identity{AccountID: "acct_billing"}
	want(t, "no plan known", f.do(noPlan, "GET", base, nil), 403, "Upgrade your plan")
	if err := f.keys.SetPlan(ctx, keys.Actor{Name: "test", Source: keys.SourceCLI}, "acct_billing", "enterprise"); err != nil {
		t.Fatal(err)
	}
	want(t, "plan set by billing", f.do(noPlan, "GET", base, nil), 200, "Enterprise plan")
	want(t, "info", f.do(noPlan, "GET", base+"/api/info", nil), 200, `"plan":"enterprise","api_access":true`)
}

func TestStoreUnavailable(t *testing.T) {
	f := newFixture(t)
	f.do(pro, "GET", base, nil)
	f.sql.Close()
	a := f.do(pro, "GET", base, nil)
	want(t, "page", a, 503, "The API Console is unavailable")
	if a.header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	want(t, "api", f.do(pro, "GET", base+"/api/keys", nil), 503, `"error":"unavailable"`)
	want(t, "create", f.do(pro, "POST", base+"/api/keys", `{"name":"x"}`), 503)
	want(t, "form", f.do(pro, "POST", base+"/new", url.Values{"name": {"x"}}), 503)
}

func TestRoutingAndAssets(t *testing.T) {
	f := newFixture(t, func(c *console.Config) { c.BasePath = "/dev/api/"; c.BaseURL = "" })
	for p, handles := range map[string]bool{
		"/dev/api": true, "/dev/api/": true, "/dev/api/new": true, "/dev/apix": false, "/dev": false, "/": false, "/user/api-console": false,
	} {
		if got := f.h.Handles(p); got != handles {
			t.Errorf("Handles(%q) = %v", p, got)
		}
	}
	a := f.do(pro, "GET", "/dev/api", nil)
	// Without a configured base URL: /v1 on the request's host.
	want(t, "home", a, 200, `href="/dev/api/new"`, "http://example.com/v1")
	css := regexp.MustCompile(`href="(/dev/api/assets/console\.css\?v=[0-9a-f]+)"`).FindStringSubmatch(a.body)
	js := regexp.MustCompile(`src="(/dev/api/assets/console\.js\?v=[0-9a-f]+)"`).FindStringSubmatch(a.body)
	if css == nil || js == nil {
		t.Fatalf("no asset links:\n%s", a.body)
	}
	c := f.do(console.Identity{}, "GET", css[1], nil) // assets are not account data
	if c.status != 200 || !strings.HasPrefix(c.header.Get("Content-Type"), "text/css") || c.header.Get("ETag") == "" || !strings.Contains(c.body, ".card") {
		t.Fatalf("css: %d %v", c.status, c.header)
	}
	if n := f.do(pro, "GET", css[1], nil, "If-None-Match", c.header.Get("ETag")); n.status != 304 {
		t.Fatalf("conditional css: %d", n.status)
	}
	if j := f.do(pro, "GET", js[1], nil); j.status != 200 || !strings.Contains(j.header.Get("Content-Type"), "javascript") {
		t.Fatalf("js: %d %v", j.status, j.header)
	}
	want(t, "asset post", f.do(pro, "POST", css[1], url.Values{}, "Sec-Fetch-Site", "same-origin"), 405)
	for _, p := range []string{"/dev/api/assets/nope.css", "/dev/api/nope", "/dev/api/keys", "/dev/api/keys//revoke", "/elsewhere"} {
		want(t, p, f.do(pro, "GET", p, nil), 404, "Page not found")
	}
	a = f.do(pro, "DELETE", "/dev/api", nil)
	if a.status != 405 || a.header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("DELETE home: %d %q", a.status, a.header.Get("Allow"))
	}
	if h := f.do(pro, "HEAD", "/dev/api", nil); h.status != 200 || h.body != "" {
		t.Fatalf("HEAD: %d %q", h.status, h.body)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "spk.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ok := console.Config{Keys: &keys.Manager{Store: st}, PlanHasAPIAccess: func(string) bool { return true }}
	for what, mod := range map[string]func(*console.Config){
		"no manager":         func(c *console.Config) { c.Keys = nil },
		"no plan func":       func(c *console.Config) { c.PlanHasAPIAccess = nil },
		"relative base path": func(c *console.Config) { c.BasePath = "user/api" },
		"wildcard":           func(c *console.Config) { c.BasePath = "/user/*" },
		"dot segment":        func(c *console.Config) { c.BasePath = "/user/../admin" },
		"script upgrade":     func(c *console.Config) { c.UpgradeURL = "javascript:alert(1)" },
		"relative upgrade":   func(c *console.Config) { c.UpgradeURL = "billing" },
		"scheme-relative":    func(c *console.Config) { c.BaseURL = "//evil.example/v1" },
	} {
		c := ok
		mod(&c)
		if _, err := console.New(c); err == nil {
			t.Errorf("%s: no error", what)
		}
	}
	if _, err := console.New(ok); err != nil {
		t.Fatal(err)
	}
}
