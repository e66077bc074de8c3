package caddymodule_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

var update = flag.Bool("update", false, "rewrite the golden files of the adapt tests")

// TestAdaptGolden pins the JSON that `caddy adapt` makes of each
// testdata/adapt/*.caddyfile (in the .json beside it). Run with -update to
// rewrite the golden files after an intended change, and read the diff.
func TestAdaptGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/adapt/*.caddyfile")
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			got := adapt(t, string(in))
			golden := strings.TrimSuffix(f, ".caddyfile") + ".json"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("adapted JSON differs from %s:\n%s", golden, got)
			}
			// The JSON must load into the modules (field names, types).
			var cfg caddy.Config
			if err := json.Unmarshal(got, &cfg); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func adapt(t *testing.T, caddyfile string) []byte {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, out, "", "\t"); err != nil {
		t.Fatal(err)
	}
	buf.WriteByte('\n')
	return buf.Bytes()
}

// TestBadCaddyfile checks that each mistake fails at adapt time with a
// message that names the file, the line and the problem.
func TestBadCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name, caddyfile, want, line string
	}{
		{"unknown app option", "{\n\tspk {\n\t\tcolour blue\n\t}\n}\n", "unrecognized subdirective colour", "Caddyfile:3"},
		{"unknown driver", "{\n\tspk {\n\t\tstorage mysql x\n\t}\n}\n", `unknown storage driver "mysql"`, "Caddyfile:3"},
		{"postgres without dsn", "{\n\tspk {\n\t\tstorage postgres\n\t}\n}\n", "storage postgres needs a DSN", "Caddyfile:3"},
		{"ttl too long", "{\n\tspk {\n\t\tcache_ttl 2h\n\t}\n}\n", "cache_ttl 2h out of range", "Caddyfile:3"},
		{"postgres listen without dsn", "{\n\tspk {\n\t\tstorage postgres {env.DB} {\n\t\t\tlisten\n\t\t}\n\t}\n}\n", "listen needs the DSN", "Caddyfile:4"},
		{"postgres listen twice", "{\n\tspk {\n\t\tstorage postgres a {\n\t\t\tlisten b\n\t\t\tlisten c\n\t\t}\n\t}\n}\n", "listen given twice", "Caddyfile:5"},
		{"postgres unknown subdirective", "{\n\tspk {\n\t\tstorage postgres a {\n\t\t\tpool 5\n\t\t}\n\t}\n}\n", "unrecognized storage postgres subdirective pool", "Caddyfile:4"},
		{"negative ttl too long", "{\n\tspk {\n\t\tnegative_cache_ttl 11s\n\t}\n}\n", "negative_cache_ttl 11s out of range", "Caddyfile:3"},
		{"bad duration", "{\n\tspk {\n\t\tcache_ttl soon\n\t}\n}\n", "cache_ttl:", "Caddyfile:3"},
		{"no plans", "{\n\tspk {\n\t\tapi_plans\n\t}\n}\n", "api_plans needs at least one plan", "Caddyfile:3"},
		{"empty plan", "{\n\tspk {\n\t\tapi_plans pro \"{$SPK_TEST_UNSET_PLAN}\"\n\t}\n}\n", "a plan name must not be empty", "Caddyfile:3"},
		{"unknown policy", ":80 {\n\tspk_auth {\n\t\tpolicy github\n\t}\n}\n", `unknown policy "github"`, "Caddyfile:3"},
		{"policy base path with an empty segment", ":80 {\n\tspk_auth {\n\t\tpolicy statuspage /api//v1\n\t}\n}\n", `policy base path "/api//v1" must be a plain path`, "Caddyfile:3"},
		{"unknown scope", ":80 {\n\tspk_auth {\n\t\tscope monitors:admin GET /v1/x\n\t}\n}\n", `scope: (monitors:admin GET /v1/x): unknown scope "monitors:admin"`, "Caddyfile:3"},
		{"lower-case method", ":80 {\n\tspk_auth {\n\t\tscope * get /v1/x\n\t}\n}\n", `scope: (* get /v1/x): method "get"`, "Caddyfile:3"},
		{"short scope line", ":80 {\n\tspk_auth {\n\t\tscope monitors:read /v1/x\n\t}\n}\n", "scope needs three arguments", "Caddyfile:3"},
		{"relative pattern", ":80 {\n\tspk_auth {\n\t\tscope * GET v1/x\n\t}\n}\n", `must start with /`, "Caddyfile:3"},
		{"bad hide", ":80 {\n\tspk_auth {\n\t\thide_credentials maybe\n\t}\n}\n", "hide_credentials must be on or off", "Caddyfile:3"},
		{"bad failure limit", ":80 {\n\tspk_auth {\n\t\tfailure_limit many\n\t}\n}\n", `failure_limit must be a positive count or off, not "many"`, "Caddyfile:3"},
		{"bad failure window", ":80 {\n\tspk_auth {\n\t\tfailure_limit 5 soon\n\t}\n}\n", `failure_limit window "soon" must be a positive duration`, "Caddyfile:3"},
		{"unknown subdirective", ":80 {\n\tspk_auth {\n\t\tpolicy statuspage\n\t\trealm x\n\t}\n}\n", "unrecognized subdirective realm", "Caddyfile:4"},
		{"inline argument", ":80 {\n\tspk_auth statuspage\n}\n", "wrong argument count", "Caddyfile:2"},
		{"console unknown subdirective", ":80 {\n\tspk_console {\n\t\tplan {spk_plan}\n\t\tcolour blue\n\t}\n}\n", "unrecognized subdirective colour", "Caddyfile:4"},
		{"console relative base path", ":80 {\n\tspk_console {\n\t\tbase_path user/api\n\t}\n}\n", `base path "user/api" must start with /`, "Caddyfile:3"},
		{"console wildcard base path", ":80 {\n\tspk_console {\n\t\tbase_path /user/*\n\t}\n}\n", "must be a plain path", "Caddyfile:3"},
		{"console base path twice", ":80 {\n\tspk_console {\n\t\tbase_path /a\n\t\tbase_path /b\n\t}\n}\n", "base_path given twice", "Caddyfile:4"},
		{"console script upgrade url", ":80 {\n\tspk_console {\n\t\tupgrade_url javascript:alert(1)\n\t}\n}\n", "upgrade_url: \"javascript:alert(1)\" must be an http or https URL", "Caddyfile:3"},
		{"console relative base url", ":80 {\n\tspk_console {\n\t\tbase_url api.example.com/v1\n\t}\n}\n", "base_url:", "Caddyfile:3"},
		{"console plan without value", ":80 {\n\tspk_console {\n\t\tplan\n\t}\n}\n", "wrong argument count", "Caddyfile:3"},
		{"console two accounts", ":80 {\n\tspk_console {\n\t\taccount {a} {b}\n\t}\n}\n", "wrong argument count", "Caddyfile:3"},
		{"console empty account", ":80 {\n\tspk_console {\n\t\taccount \"\"\n\t}\n}\n", "account must not be empty", "Caddyfile:3"},
		{"console inline argument", ":80 {\n\tspk_console console\n}\n", "wrong argument count", "Caddyfile:2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(tc.caddyfile), map[string]any{"filename": "Caddyfile"})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasSuffix(err.Error(), "at "+tc.line) {
				t.Fatalf("got %v, want an error containing %q at %s", err, tc.want, tc.line)
			}
		})
	}
}
