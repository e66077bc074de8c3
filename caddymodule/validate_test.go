package caddymodule_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/spkgate/spkgate/caddymodule"
)

// TestValidateRanges checks that a JSON config gets the same range checks
// as a Caddyfile: every duration and count option is checked by Validate,
// not only by the Caddyfile parser.
func TestValidateRanges(t *testing.T) {
	for _, tc := range []struct {
		name, json, want string
		module           func() caddy.Validator
	}{
		{"cache_ttl too long", `{"cache_ttl":"2h"}`, "cache_ttl 2h0m0s out of range", app},
		{"cache_ttl negative", `{"cache_ttl":"-1s"}`, "cache_ttl -1s out of range", app},
		{"negative_cache_ttl too long", `{"negative_cache_ttl":"11s"}`, "negative_cache_ttl 11s out of range", app},
		{"change_poll_interval too long", `{"change_poll_interval":"2m"}`, "change_poll_interval 2m0s out of range", app},
		{"change_poll_interval negative", `{"change_poll_interval":"-1s"}`, "change_poll_interval -1s out of range", app},
		{"failure_limit below -1", `{"failure_limit":-2}`, "failure_limit -2 out of range", auth},
		{"failure_window negative", `{"failure_window":"-1s"}`, "failure_window -1s out of range", auth},
		{"failure_window too long", `{"failure_window":"25h"}`, "failure_window 25h0m0s out of range", auth},
		{"defaults", `{}`, "", app},
		{"upper bounds", `{"cache_ttl":"1h","negative_cache_ttl":"10s","change_poll_interval":"1m"}`, "", app},
		{"auth defaults", `{}`, "", auth},
		{"auth upper bound", `{"failure_limit":-1,"failure_window":"24h"}`, "", auth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.module()
			if err := json.Unmarshal([]byte(tc.json), m); err != nil {
				t.Fatal(err)
			}
			err := m.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func app() caddy.Validator  { return new(caddymodule.App) }
func auth() caddy.Validator { return new(caddymodule.Auth) }
