package main

import (
	"encoding/json"
	"os/user"
	"strings"
	"testing"
)

// TestCommandLineLifecycle: caddy spk edit, roll and events, against the
// store Caddyfile.example names, recorded with the OS user as the actor.
func TestCommandLineLifecycle(t *testing.T) {
	e := newEnv(t)
	spk := func(args ...string) (string, error) {
		t.Helper()
		return e.caddy(append(append([]string{"spk"}, args...), "--config", "Caddyfile.example")...)
	}
	out, err := spk("create", "--account", "acct_cli", "--name", "deploy", "--scope", "monitors:read")
	if err != nil {
		t.Fatal(err)
	}
	var created struct{ ID, Key string }
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("create printed %s: %v", out, err)
	}

	out, err = spk("edit", created.ID, "--name", "deploy-bot", "--scope", "incidents:write", "--allow-ip", "203.0.113.0/24,2001:db8::/32", "--rate", "10/1s")
	if err != nil {
		t.Fatal(err)
	}
	var edited struct {
		Name       string
		Scopes     []string
		Key        string
		AllowedIPs []string `json:"allowed_ips"`
		RateLimit  *struct {
			Requests int
			Window   string
		} `json:"rate_limit"`
	}
	if err := json.Unmarshal([]byte(out), &edited); err != nil || edited.Name != "deploy-bot" || strings.Join(edited.Scopes, ",") != "incidents:write" ||
		len(edited.AllowedIPs) != 2 || edited.RateLimit == nil || edited.RateLimit.Requests != 10 || edited.RateLimit.Window != "1s" || edited.Key != "" {
		t.Fatalf("edit printed %s (%v)", out, err)
	}
	out, err = spk("edit", created.ID, "--any-ip", "--no-rate")
	if err != nil || strings.Contains(out, "allowed_ips") || strings.Contains(out, "rate_limit") {
		t.Fatalf("clearing: %v\n%s", err, out)
	}
	for _, bad := range [][]string{
		{"edit", created.ID},                              // nothing to change
		{"edit", created.ID, "--allow-ip", "10.0.0.0/33"}, // bad CIDR
		{"edit", created.ID, "--rate", "1000000/1s"},      // above the ceiling
		{"edit", created.ID, "--scope", "root"},           // unknown scope
		{"edit", created.ID, "--rate", "10/1s", "--no-rate"},
		{"roll", created.ID, "--grace", "8d"},
		{"edit", "key_unknown", "--name", "x"},
	} {
		if _, err := spk(bad...); err == nil {
			t.Errorf("caddy spk %v succeeded", bad)
		}
	}

	out, err = spk("roll", created.ID, "--grace", "24h")
	if err != nil {
		t.Fatal(err)
	}
	var rolled struct {
		ID, Key, Name, Replaces string
	}
	if err := json.Unmarshal([]byte(out), &rolled); err != nil || !strings.HasPrefix(rolled.Key, "spk_") || rolled.Replaces != created.ID || rolled.Name != "deploy-bot" {
		t.Fatalf("roll printed %s (%v)", out, err)
	}
	if _, err := spk("roll", created.ID); err == nil || !strings.Contains(err.Error(), "rolled") {
		t.Errorf("rolling a rolled key: %v", err)
	}

	out, err = spk("events", "--account", "acct_cli", "--limit", "10")
	if err != nil {
		t.Fatal(err)
	}
	var evs struct {
		Events []struct {
			ID                    int64
			Action, Actor, Source string
			KeyID                 string `json:"key_id"`
		}
	}
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		t.Fatalf("events printed %s: %v", out, err)
	}
	want := []string{"key.rolled", "key.updated", "key.updated", "key.created"}
	if len(evs.Events) != len(want) {
		t.Fatalf("events: %s", out)
	}
	me, _ := user.Current()
	for i, ev := range evs.Events {
		if ev.Action != want[i] || ev.Source != "cli" || ev.KeyID != created.ID || (me != nil && ev.Actor != me.Username) {
			t.Errorf("event %d = %+v, want %s by %s through cli", i, ev, want[i], me.Username)
		}
	}
	if strings.Contains(out, created.Key) || strings.Contains(out, rolled.Key) {
		t.Error("events print a key")
	}
	if _, err := spk("events", "--account", "acct_cli", "--limit", "0"); err == nil {
		t.Error("--limit 0 accepted")
	}
}
