package keycache

import (
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/scope"
)

// Entry is a verified key as the request path needs it.
//
// An entry is one allocation without pointers for the garbage collector
// to follow: newEntry places the bytes of its strings and its allowed IP
// prefixes right after the struct, in memory allocated as []uint64 (which
// the collector never scans), and points the string and slice headers
// into it. That is safe because every such pointer points into the same
// allocation, which stays alive as long as anything the collector does
// scan (the cache's table, a request holding the entry or one of its
// strings) points into it; and the Go collector does not move objects.
// The strings that are not the key's own (the plan and the scopes header)
// are interned and kept alive by the intern table. So a million cached
// keys are a million objects that marking only has to flag, not read.
//
// Do not add a field that points to memory of its own (a pointer, map,
// func, or a string or slice not built by newEntry): the collector would
// not see the reference and could free what it points to.
// TestEntryHoldsNoOutsidePointers enforces this.
type Entry struct {
	// KeyID is the key's public id.
	KeyID string
	// AccountID is the owning account.
	AccountID string
	// Plan is the account's plan when the entry was filled.
	Plan string
	// ScopesHeader is the X-Spk-Scopes value ("*" for full access).
	ScopesHeader string
	// Scopes is the key's scope set.
	Scopes scope.Set

	// The flags and Scopes share one word (fields ordered to leave no
	// padding: every byte counts a million times).
	known      bool
	touched    atomic.Bool
	refreshing atomic.Bool

	hash      keystore.Hash
	epoch     uint64
	loadedAt  int64 // unix nanoseconds when its store query started
	expiresAt int64 // unix nanoseconds; 0 = never
	// staleAt (unix nanoseconds) is when the entry's cache lifetime (its
	// TTL, the safety net) ends, and lastHit when it was last used (or
	// loaded), to a second: see Cache.hit for when they make a hit reload
	// the entry in the background.
	staleAt int64
	lastHit atomic.Int64

	// ips are the key's allowed_ips (none: any address; see AllowsIP).
	ips []ipNet
	// rateRequests per rateWindow (nanoseconds) is the key's own rate
	// limit; 0 for none (see RateLimit).
	rateRequests, rateWindow int64
}

// The placeholders an Entry answers.
const (
	PlaceholderAccount = "http.auth.user.id"
	PlaceholderKeyID   = "http.auth.user.key_id"
	PlaceholderScopes  = "http.auth.user.scopes"
	PlaceholderPlan    = "http.auth.user.plan"
)

// Placeholders answers the identity placeholders of the key
// (PlaceholderAccount and the three others) and nothing else, in the shape
// of caddy.ReplacerFunc. (It used to be a func field built once per entry;
// that was one more heap object per cached key for every collection to
// mark, and a method value costs a request 16 bytes instead.)
func (e *Entry) Placeholders(name string) (value any, ok bool) {
	switch name {
	case PlaceholderAccount:
		return e.AccountID, true
	case PlaceholderKeyID:
		return e.KeyID, true
	case PlaceholderScopes:
		return e.ScopesHeader, true
	case PlaceholderPlan:
		return e.Plan, true
	}
	return nil, false
}

// usable reports whether e is a known key that has not expired at now
// (unix nanoseconds).
func (e *Entry) usable(now int64) bool {
	return e.known && (e.expiresAt == 0 || now < e.expiresAt)
}

// newEntry builds the entry of a valid key in one pointer-free allocation
// (see Entry).
func newEntry(h keystore.Hash, epoch uint64, cred *keystore.Credential) *Entry {
	k := &cred.Key
	set, err := scope.Parse(k.Scopes)
	if err != nil {
		set = 0 // an unknown stored scope grants nothing
	}
	header, hdrShared := intern(scope.Header(k.Scopes))
	plan, planShared := intern(cred.Plan)
	size := len(k.AccountID) + len(k.ID)
	if !hdrShared {
		size += len(header)
	}
	if !planShared {
		size += len(plan)
	}
	ipsSize := len(k.AllowedIPs) * int(unsafe.Sizeof(ipNet{}))
	e, tail := allocEntry(ipsSize + size)
	e.hash, e.epoch, e.known, e.Scopes = h, epoch, true, set
	if len(k.AllowedIPs) > 0 {
		e.ips = unsafe.Slice((*ipNet)(tail), len(k.AllowedIPs))
		for i, p := range k.AllowedIPs {
			e.ips[i] = newIPNet(p)
		}
	}
	if rl := k.RateLimit; rl != nil && rl.Requests > 0 && rl.Window > 0 {
		e.rateRequests, e.rateWindow = int64(rl.Requests), int64(rl.Window)
	}
	if k.ExpiresAt != nil {
		e.expiresAt = k.ExpiresAt.UnixNano()
	}
	var buf []byte
	if size > 0 {
		buf = unsafe.Slice((*byte)(unsafe.Add(tail, ipsSize)), size)
	}
	place := func(s string) string {
		if s == "" {
			return ""
		}
		n := copy(buf, s)
		out := unsafe.String(&buf[0], n)
		buf = buf[n:]
		return out
	}
	e.AccountID, e.KeyID = place(k.AccountID), place(k.ID)
	if e.ScopesHeader = header; !hdrShared {
		e.ScopesHeader = place(header)
	}
	if e.Plan = plan; !planShared {
		e.Plan = place(plan)
	}
	return e
}

// newRefusal is the entry of an unknown, revoked or expired key.
func newRefusal(h keystore.Hash, epoch uint64, loadedAt int64) *Entry {
	e, _ := allocEntry(0)
	e.hash, e.epoch, e.loadedAt = h, epoch, loadedAt
	return e
}

// entrySize is the size of the fixed part of an entry; the tail starts
// after it, 8-byte aligned.
const entrySize = (unsafe.Sizeof(Entry{}) + 7) &^ 7

// allocEntry returns a zeroed entry followed by tail bytes of its own, in
// memory the collector does not scan (see Entry).
func allocEntry(tail int) (*Entry, unsafe.Pointer) {
	mem := make([]uint64, (int(entrySize)+tail+7)/8)
	p := unsafe.Pointer(&mem[0])
	if tail == 0 {
		return (*Entry)(p), nil // nothing past the end to point at
	}
	return (*Entry)(p), unsafe.Add(p, entrySize)
}

// The intern table holds the strings entries share (plans, scopes
// headers) for the life of the process, which is what lets an entry point
// to them from memory the collector does not scan. It is bounded: past
// maxInterned distinct strings, entries carry their own copies.
var (
	interned  sync.Map // string -> string
	internedN atomic.Int64
)

const maxInterned = 4096

// intern returns the table's copy of s and true, or s and false when the
// table is full. The empty string needs no copy.
func intern(s string) (string, bool) {
	if s == "" {
		return "", true
	}
	if v, ok := interned.Load(s); ok {
		return v.(string), true
	}
	if internedN.Load() >= maxInterned {
		return s, false
	}
	c := strings.Clone(s)
	v, loaded := interned.LoadOrStore(c, c)
	if !loaded {
		internedN.Add(1)
	}
	return v.(string), true
}
