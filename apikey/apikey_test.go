package apikey

import (
	"crypto/sha256"
	"strings"
	"testing"
)

func TestGenerateIsWellFormed(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		g, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		if err := Check(g.Secret); err != nil {
			t.Fatalf("generated key rejected: %v", err)
		}
		if len(g.Secret) != Len || !strings.HasPrefix(g.Secret, Marker) {
			t.Fatalf("bad layout, length %d", len(g.Secret))
		}
		if g.Display != g.Secret[:DisplayLen] || len(g.Display) != 10 {
			t.Fatalf("display %q", g.Display)
		}
		if g.Hash != sha256.Sum256([]byte(g.Secret)) || g.Hash != Hash(g.Secret) {
			t.Fatal("hash is not sha-256 of the whole key")
		}
		if !strings.HasPrefix(g.ID, IDMarker) || len(g.ID) != len(IDMarker)+idRandomLen {
			t.Fatalf("id %q", g.ID)
		}
		if strings.Contains(g.ID, g.Secret[len(Marker):len(Marker)+RandomLen]) {
			t.Fatal("id derived from the secret")
		}
		if seen[g.Secret] || seen[g.ID] {
			t.Fatal("duplicate key or id")
		}
		seen[g.Secret], seen[g.ID] = true, true
	}
}

func TestCheckRejects(t *testing.T) {
	g, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	k := g.Secret
	flip := func(i int) string {
		b := []byte(k)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	for name, in := range map[string]string{
		"empty":             "",
		"prefix only":       Marker,
		"short":             k[:Len-1],
		"long":              k + "a",
		"upper prefix":      "SPK_" + k[4:],
		"other prefix":      "ghp_" + k[4:],
		"random char":       flip(10),
		"checksum char":     flip(Len - 1),
		"non base62":        k[:8] + "-" + k[9:],
		"nul":               k[:8] + "\x00" + k[9:],
		"full-width digit":  k[:30] + "１" + k[33:],
		"zero-width inside": k[:20] + "\u200b" + k[20:37],
		"space padded":      " " + k[:Len-1],
	} {
		if err := Check(in); err != ErrMalformed {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
	if err := Check(k); err != nil {
		t.Fatalf("valid key rejected: %v", err)
	}
}

func TestChecksumKnownValue(t *testing.T) {
	// A fixed key built by hand: CRC32-IEEE("spk_" + 30 zeros) in base62.
	body := Marker + strings.Repeat("0", RandomLen)
	var sum [ChecksumLen]byte
	encodeChecksum(&sum, 0xFFFFFFFF)
	if string(sum[:]) != "4gfFC3" { // 4294967295 in base62
		t.Fatalf("base62 of max uint32 = %s", sum[:])
	}
	encodeChecksum(&sum, 0)
	if string(sum[:]) != "000000" {
		t.Fatalf("base62 of 0 = %s", sum[:])
	}
	// Whatever the checksum of body is, exactly one suffix is accepted.
	accepted := 0
	for _, c := range alphabet {
		k := body + "00000" + string(c)
		if Check(k) == nil {
			accepted++
		}
	}
	if accepted > 1 {
		t.Fatalf("%d suffixes accepted", accepted)
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	g, _ := Generate()
	bad := g.Secret[:Len-1] + "x"
	if n := testing.AllocsPerRun(100, func() { _ = Check(g.Secret); _ = Check(bad); _ = Hash(g.Secret) }); n != 0 {
		t.Fatalf("Check/Hash allocate %v times", n)
	}
}

func FuzzCheck(f *testing.F) {
	g, _ := Generate()
	for _, s := range []string{"", Marker, g.Secret, g.Secret[:Len-1] + "0", "spk_" + strings.Repeat("z", 36), strings.Repeat("\xff", Len)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if Check(s) != nil {
			return
		}
		// Anything accepted has the exact layout and recomputes its checksum.
		if len(s) != Len || !strings.HasPrefix(s, Marker) {
			t.Fatalf("accepted %q", s)
		}
		for i := len(Marker); i < Len; i++ {
			if !isBase62[s[i]] {
				t.Fatalf("accepted non-base62 byte in %q", s)
			}
		}
		if Display(s) != s[:DisplayLen] {
			t.Fatal("display")
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	g, _ := Generate()
	b.ReportAllocs()
	for b.Loop() {
		if Check(g.Secret) != nil {
			b.Fatal("rejected")
		}
	}
}

func BenchmarkHash(b *testing.B) {
	g, _ := Generate()
	b.ReportAllocs()
	for b.Loop() {
		_ = Hash(g.Secret)
	}
}
