package caddymodule_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAccessLogWarning: a server that runs spk_auth and writes access logs
// without the key filter gets one warning at start, naming the server and
// the filter to add; with the filter, none.
func TestAccessLogWarning(t *testing.T) {
	filtered := "log {\noutput file %s\n" + readmeLogFilter + "\n}"
	for _, tc := range []struct {
		name, siteLog string
		defaultLog    bool // the filter on the default log too
		warn          bool
	}{
		{"unfiltered", "log {\noutput file %s\n}", true, true},
		{"filtered", filtered, true, false},
		// Requests to a host the site does not name still go to the
		// default log (Caddy's http.log.access).
		{"default log unfiltered", filtered, false, true},
		{"header only", "log {\noutput file %s\nformat filter {\nrequest>headers>X-Api-Key delete\n}\n}", true, true},
		{"no access log", "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			caddyLog := filepath.Join(dir, "caddy.log")
			site := ""
			if tc.siteLog != "" {
				site = strings.Replace(tc.siteLog, "%s", filepath.Join(dir, "access.log"), 1)
			}
			g := startSecGateway(t, secOptions{
				global: "log {\noutput file " + caddyLog + "\n" + map[bool]string{true: readmeLogFilter, false: "format json"}[tc.defaultLog] + "\n}",
				site:   site,
				auth:   "policy statuspage",
			})
			wantStatus(t, "no key", g.do("GET", "/v1/monitors"), 401)
			b, err := os.ReadFile(caddyLog)
			if err != nil {
				t.Fatal(err)
			}
			var warnings []string
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "access log would record API keys") {
					warnings = append(warnings, l)
				}
			}
			switch {
			case !tc.warn && len(warnings) > 0:
				t.Fatalf("unexpected warning: %s", warnings[0])
			case tc.warn && len(warnings) != 1:
				t.Fatalf("%d warnings, want 1:\n%s", len(warnings), b)
			case tc.warn && (!strings.Contains(warnings[0], `"server":"srv0"`) || !strings.Contains(warnings[0], `request>headers>X-Api-Key delete`)):
				t.Fatalf("the warning names no server or no filter: %s", warnings[0])
			}
		})
	}
}
