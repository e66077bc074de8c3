package scope

import (
	"slices"
	"testing"
)

func TestRoutesListTheRulesThatDecide(t *testing.T) {
	rules := append(StatusPage("/v1"),
		Rule{Scope: "analytics:read", Methods: []string{"GET"}, Path: "/v1/status_pages/*/uptime", Description: "Uptime of a status page"},
		// Takes GET over from the built-in rule of the same pattern.
		Rule{Scope: "monitors:write", Methods: []string{"GET"}, Path: "/v1/monitors/*"},
	)
	p, err := Compile(rules)
	if err != nil {
		t.Fatal(err)
	}
	routes := p.Routes()
	find := func(path, method string) []Route {
		var out []Route
		for _, r := range routes {
			if r.Path == path && (slices.Contains(r.Methods, method) || slices.Contains(r.Methods, "*")) {
				out = append(out, r)
			}
		}
		return out
	}
	// Every route's scope is what Required says for a path it matches.
	for _, c := range []struct{ path, method, sample, scope string }{
		{"/v1/monitors", "GET", "/v1/monitors", "monitors:read"},
		{"/v1/monitors", "DELETE", "/v1/monitors", "monitors:write"},
		{"/v1/monitors/*", "GET", "/v1/monitors/7", "monitors:write"},
		{"/v1/monitors/*", "HEAD", "/v1/monitors/7", "monitors:read"},
		{"/v1/analytics", "POST", "/v1/analytics", "*"},
		{"/v1/status_pages/*/uptime", "GET", "/v1/status_pages/3/uptime", "analytics:read"},
	} {
		got := find(c.path, c.method)
		if len(got) != 1 {
			t.Fatalf("%s %s is listed %d times: %+v", c.method, c.path, len(got), got)
		}
		if got[0].Scope != c.scope || got[0].Req() != p.Required(c.method, c.sample) {
			t.Errorf("%s %s: listed %s, enforced %s", c.method, c.path, got[0].Scope, p.Required(c.method, c.sample))
		}
	}
	if r := find("/v1/monitors/*", "HEAD")[0]; !slices.Equal(r.Methods, []string{"HEAD"}) {
		t.Errorf("GET was taken over, HEAD not: %v", r.Methods)
	}
	for _, r := range routes {
		if r.Description == "" && r.Path != "/v1/monitors/*" {
			t.Errorf("%v %s has no description", r.Methods, r.Path)
		}
	}
	if got := find("/v1/incidents", "GET")[0].Description; got != "List incidents" {
		t.Errorf("description %q", got)
	}
	if got := find("/v1/incidents", "POST")[0].Description; got != "Create an incident" {
		t.Errorf("description %q", got)
	}
}

func TestRoutesOfCatchAll(t *testing.T) {
	p, err := Compile([]Rule{{Scope: "monitors:read", Path: "/v1/*"}, {Scope: "*", Methods: []string{"*"}, Path: "/v1/*"}})
	if err != nil {
		t.Fatal(err)
	}
	routes := p.Routes()
	if len(routes) != 1 || routes[0].Scope != "*" || !slices.Equal(routes[0].Methods, []string{"*"}) {
		t.Fatalf("routes %+v", routes)
	}
}
