package keycache

import (
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// The recent set remembers a key for RecentTTL from its last
// verification, and a full probe window gives way to the key verified
// longest ago.
func TestRecentSet(t *testing.T) {
	base := time.Now().UnixNano()
	r := newRecentSet(1, base)
	key := func(i int) *keystore.Hash {
		// The same slot for all: they compete for one probe window.
		h := keystore.Hash{8: byte(i + 1), 9: byte((i + 1) >> 8)}
		return &h
	}
	r.add(key(0), base)
	if !r.has(key(0), base+int64(RecentTTL)) {
		t.Fatal("forgotten within RecentTTL")
	}
	if r.has(key(0), base+int64(RecentTTL+time.Second)) {
		t.Fatal("remembered past RecentTTL")
	}
	if r.has(key(1), base) {
		t.Fatal("a key never added is remembered")
	}
	r.add(key(0), base+int64(RecentTTL)) // verified again: remembered anew
	if !r.has(key(0), base+int64(RecentTTL+time.Second)) {
		t.Fatal("a second verification did not renew the key")
	}
	for i := 1; i <= recentProbes; i++ {
		r.add(key(i), base+int64(RecentTTL)+int64(i)*int64(time.Second))
	}
	if r.has(key(0), base+int64(RecentTTL)+int64(recentProbes+1)*int64(time.Second)) {
		t.Fatal("the oldest key of a full window was not the one replaced")
	}
	for i := 1; i <= recentProbes; i++ {
		if !r.has(key(i), base+int64(RecentTTL)+int64(recentProbes+1)*int64(time.Second)) {
			t.Fatalf("key %d lost", i)
		}
	}
}
