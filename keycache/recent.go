package keycache

import (
	"encoding/binary"
	"math"
	"sync/atomic"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// RecentTTL is how long a key that was once verified may still cost a
// store lookup from a client address past its failure limit.
const RecentTTL = 10 * time.Minute

// recentSet remembers which keys were verified as valid within RecentTTL
// (see VerifyKnown), in two flat arrays without pointers: a fingerprint of
// the key's hash and when it was last verified. It used to be a second
// ristretto cache of hashes, about 190 bytes per key; this is 12 bytes per
// slot, one slot per cached entry (rounded up to a power of two).
//
// It is a hint, not a proof: a slot found by a different key with the
// same 64-bit fingerprint lets a guess from a blocked address cost one
// store lookup (which then refuses it), and a key pushed out of its
// probe window by others is forgotten early (its user waits out the
// block, as before it was ever verified).
type recentSet struct {
	fp   []atomic.Uint64 // fingerprint of the key; 0: empty
	at   []atomic.Uint32 // seconds since base when last verified, from 1
	mask uint64
	base int64 // unix nanoseconds
}

// recentProbes is how many neighbouring slots a key may take.
const recentProbes = 8

func newRecentSet(n int64, now int64) *recentSet {
	size := uint64(1024)
	for size < uint64(n) {
		size *= 2
	}
	return &recentSet{fp: make([]atomic.Uint64, size), at: make([]atomic.Uint32, size), mask: size - 1, base: now}
}

// fingerprint is bits of h that slot does not use, never 0.
func fingerprint(h *keystore.Hash) uint64 {
	return max(binary.LittleEndian.Uint64(h[8:16]), 1)
}

// secs is now as stored in at (never 0).
func (r *recentSet) secs(now int64) uint32 {
	s := (now - r.base) / int64(time.Second)
	return uint32(min(max(s, 0), math.MaxUint32-1)) + 1
}

// add records that h was verified as valid at now. It takes the key's
// slot, else an empty one, else the one verified longest ago.
func (r *recentSet) add(h *keystore.Hash, now int64) {
	fp, t := fingerprint(h), r.secs(now)
	i := slot(h)
	victim, victimAt := i&r.mask, uint32(math.MaxUint32)
	for k := range uint64(recentProbes) {
		j := (i + k) & r.mask
		cur := r.fp[j].Load()
		if cur == fp {
			r.at[j].Store(t)
			return
		}
		a := r.at[j].Load()
		if cur == 0 {
			a = 0
		}
		if a < victimAt {
			victim, victimAt = j, a
		}
	}
	r.fp[victim].Store(fp)
	r.at[victim].Store(t)
}

// has reports whether h was verified as valid within RecentTTL of now.
func (r *recentSet) has(h *keystore.Hash, now int64) bool {
	fp, t := fingerprint(h), r.secs(now)
	i := slot(h)
	for k := range uint64(recentProbes) {
		j := (i + k) & r.mask
		if r.fp[j].Load() == fp {
			a := r.at[j].Load()
			return a != 0 && t-min(a, t) <= uint32(RecentTTL/time.Second)
		}
	}
	return false
}
