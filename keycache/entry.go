package keycache

import (
	"sync/atomic"

	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/scope"
)

// Entry is a verified key as the request path needs it. Its header values
// and placeholder provider are built once when the entry is filled, so a
// request served from the cache allocates nothing for them.
type Entry struct {
	hash      keystore.Hash
	epoch     uint64
	loadedAt  int64 // unix nanoseconds when its store query started
	known     bool
	expiresAt int64 // unix nanoseconds; 0 = never
	touched   atomic.Bool
	// staleAt (unix nanoseconds) is when the entry's cache lifetime (its
	// TTL, the safety net) ends, and lastHit when it was last used (or
	// loaded), to a second: see Cache.hit for when they make a hit reload
	// the entry in the background.
	staleAt    int64
	lastHit    atomic.Int64
	refreshing atomic.Bool

	// KeyID is the key's public id.
	KeyID string
	// AccountID is the owning account.
	AccountID string
	// Plan is the account's plan when the entry was filled.
	Plan string
	// Scopes is the key's scope set.
	Scopes scope.Set
	// ScopesHeader is the X-Spk-Scopes value ("*" for full access).
	ScopesHeader string

	// ips are the key's allowed_ips (none: any address; see AllowsIP).
	ips []ipNet
	// rateRequests per rateWindow (nanoseconds) is the key's own rate
	// limit; 0 for none (see RateLimit).
	rateRequests, rateWindow int64

	// Placeholders answers the identity placeholders of the key
	// (PlaceholderAccount and the three others) and nothing else, in the
	// shape of caddy.ReplacerFunc. It is built once per entry, so a
	// handler can add it to a request's replacer without allocating.
	Placeholders func(name string) (value any, ok bool)
}

// The placeholders an Entry answers.
const (
	PlaceholderAccount = "http.auth.user.id"
	PlaceholderKeyID   = "http.auth.user.key_id"
	PlaceholderScopes  = "http.auth.user.scopes"
	PlaceholderPlan    = "http.auth.user.plan"
)

func (e *Entry) placeholder(name string) (any, bool) {
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

func newEntry(h keystore.Hash, epoch uint64, cred *keystore.Credential) *Entry {
	k := &cred.Key
	// Few objects per entry, so that a cache of many keys adds little to
	// every garbage collection's marking: the four strings share one
	// allocation, and placeholder values are boxed only when read.
	scopes := scope.Header(k.Scopes)
	all := k.AccountID + k.ID + scopes + cred.Plan
	i, j, l := len(k.AccountID), len(k.AccountID)+len(k.ID), len(k.AccountID)+len(k.ID)+len(scopes)
	e := &Entry{
		hash:         h,
		epoch:        epoch,
		known:        true,
		AccountID:    all[:i],
		KeyID:        all[i:j],
		ScopesHeader: all[j:l],
		Plan:         all[l:],
	}
	e.Placeholders = e.placeholder
	e.setRestrictions(k)
	if k.ExpiresAt != nil {
		e.expiresAt = k.ExpiresAt.UnixNano()
	}
	if s, err := scope.Parse(k.Scopes); err == nil {
		e.Scopes = s
	} // an unknown stored scope grants nothing (e.Scopes stays 0)
	return e
}
