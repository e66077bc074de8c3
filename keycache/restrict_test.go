package keycache

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/keystore"
)

// restrictedKey stores a key of account "a1" with the given restrictions
// straight through the store (as the keys service does) and returns its
// secret.
func restrictedKey(t testing.TB, st keystore.Store, ips []string, rl *keystore.RateLimit) string {
	t.Helper()
	ctx := context.Background()
	if _, err := st.SetPlan(ctx, "a1", "pro"); err != nil {
		t.Fatal(err)
	}
	g, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	p := keystore.CreateKeyParams{ID: g.ID, AccountID: "a1", Name: "k", Prefix: g.Display, Hash: g.Hash,
		CreatedAt: time.Now().UTC().Truncate(time.Microsecond), RateLimit: rl}
	for _, s := range ips {
		p.AllowedIPs = append(p.AllowedIPs, netip.MustParsePrefix(s))
	}
	if _, err := st.CreateKey(ctx, p); err != nil {
		t.Fatal(err)
	}
	return g.Secret
}

// The restrictions a store returns reach the entry: allowed_ips as a
// prefix set of both families (IPv4-mapped IPv6 addresses and prefixes
// count as IPv4), the rate limit as requests per window.
func TestEntryCarriesRestrictions(t *testing.T) {
	c, cs, _ := setup(t)
	ctx := context.Background()
	secret := restrictedKey(t, cs.Store,
		[]string{"203.0.113.0/24", "198.51.100.7/32", "2001:db8::/32", "::ffff:192.0.2.0/120"},
		&keystore.RateLimit{Requests: 10, Window: time.Second})
	e, st := c.Verify(ctx, secret)
	if st != Valid {
		t.Fatalf("verify: %v", st)
	}
	if n, w := e.RateLimit(); n != 10 || w != time.Second {
		t.Errorf("rate limit %d/%s, want 10/1s", n, w)
	}
	if !e.IPRestricted() {
		t.Error("restricted key reported unrestricted")
	}
	for _, tc := range []struct {
		ip   string
		want bool
	}{
		{"203.0.113.1", true},
		{"203.0.113.255", true},
		{"203.0.114.1", false},
		{"198.51.100.7", true},
		{"198.51.100.8", false},
		{"::ffff:203.0.113.9", true}, // IPv4-mapped: checked as IPv4
		{"::ffff:203.0.114.9", false},
		{"192.0.2.200", true}, // allowed through an IPv4-mapped prefix
		{"2001:db8::1", true},
		{"2001:db8:ffff:ffff::1", true},
		{"2001:db9::1", false},
		{"::1", false},
		{"127.0.0.1", false},
	} {
		if got := e.AllowsIP(netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("AllowsIP(%s) = %v, want %v", tc.ip, got, tc.want)
		}
	}
	if e.AllowsIP(netip.Addr{}) {
		t.Error("a restricted key allows the invalid address")
	}

	free, st := c.Verify(ctx, restrictedKey(t, cs.Store, nil, nil))
	if st != Valid {
		t.Fatalf("verify: %v", st)
	}
	if n, _ := free.RateLimit(); n != 0 || free.IPRestricted() {
		t.Errorf("unrestricted key: rate %d, restricted %v", n, free.IPRestricted())
	}
	for _, ip := range []string{"10.0.0.1", "::1", "::ffff:10.0.0.1"} {
		if !free.AllowsIP(netip.MustParseAddr(ip)) {
			t.Errorf("unrestricted key refuses %s", ip)
		}
	}
}

// The families stay apart: an IPv6 prefix covering the IPv4-mapped range
// does not admit IPv4 clients, and 0.0.0.0/0 admits no IPv6 client.
func TestAllowsIPFamilies(t *testing.T) {
	for _, tc := range []struct {
		prefix, ip string
		want       bool
	}{
		{"::/0", "10.0.0.1", false},
		{"::/0", "2001:db8::1", true},
		{"::ffff:0:0/96", "10.0.0.1", true}, // every IPv4 address
		{"0.0.0.0/0", "10.0.0.1", true},
		{"0.0.0.0/0", "2001:db8::1", false},
		{"0.0.0.0/0", "::ffff:10.0.0.1", true},
		{"10.1.2.3/8", "10.200.0.1", true}, // host bits ignored
		{"2001:db8::1/128", "2001:db8::1", true},
		{"2001:db8::1/128", "2001:db8::2", false},
		{"2001:db8::/64", "2001:db8::ffff:1", true},
		{"2001:db8::/65", "2001:db8::8000:0:0:1", false},
	} {
		e := &Entry{ips: []ipNet{newIPNet(netip.MustParsePrefix(tc.prefix))}}
		if got := e.AllowsIP(netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("%s allows %s = %v, want %v", tc.prefix, tc.ip, got, tc.want)
		}
	}
	e := &Entry{ips: []ipNet{newIPNet(netip.Prefix{})}}
	for _, ip := range []string{"0.0.0.0", "::", "10.0.0.1"} {
		if e.AllowsIP(netip.MustParseAddr(ip)) {
			t.Errorf("an invalid stored prefix allows %s", ip)
		}
	}
}

// BenchmarkAllowsIP is the IP check of a restricted key (four prefixes,
// the client in the last) on top of the cached verification.
func BenchmarkAllowsIP(b *testing.B) {
	c, cs, _ := setup(b)
	secret := restrictedKey(b, cs.Store,
		[]string{"203.0.113.0/24", "198.51.100.7/32", "2001:db8::/32", "192.0.2.0/24"}, nil)
	e, st := c.Verify(context.Background(), secret)
	if st != Valid {
		b.Fatal("refused")
	}
	ip := netip.MustParseAddr("::ffff:192.0.2.77")
	b.ReportAllocs()
	for b.Loop() {
		if !e.AllowsIP(ip) {
			b.Fatal("refused")
		}
	}
}
