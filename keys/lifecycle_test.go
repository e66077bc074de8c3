package keys_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
)

// clock is a settable clock for a Manager.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func auditedManager(t *testing.T) (*keys.Manager, *observer.ObservedLogs, *clock) {
	m := manager(t)
	core, logs := observer.New(zap.InfoLevel)
	m.AuditLog = zap.New(core).Named("spk.audit")
	c := &clock{t: time.Now()}
	m.Now = c.now
	return m, logs, c
}

var consoleActor = keys.Actor{Name: "alice@example.com", Source: keys.SourceConsole, IP: "203.0.113.9", UserAgent: "Mozilla/5.0"}

func decodeUpdate(t *testing.T, body string) (keys.UpdateRequest, error) {
	t.Helper()
	var req keys.UpdateRequest
	r := httptest.NewRequest("PATCH", "/", strings.NewReader(body))
	err := keys.DecodeJSON(httptest.NewRecorder(), r, &req)
	return req, err
}

func fieldOf(err error) string {
	var fe *keys.FieldError
	if errors.As(err, &fe) {
		return fe.Field
	}
	return ""
}

func TestUpdate(t *testing.T) {
	m, logs, _ := auditedManager(t)
	ctx := context.Background()
	c, err := m.Create(ctx, consoleActor, "acct_a", keys.CreateRequest{Name: "ci", Scopes: []string{"monitors:write"}})
	if err != nil {
		t.Fatal(err)
	}
	req, err := decodeUpdate(t, `{"name":" deploy ","scopes":["incidents:read"],"allowed_ips":["203.0.113.0/24","2001:db8::1"],
		"rate_limit":{"requests":10,"window":"1s"}}`)
	if err != nil {
		t.Fatal(err)
	}
	k, err := m.Update(ctx, consoleActor, "acct_a", c.ID, req)
	if err != nil {
		t.Fatal(err)
	}
	wantIPs := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::1/128")}
	if k.Name != "deploy" || !slices.Equal(k.Scopes, []string{"incidents:read"}) || !slices.Equal(k.AllowedIPs, wantIPs) ||
		k.RateLimit == nil || *k.RateLimit != (keystore.RateLimit{Requests: 10, Window: time.Second}) {
		t.Fatalf("updated key = %+v", k)
	}
	b, _ := json.Marshal(k)
	if !strings.Contains(string(b), `"rate_limit":{"requests":10,"window":"1s"}`) ||
		!strings.Contains(string(b), `"allowed_ips":["203.0.113.0/24","2001:db8::1/128"]`) {
		t.Errorf("key JSON = %s", b)
	}

	// Partial: only the name; null clears.
	req, _ = decodeUpdate(t, `{"rate_limit":null,"allowed_ips":null}`)
	k, err = m.Update(ctx, consoleActor, "acct_a", c.ID, req)
	if err != nil || k.Name != "deploy" || k.RateLimit != nil || k.AllowedIPs != nil || k.Scopes[0] != "incidents:read" {
		t.Fatalf("partial update = %+v, %v", k, err)
	}
	req, _ = decodeUpdate(t, `{"scopes":null}`)
	if k, err = m.Update(ctx, consoleActor, "acct_a", c.ID, req); err != nil || len(k.Scopes) != 0 || k.Scopes == nil {
		t.Fatalf("scopes:null = %q, %v; want full access", k.Scopes, err)
	}

	evs, err := m.Events(ctx, "acct_a", keystore.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 4 || evs[0].Action != keystore.ActionKeyUpdated || evs[3].Action != keystore.ActionKeyCreated {
		t.Fatalf("events = %+v", evs)
	}
	// One audit log line per event, with the same fields, and no secret.
	lines := logs.FilterMessage("audit event").All()
	if len(lines) != 4 {
		t.Fatalf("%d audit lines, want 4", len(lines))
	}
	for i, l := range lines {
		f := l.ContextMap()
		ev := evs[3-i]
		if l.LoggerName != "spk.audit" || f["event_id"] != ev.ID || f["action"] != string(ev.Action) ||
			f["actor"] != "alice@example.com" || f["source"] != "console" || f["ip"] != "203.0.113.9" ||
			f["user_agent"] != "Mozilla/5.0" || f["key_id"] != c.ID || f["account_id"] != "acct_a" {
			t.Errorf("audit line %d = %v, want event %+v", i, f, ev)
		}
		if _, ok := f["details"].(map[string]any); !ok {
			t.Errorf("audit line %d details = %T, want an object", i, f["details"])
		}
		if strings.Contains(l.Message+jsonString(f), c.Secret) {
			t.Errorf("audit line %d has the secret", i)
		}
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestUpdateRefused: every bad edit is a 400 or 404 with nothing changed
// and no event.
func TestUpdateRefused(t *testing.T) {
	m, logs, clk := auditedManager(t)
	ctx := context.Background()
	c, err := m.Create(ctx, consoleActor, "acct_a", keys.CreateRequest{Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	soon := clk.t.Add(time.Hour)
	expiring, err := m.Create(ctx, consoleActor, "acct_a", keys.CreateRequest{Name: "soon", ExpiresAt: &soon})
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := m.Create(ctx, consoleActor, "acct_a", keys.CreateRequest{Name: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Revoke(ctx, consoleActor, "acct_a", revoked.ID); err != nil {
		t.Fatal(err)
	}
	before := len(logs.All())
	evsBefore, _ := m.Events(ctx, "acct_a", keystore.EventQuery{})

	for _, tc := range []struct {
		name, body, field string
	}{
		{"unknown field", `{"name":"x","admin":true}`, "admin"},
		{"name of the wrong type", `{"name":5}`, "name"},
		{"null name", `{"name":null}`, "name"},
		{"empty name", `{"name":"  "}`, "name"},
		{"unknown scope", `{"scopes":["monitors:read","root"]}`, "scopes"},
		{"past expiry", `{"expires_at":"2001-01-01T00:00:00Z"}`, "expires_at"},
		{"bad expiry", `{"expires_at":"tomorrow"}`, "expires_at"},
		{"bad CIDR", `{"allowed_ips":["10.0.0.0/33"]}`, "allowed_ips"},
		{"not an address", `{"allowed_ips":["example.com"]}`, "allowed_ips"},
		{"host bits", `{"allowed_ips":["10.1.2.3/8"]}`, "allowed_ips"},
		{"IPv4-mapped", `{"allowed_ips":["::ffff:10.0.0.1"]}`, "allowed_ips"},
		{"too many IPs", `{"allowed_ips":[` + strings.Repeat(`"10.0.0.1",`, keys.MaxAllowedIPs) + `"10.0.0.2"]}`, "allowed_ips"},
		{"rate too high", `{"rate_limit":{"requests":10001,"window":"1s"}}`, "rate_limit"},
		{"rate window too short", `{"rate_limit":{"requests":1,"window":"10ms"}}`, "rate_limit"},
		{"rate window too long", `{"rate_limit":{"requests":1,"window":"48h"}}`, "rate_limit"},
		{"no requests", `{"rate_limit":{"requests":0,"window":"1s"}}`, "rate_limit"},
		{"rate unknown field", `{"rate_limit":{"requests":1,"window":"1s","burst":5}}`, "rate_limit"},
		{"rate as text", `{"rate_limit":"10/1s"}`, "rate_limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := decodeUpdate(t, tc.body)
			if err == nil {
				_, err = m.Update(ctx, consoleActor, "acct_a", c.ID, req)
			}
			if got := fieldOf(err); got != tc.field {
				t.Fatalf("err = %v (field %q), want a %q field error", err, got, tc.field)
			}
			w := httptest.NewRecorder()
			keys.WriteError(w, err)
			if w.Code != 400 || !strings.Contains(w.Body.String(), `"field":"`+tc.field+`"`) {
				t.Errorf("answer %d %s", w.Code, w.Body)
			}
		})
	}
	rename := keys.UpdateRequest{Name: keys.Some("renamed")}
	for name, f := range map[string]func() error{
		"another account's key": func() error { _, err := m.Update(ctx, consoleActor, "acct_b", c.ID, rename); return err },
		"unknown key":           func() error { _, err := m.Update(ctx, consoleActor, "acct_a", "key_nope", rename); return err },
		"revoked key":           func() error { _, err := m.Update(ctx, consoleActor, "acct_a", revoked.ID, rename); return err },
		"expired key": func() error {
			clk.t = soon.Add(time.Second)
			defer func() { clk.t = soon.Add(-time.Hour) }()
			_, err := m.Update(ctx, consoleActor, "acct_a", expiring.ID, rename)
			return err
		},
		"roll of another account's key": func() error { _, err := m.Roll(ctx, consoleActor, "acct_b", c.ID, keys.RollRequest{}); return err },
		"roll of a revoked key": func() error {
			_, err := m.Roll(ctx, consoleActor, "acct_a", revoked.ID, keys.RollRequest{})
			return err
		},
		"roll of an expired key": func() error {
			clk.t = soon.Add(time.Second)
			defer func() { clk.t = soon.Add(-time.Hour) }()
			_, err := m.Roll(ctx, consoleActor, "acct_a", expiring.ID, keys.RollRequest{})
			return err
		},
	} {
		err := f()
		w := httptest.NewRecorder()
		keys.WriteError(w, err)
		if !errors.Is(err, keystore.ErrNotFound) || w.Code != 404 {
			t.Errorf("%s: %v, answered %d; want 404", name, err, w.Code)
		}
	}
	for _, grace := range []string{"-1h", "169h", "8d", "soon", "1 day"} {
		_, err := m.Roll(ctx, consoleActor, "acct_a", c.ID, keys.RollRequest{Grace: grace})
		if fieldOf(err) != "grace" {
			t.Errorf("grace %q: %v, want a grace field error", grace, err)
		}
	}
	if _, err := m.Update(ctx, keys.Actor{Name: "x", Source: "web"}, "acct_a", c.ID, rename); err == nil {
		t.Errorf("an actor of an unknown source was accepted")
	}

	k, err := m.Store.GetKey(ctx, "acct_a", c.ID)
	if err != nil || k.Name != "ci" || k.ReplacedBy != "" || len(k.AllowedIPs) != 0 || k.RateLimit != nil {
		t.Errorf("after refused changes the key is %+v, %v", k, err)
	}
	if evs, _ := m.Events(ctx, "acct_a", keystore.EventQuery{}); len(evs) != len(evsBefore) {
		t.Errorf("refused changes wrote %d events", len(evs)-len(evsBefore))
	}
	if n := len(logs.All()) - before; n != 0 {
		t.Errorf("refused changes logged %d lines", n)
	}
}

func TestRoll(t *testing.T) {
	m, logs, clk := auditedManager(t)
	ctx := context.Background()
	c, err := m.Create(ctx, consoleActor, "acct_a", keys.CreateRequest{Name: "ci", Scopes: []string{"monitors:read"}})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := decodeUpdate(t, `{"allowed_ips":["192.0.2.0/24"],"rate_limit":{"requests":5,"window":"1m"}}`)
	if _, err := m.Update(ctx, consoleActor, "acct_a", c.ID, req); err != nil {
		t.Fatal(err)
	}
	cli := keys.Actor{Name: "ops", Source: keys.SourceCLI}
	r, err := m.Roll(ctx, cli, "", c.ID, keys.RollRequest{Grace: "24h"})
	if err != nil {
		t.Fatal(err)
	}
	if apikey.Check(r.Secret) != nil || r.ID == c.ID || r.Name != "ci" || r.Replaces != c.ID ||
		!slices.Equal(r.Scopes, []string{"monitors:read"}) || len(r.AllowedIPs) != 1 || r.RateLimit == nil {
		t.Fatalf("rolled = %+v", r)
	}
	wantEnd := clk.t.UTC().Truncate(time.Microsecond).Add(24 * time.Hour)
	if !r.OldKeyExpiresAt.Equal(wantEnd) {
		t.Errorf("old key ends %v, want %v", r.OldKeyExpiresAt, wantEnd)
	}
	b, _ := json.Marshal(r)
	if !strings.Contains(string(b), `"key":"`+r.Secret+`"`) || !strings.Contains(string(b), `"replaces":"`+c.ID+`"`) {
		t.Errorf("roll JSON = %s", b)
	}
	old, err := m.Store.LookupKey(ctx, apikey.Hash(c.Secret))
	if err != nil || !old.Usable(clk.t) || old.Usable(wantEnd) {
		t.Errorf("old key usable now %v, at the end %v (%v)", old.Usable(clk.t), old.Usable(wantEnd), err)
	}
	// The old key is rolled: neither edited nor rolled again.
	if _, err := m.Roll(ctx, cli, "", c.ID, keys.RollRequest{}); !errors.Is(err, keys.ErrRolled) {
		t.Errorf("second roll: %v, want ErrRolled", err)
	}
	w := httptest.NewRecorder()
	_, err = m.Update(ctx, cli, "", c.ID, keys.UpdateRequest{Name: keys.Some("x")})
	keys.WriteError(w, err)
	if w.Code != 409 {
		t.Errorf("edit of a rolled key answered %d %s, want 409", w.Code, w.Body)
	}
	// Grace 0: the old key stops at once.
	r2, err := m.Roll(ctx, cli, "acct_a", r.ID, keys.RollRequest{Grace: "0s"})
	if err != nil {
		t.Fatal(err)
	}
	cred, err := m.Store.LookupKey(ctx, apikey.Hash(r.Secret))
	if err != nil || cred.Usable(clk.t) {
		t.Errorf("a key rolled without grace is still usable (%v)", err)
	}
	if _, err := m.Roll(ctx, cli, "acct_a", r2.ID, keys.RollRequest{Grace: "7d"}); err != nil {
		t.Errorf("grace 7d: %v", err)
	}
	evs, _ := m.Events(ctx, "acct_a", keystore.EventQuery{Limit: 3})
	if len(evs) != 3 || evs[2].Action != keystore.ActionKeyRolled || evs[2].Actor != "ops" || evs[2].Source != "cli" ||
		evs[2].KeyID != c.ID {
		t.Errorf("events = %+v", evs)
	}
	for _, l := range logs.All() {
		if s := jsonString(l.ContextMap()); strings.Contains(s, "spk_") && strings.Contains(s, r.Secret) {
			t.Errorf("an audit line has a secret: %s", s)
		}
	}
}

func TestParseGrace(t *testing.T) {
	for s, want := range map[string]time.Duration{
		"": 0, "0": 0, "0s": 0, "1h": time.Hour, "24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "168h": 168 * time.Hour, " 90m ": 90 * time.Minute,
	} {
		if got, err := keys.ParseGrace(s); err != nil || got != want {
			t.Errorf("ParseGrace(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
}

func TestParseEventQuery(t *testing.T) {
	for target, want := range map[string]string{
		"/?limit=10&before=5": "", "/": "", "/?limit=0": "limit", "/?limit=501": "limit", "/?limit=x": "limit",
		"/?before=-1": "before", "/?before=x": "before",
	} {
		_, err := keys.ParseEventQuery(httptest.NewRequest("GET", target, nil))
		if got := fieldOf(err); got != want {
			t.Errorf("%s: %v, want field %q", target, err, want)
		}
	}
}
