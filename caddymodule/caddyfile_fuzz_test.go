package caddymodule

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// fuzzDispenser tokenizes input as a Caddyfile would be (NewTestDispenser
// exits the process on a tokenizer error, which a fuzzer would hit at once).
func fuzzDispenser(input string) (*caddyfile.Dispenser, bool) {
	tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
	if err != nil {
		return nil, false
	}
	return caddyfile.NewDispenser(tokens), true
}

// FuzzAuthCaddyfile feeds arbitrary text to the spk_auth directive's
// unmarshaler: it never panics, and whatever it accepts survives a JSON
// round trip unchanged and passes Validate, so a Caddyfile that adapts
// also loads.
func FuzzAuthCaddyfile(f *testing.F) {
	for _, s := range []string{
		"spk_auth",
		"spk_auth {\n\tpolicy statuspage\n}",
		"spk_auth {\n\tpolicy statuspage /api/v2\n\tscope analytics:read GET,HEAD /api/v2/status_pages/*/uptime\n\tscope * * /admin/*\n\thide_credentials off\n\tfailure_limit 5 10s\n}",
		"spk_auth {\n\tfailure_limit off\n}",
		"spk_auth {\n\tpolicy statuspage //\n}",
		"spk_auth {\n\tscope monitors:read get /x\n}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		d, ok := fuzzDispenser(input)
		if !ok {
			return
		}
		h := new(Auth)
		if err := h.UnmarshalCaddyfile(d); err != nil {
			return
		}
		b, err := json.Marshal(h)
		if err != nil {
			t.Fatalf("%q: marshal: %v", input, err)
		}
		var back Auth
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%q: %s does not unmarshal: %v", input, b, err)
		}
		if b2, _ := json.Marshal(&back); !bytes.Equal(b, b2) {
			t.Fatalf("%q: JSON round trip %s -> %s", input, b, b2)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("%q accepted as %s, but Validate: %v", input, b, err)
		}
	})
}

// FuzzAppCaddyfile does the same for the spk global option.
func FuzzAppCaddyfile(f *testing.F) {
	for _, s := range []string{
		"spk",
		"spk {\n\tstorage sqlite /var/lib/spk.db\n\tcache_ttl 20s\n\tnegative_cache_ttl 2s\n\tapi_plans pro business\n\tchange_poll_interval 500ms\n}",
		"spk {\n\tstorage postgres {env.SPK_DATABASE_URL}\n}",
		"spk {\n\tstorage sqlite\n}",
		"spk {\n\tcache_ttl 61s\n}",
		"spk {\n\tapi_plans \"\"\n}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		d, ok := fuzzDispenser(input)
		if !ok {
			return
		}
		a := new(App)
		if err := a.UnmarshalCaddyfile(d); err != nil {
			return
		}
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatalf("%q: marshal: %v", input, err)
		}
		var back App
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%q: %s does not unmarshal: %v", input, b, err)
		}
		if b2, _ := json.Marshal(&back); !bytes.Equal(b, b2) {
			t.Fatalf("%q: JSON round trip %s -> %s", input, b, b2)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("%q accepted as %s, but Validate: %v", input, b, err)
		}
		for _, p := range back.APIPlans {
			if p == "" {
				t.Fatalf("%q: the empty plan accepted", input)
			}
		}
	})
}
