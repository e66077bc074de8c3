package console_test

import (
	"encoding/json"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spkgate/spkgate/console"
	"github.com/spkgate/spkgate/scope"
)

// visibleRoutes returns "METHODS PATH" of the route rows of a page that are
// not hidden, and of those that are.
func visibleRoutes(t *testing.T, page string) (shown, hidden []string) {
	t.Helper()
	row := regexp.MustCompile(`(?s)<(?:tr|li) data-route-scope="[^"]*"( hidden)?>(.*?)</(?:tr|li)>`)
	method := regexp.MustCompile(`<span class="method m-[^"]*">([^<]*)</span>`)
	path := regexp.MustCompile(`<code class="path">([^<]*)</code>`)
	for _, m := range row.FindAllStringSubmatch(page, -1) {
		var ms []string
		for _, x := range method.FindAllStringSubmatch(m[2], -1) {
			ms = append(ms, x[1])
		}
		p := path.FindStringSubmatch(m[2])
		if p == nil {
			t.Fatalf("a route row without a path: %s", m[2])
		}
		r := strings.Join(ms, ",") + " " + p[1]
		if m[1] != "" {
			hidden = append(hidden, r)
		} else {
			shown = append(shown, r)
		}
	}
	return shown, hidden
}

func TestExplorerListsThePolicyByResource(t *testing.T) {
	f := newFixture(t)
	a := f.do(pro, "GET", base+"/explore", nil)
	want(t, "explorer", a, 200, "Explore the API", `<h2 id="routes-status_pages-h">Status pages</h2>`, `<h2 id="routes-maintenances-h">Maintenances</h2>`,
		"List monitors", "Update or delete one incident and anything below it", "Full access only", "All 20 routes")
	shown, hidden := visibleRoutes(t, a.body)
	if len(shown) != 20 || len(hidden) != 0 {
		t.Fatalf("unfiltered: %d shown, %d hidden", len(shown), len(hidden))
	}
	if !slices.Contains(shown, "GET,HEAD /v1/monitors/*") || !slices.Contains(shown, "POST,PUT,PATCH,DELETE /v1/analytics") {
		t.Fatalf("routes %v", shown)
	}
	if !strings.Contains(a.header.Get("Content-Security-Policy"), "connect-src 'self' https://api.example.com;") {
		t.Fatalf("the try-it panel cannot reach the API: %s", a.header.Get("Content-Security-Policy"))
	}

	// Filter: what a key with incidents:write and status_pages:read can call.
	a = f.do(pro, "GET", base+"/explore?scopes=incidents:write&scopes=status_pages:read&scopes=nonsense", nil)
	want(t, "filtered", a, 200, "These scopes open 6 of 20 routes", `value="incidents:write" checked`)
	shown, hidden = visibleRoutes(t, a.body)
	if len(shown) != 6 || len(hidden) != 14 {
		t.Fatalf("filtered: %d shown, %d hidden (rendered for the script to show)", len(shown), len(hidden))
	}
	for _, r := range shown {
		if !strings.Contains(r, "/v1/incidents") && !(strings.Contains(r, "/v1/status_pages") && strings.HasPrefix(r, "GET")) {
			t.Errorf("%s is shown for incidents:write and status_pages:read", r)
		}
	}
	// The presets are links that work without JavaScript.
	want(t, "presets", a, 200, `data-preset="status_pages:read monitors:read incidents:read maintenances:read analytics:read"`,
		`href="/user/api-console/explore?scopes=status_pages%3Aread&amp;scopes=incidents%3Awrite#filter"`)
}

func TestRoutesAPIIsThePolicy(t *testing.T) {
	policy, err := scope.Compile(append(scope.StatusPage("/api"),
		scope.Rule{Scope: "analytics:read", Methods: []string{"GET"}, Path: "/api/status_pages/*/uptime", Description: "Uptime of a status page"}))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(c *console.Config) { c.Policy = policy })
	a := f.do(pro, "GET", base+"/api/routes", nil)
	want(t, "routes", a, 200)
	var got console.RoutesResponse
	if err := json.Unmarshal([]byte(a.body), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Routes) != 21 || !reflect.DeepEqual(got.Routes, policy.Routes()) {
		t.Fatalf("routes %+v", got.Routes)
	}
	a = f.do(pro, "GET", base+"/api/routes?scopes=analytics:read", nil)
	got = console.RoutesResponse{}
	if err := json.Unmarshal([]byte(a.body), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Routes) != 3 || got.Routes[2].Path != "/api/status_pages/*/uptime" {
		t.Fatalf("analytics:read opens %+v", got.Routes)
	}
	want(t, "routes need a signed-in user", f.do(console.Identity{}, "GET", base+"/api/routes", nil), 401)
	want(t, "routes are read only", f.do(pro, "POST", base+"/api/routes", "{}"), 405)
}

func TestCreateFormShowsWhatTheScopesOpen(t *testing.T) {
	f := newFixture(t)
	a := f.do(pro, "GET", base+"/new?preset=incident-responder", nil)
	want(t, "preset", a, 200, `value="incidents:write" checked`, `value="status_pages:read" checked`, "These scopes open 6 of 20 routes", "Read only", "Incident responder")
	if strings.Contains(a.body, `value="monitors:read" checked`) {
		t.Fatal("the preset checked more than its scopes")
	}
	shown, hidden := visibleRoutes(t, a.body)
	if len(shown) != 6 || len(hidden) != 14 {
		t.Fatalf("%d shown, %d hidden", len(shown), len(hidden))
	}
	a = f.do(pro, "GET", base+"/new", nil)
	want(t, "empty form", a, 200, "All 20 routes")
	// A failed submit shows what the checked scopes open.
	a = f.do(pro, "POST", base+"/new", url.Values{"name": {""}, "scopes": {"monitors:read"}})
	want(t, "failed submit", a, 400, "These scopes open 2 of 20 routes")
}

func TestTryItWithoutJavaScriptShowsTheRequest(t *testing.T) {
	f := newFixture(t)
	a := f.do(pro, "GET", base+"/explore?route=10:GET&rest=7/updates%20x", nil)
	want(t, "try", a, 200, `<option value="10:GET" data-method="GET" data-path="/v1/incidents/*" selected>`,
		`curl -i -H &#34;Authorization: Bearer $SPK_API_KEY&#34; &#39;https://api.example.com/v1/incidents/7/updates%20x&#39;`,
		`data-origin="https://api.example.com"`)
	// The key field has no name: no form can send it to the console.
	if !regexp.MustCompile(`<input type="password" id="try-key" autocomplete="off"`).MatchString(a.body) || strings.Contains(a.body, `name="key"`) {
		t.Fatal("the key field could be submitted")
	}
	a = f.do(pro, "GET", base+"/explore?route=9:POST&body=%7B%22a%22%3A1%7D", nil)
	want(t, "post", a, 200, `curl -i -X POST`, `--data-raw &#39;{&#34;a&#34;:1}&#39;`)
	want(t, "free plan", f.do(free, "GET", base+"/explore", nil), 403, "API access needs a Pro plan")
}
