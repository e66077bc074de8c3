package caddymodule_test

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestBadLimits checks that each mistake in a limits block fails at adapt
// time, naming the line and the problem.
func TestBadLimits(t *testing.T) {
	opt := func(body string) string { return "{\n\tspk {\n" + body + "\t}\n}\n" }
	for _, tc := range []struct {
		name, caddyfile, want, line string
	}{
		{"no plan", opt("\t\tlimits {\n\t\t\trate 1 1s\n\t\t}\n"), "limits needs a plan name", "Caddyfile:3"},
		{"empty block", opt("\t\tlimits pro {\n\t\t}\n"), "limits pro has neither a rate nor a quota", "Caddyfile:4"},
		{"zero rate", opt("\t\tlimits pro {\n\t\t\trate 0 1s\n\t\t}\n"), "rate: requests must be a positive whole number", "Caddyfile:4"},
		{"negative rate", opt("\t\tlimits pro {\n\t\t\trate -5 1s\n\t\t}\n"), "rate: requests must be a positive whole number", "Caddyfile:4"},
		{"rate without window", opt("\t\tlimits pro {\n\t\t\trate 5\n\t\t}\n"), "rate needs a window", "Caddyfile:4"},
		{"bad window", opt("\t\tlimits pro {\n\t\t\trate 5 soon\n\t\t}\n"), `rate window "soon"`, "Caddyfile:4"},
		{"zero window", opt("\t\tlimits pro {\n\t\t\trate 5 0s\n\t\t}\n"), "window must be between", "Caddyfile:4"},
		{"negative window", opt("\t\tlimits pro {\n\t\t\trate 5 -1s\n\t\t}\n"), "window must be between", "Caddyfile:4"},
		{"unknown period", opt("\t\tlimits pro {\n\t\t\tquota 5 week\n\t\t}\n"), `unknown period "week"`, "Caddyfile:4"},
		{"quota without period", opt("\t\tlimits pro {\n\t\t\tquota 5\n\t\t}\n"), "quota needs a period", "Caddyfile:4"},
		{"zero quota", opt("\t\tlimits pro {\n\t\t\tquota 0 day\n\t\t}\n"), "quota: requests must be a positive whole number", "Caddyfile:4"},
		{"extra argument", opt("\t\tlimits pro {\n\t\t\tquota 5 day please\n\t\t}\n"), "wrong argument count", "Caddyfile:4"},
		{"unknown subdirective", opt("\t\tlimits pro {\n\t\t\tburst 5\n\t\t}\n"), "unrecognized limits subdirective burst", "Caddyfile:4"},
		{"rate twice", opt("\t\tlimits pro {\n\t\t\trate 5 1s\n\t\t\trate 6 1s\n\t\t}\n"), "rate given twice", "Caddyfile:5"},
		{"plan twice", opt("\t\tlimits pro {\n\t\t\trate 5 1s\n\t\t}\n\t\tlimits PRO {\n\t\t\trate 6 1s\n\t\t}\n"), "limits pro given twice", "Caddyfile:6"},
		{"sync interval too long", opt("\t\tlimit_sync_interval 1m\n"), "limit_sync_interval 1m out of range", "Caddyfile:3"},
		{"flush interval too long", opt("\t\tusage_flush_interval 11s\n"), "usage_flush_interval 11s out of range", "Caddyfile:3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(tc.caddyfile), map[string]any{"filename": "Caddyfile"})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasSuffix(err.Error(), "at "+tc.line) {
				t.Fatalf("got %v, want an error containing %q at %s", err, tc.want, tc.line)
			}
		})
	}
}
