package scope

import (
	"net/url"
	"strings"
	"testing"
)

func TestParseWriteIncludesRead(t *testing.T) {
	s, err := Parse([]string{"monitors:write"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		scope string
		want  bool
	}{
		{"monitors:read", true}, {"monitors:write", true}, {"incidents:read", false}, {"*", false},
	} {
		r, err := ParseReq(tc.scope)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Allows(r); got != tc.want {
			t.Errorf("monitors:write allows %s = %v, want %v", tc.scope, got, tc.want)
		}
	}
	full, _ := Parse(nil)
	if full != Full || !full.Allows(Only) {
		t.Fatal("no scopes must mean full access")
	}
	if _, err := Parse([]string{"monitors:admin"}); err == nil || !strings.Contains(err.Error(), `"monitors:admin"`) {
		t.Fatalf("unknown scope error = %v", err)
	}
	if _, err := ParseReq("nope"); err == nil {
		t.Fatal("unknown requirement accepted")
	}
}

func TestNormalize(t *testing.T) {
	got, err := Normalize([]string{"analytics:read", "monitors:read", "analytics:read"})
	if err != nil || strings.Join(got, ",") != "monitors:read,analytics:read" {
		t.Fatalf("got %v %v", got, err)
	}
	if got, err := Normalize([]string{}); got != nil || err != nil {
		t.Fatalf("empty: %v %v", got, err)
	}
	if Header(nil) != "*" || Header([]string{"a", "b"}) != "a,b" {
		t.Fatal("header")
	}
}

func TestStatusPagePolicy(t *testing.T) {
	p, err := Compile(StatusPage("/v1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/v1/monitors", "monitors:read"},
		{"HEAD", "/v1/monitors/42", "monitors:read"},
		{"GET", "/v1/monitors/", "monitors:read"},
		{"POST", "/v1/monitors", "monitors:write"},
		{"DELETE", "/v1/monitors/42", "monitors:write"},
		{"PATCH", "/v1/incidents/1/updates", "incidents:write"},
		{"PUT", "/v1/maintenances/1", "maintenances:write"},
		{"GET", "/v1/status_pages/3/monitors", "status_pages:read"},
		{"POST", "/v1/status_pages", "*"},
		{"DELETE", "/v1/analytics/x", "*"},
		{"GET", "/v1/analytics/uptime", "analytics:read"},
		{"GET", "/v1/monitorsX", "*"},
		{"GET", "/v1/Monitors", "*"},
		{"get", "/v1/monitors", "*"},
		{"TRACE", "/v1/monitors", "*"},
		{"OPTIONS", "/v1/monitors", "*"},
		{"BREW", "/v1/monitors", "*"},
		{"GET", "/v1", "*"},
		{"GET", "/v2/monitors", "*"},
		{"GET", "/", "*"},
	} {
		if got := p.Required(tc.method, tc.path).String(); got != tc.want {
			t.Errorf("%s %s needs %s, want %s", tc.method, tc.path, got, tc.want)
		}
	}
}

func TestLaterRulesRefine(t *testing.T) {
	rules := append(StatusPage("/api/"),
		Rule{Scope: "analytics:read", Methods: []string{"GET"}, Path: "/api/status_pages/*/uptime"},
		Rule{Scope: "*", Path: "/api/monitors/*/secrets/*"},
		Rule{Scope: "monitors:read", Methods: []string{"POST"}, Path: "/api/monitors/search"},
	)
	p, err := Compile(rules)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/api/status_pages/7/uptime", "analytics:read"},
		{"GET", "/api/status_pages/7/uptime/x", "status_pages:read"},
		{"GET", "/api/status_pages//uptime", "status_pages:read"},
		{"GET", "/api/monitors/1/secrets/a", "*"},
		{"GET", "/api/monitors/1/secrets", "monitors:read"},
		{"POST", "/api/monitors/search", "monitors:read"},
		{"POST", "/api/monitors/search/", "monitors:write"},
	} {
		if got := p.Required(tc.method, tc.path).String(); got != tc.want {
			t.Errorf("%s %s needs %s, want %s", tc.method, tc.path, got, tc.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	for _, r := range []Rule{
		{Scope: "monitors:admin", Path: "/x"},
		{Scope: "*", Methods: []string{"get"}, Path: "/x"},
		{Scope: "*", Methods: []string{"BREW"}, Path: "/x"},
		{Scope: "*", Path: "x"},
		{Scope: "*", Path: "/a//b"},
		{Scope: "*", Path: "/a/../b"},
		{Scope: "*", Path: "/a*"},
		{Scope: "*", Path: "/a/%2e"},
	} {
		if _, err := Compile([]Rule{r}); err == nil {
			t.Errorf("rule %+v accepted", r)
		} else if !strings.Contains(err.Error(), "rule 1") {
			t.Errorf("error does not name the rule: %v", err)
		}
	}
}

func TestCanonical(t *testing.T) {
	for _, tc := range []struct {
		uri     string
		want    string // "" = refused
		changed bool
	}{
		{"/v1/monitors", "/v1/monitors", false},
		{"/v1/monitors/", "/v1/monitors/", false},
		{"/", "/", false},
		{"/v1//monitors", "/v1/monitors", true},
		{"//v1/monitors", "/v1/monitors", true},
		{"/v1/%6Donitors", "/v1/monitors", true},
		{"/v1/caf%C3%A9", "/v1/café", false},
		{"/v1/analytics/../monitors", "", false},
		{"/v1/analytics/%2e%2e/monitors", "", false},
		{"/v1/analytics/%2E%2E/monitors", "", false},
		{"/v1/analytics/.%2e/monitors", "", false},
		{"/v1/./monitors", "", false},
		{"/v1/monitors/..", "", false},
		{"/v1/analytics%2fmonitors", "", false},
		{"/v1/analytics%2Fmonitors", "", false},
		{"/v1/analytics/..%2fmonitors", "", false},
		{"/v1/analytics%5cmonitors", "", false},
		{"/v1/monitors%00", "", false},
		{"/v1/%252e%252e/monitors", "", false},
		{"/v1/monitors%0a", "", false},
		{"/v1/..a/b", "/v1/..a/b", false},
		{"/v1/analytics/..;/monitors", "", false},
		{"/v1/analytics/..;jsessionid=x/monitors", "", false},
		{"/v1/analytics/.;/x", "", false},
		{"/v1/analytics/%2e%2e;/monitors", "", false},
		{"/v1/analytics/..%3b/monitors", "", false},
		{"/v1/analytics;/../monitors", "", false},
		{"/v1/monitors;jsessionid=x", "/v1/monitors;jsessionid=x", false},
		{"/v1/monitors/a;b", "/v1/monitors/a;b", false},
		{"/v1/...;/x", "/v1/...;/x", false},
	} {
		u, err := url.ParseRequestURI(tc.uri)
		if err != nil {
			t.Fatalf("%s: %v", tc.uri, err)
		}
		got, changed, err := Canonical(u.Path, u.RawPath)
		if tc.want == "" {
			if err == nil {
				t.Errorf("%s accepted as %q", tc.uri, got)
			}
			continue
		}
		if err != nil || got != tc.want || changed != tc.changed {
			t.Errorf("%s = %q changed=%v err=%v, want %q changed=%v", tc.uri, got, changed, err, tc.want, tc.changed)
		}
	}
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	p, _ := Compile(StatusPage("/v1"))
	s, _ := Parse([]string{"monitors:read"})
	n := testing.AllocsPerRun(100, func() {
		c, _, _ := Canonical("/v1/monitors/42", "")
		_ = s.Allows(p.Required("GET", c))
	})
	if n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

// FuzzCanonical checks that whatever Canonical accepts is a fixed point
// that no upstream can resolve differently: no dot segments, no empty
// segments, no encoded or literal specials, and it re-parses to itself.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"/v1/monitors", "/v1/../x", "/%2e%2e/", "//a//b/", "/a%2fb", "/a%5cb", "/%252e", "/a/./b", "/é", "/a/..;/b", "/a/.;x/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		u, err := url.ParseRequestURI(uri)
		if err != nil || u.Opaque != "" {
			return
		}
		got, _, err := Canonical(u.Path, u.RawPath)
		if err != nil {
			return
		}
		if !strings.HasPrefix(got, "/") || strings.Contains(got, "//") || strings.ContainsAny(got, "\\%\x00") {
			t.Fatalf("%q -> %q", uri, got)
		}
		for seg := range strings.SplitSeq(got, "/") {
			seg, _, _ = strings.Cut(seg, ";") // "..;x" is ".." to a servlet container
			if seg == "." || seg == ".." {
				t.Fatalf("%q -> %q has a dot segment", uri, got)
			}
		}
		// Forwarded in default encoding, the upstream decodes the same path.
		fwd := (&url.URL{Path: got}).EscapedPath()
		back, err := url.PathUnescape(fwd)
		if err != nil || back != got {
			t.Fatalf("%q forwarded as %q decodes to %q", got, fwd, back)
		}
		again, changed, err := Canonical(got, "")
		if err != nil || again != got || changed {
			t.Fatalf("not a fixed point: %q -> %q %v %v", got, again, changed, err)
		}
	})
}

// FuzzPolicy checks the matcher never panics and that a path that only an
// exact rule names needs that rule's scope only at that exact path.
func FuzzPolicy(f *testing.F) {
	p, _ := Compile(StatusPage("/v1"))
	f.Add("GET", "/v1/monitors/1")
	f.Add("DELETE", "/v1/incidents")
	f.Add("get", "/v1//x")
	f.Fuzz(func(t *testing.T, method, path string) {
		r := p.Required(method, path)
		if r == Only {
			return
		}
		name := r.String()
		res, _, _ := strings.Cut(name, ":")
		if !strings.HasPrefix(path, "/v1/"+res) {
			t.Fatalf("%s %s needs %s", method, path, name)
		}
		if method != "GET" && method != "HEAD" && strings.HasSuffix(name, ":read") {
			t.Fatalf("%s %s needs only %s", method, path, name)
		}
	})
}

func BenchmarkRequired(b *testing.B) {
	p, _ := Compile(StatusPage("/v1"))
	b.ReportAllocs()
	for b.Loop() {
		_ = p.Required("GET", "/v1/analytics/uptime/7")
	}
}
