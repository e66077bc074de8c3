// Package keystore defines what spkgate keeps about API keys and accounts,
// and the Store interface that each backend (SQLite, PostgreSQL) implements.
//
// The package imports neither Caddy nor any database driver: the backends
// live in their own packages (sqlitestore, pgstore) and translate their
// driver's errors into the sentinel errors declared here, so that callers
// never see a driver type.
//
// A store never receives a key's secret: it is given, and returns, only the
// SHA-256 of the whole key (see package apikey).
package keystore

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// HashSize is the length of a key hash: SHA-256 of the whole key.
const HashSize = 32

// Hash is the SHA-256 of a whole API key. It is what a store indexes keys by;
// it is not secret in the way the key is, but it is still never logged.
type Hash [HashSize]byte

// Sentinel errors. Backends wrap or return these; callers test with errors.Is.
var (
	// ErrNotFound means no key or account matched (for a key: unknown,
	// or owned by another account).
	ErrNotFound = errors.New("not found")
	// ErrConflict means a key with the same id or hash already exists.
	ErrConflict = errors.New("already exists")
	// ErrUnavailable means the store could not answer (connection refused,
	// timeout, database shut down). The gateway answers 503, never 401.
	ErrUnavailable = errors.New("key store unavailable")
)

// Key is what the store holds about one API key. It never holds the secret.
type Key struct {
	// ID is the key's public, non-secret identifier (e.g. "key_2x8...").
	ID string `json:"id"`
	// AccountID is the account that owns the key.
	AccountID string `json:"account_id"`
	// Name is the descriptive name its owner gave it.
	Name string `json:"name"`
	// Prefix is the short display prefix (e.g. "spk_Ab3dE9").
	Prefix string `json:"prefix"`
	// Scopes are the scopes granted; empty means full access.
	Scopes []string `json:"scopes"`
	// CreatedAt is when the key was created.
	CreatedAt time.Time `json:"created_at"`
	// LastUsedAt is when the key was last used, written in batches; nil if never.
	LastUsedAt *time.Time `json:"last_used_at"`
	// ExpiresAt is when the key stops working; nil if it never expires.
	ExpiresAt *time.Time `json:"expires_at"`
	// RevokedAt is when the key was revoked; nil while it is active.
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// AllowedIPs restricts the client addresses the key may be used from;
	// empty means any address.
	AllowedIPs []netip.Prefix `json:"allowed_ips,omitempty"`
	// RateLimit is the key's own rate, below its account's; nil means the
	// account's limit alone applies.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// ReplacedBy is the id of the key that replaced this one when it was
	// rolled ("" if it was not): it works until its ExpiresAt, the end of
	// the roll's grace period, and can no longer be edited or rolled.
	ReplacedBy string `json:"replaced_by,omitempty"`
}

// RateLimit is a rate of at most Requests requests per Window.
type RateLimit struct {
	// Requests is how many requests a window admits (at least 1).
	Requests int
	// Window is the length of the window (positive).
	Window time.Duration
}

// CreateKeyParams is the input of Store.CreateKey: a new key as it is
// stored, its hash in place of the secret.
type CreateKeyParams struct {
	ID        string
	AccountID string
	Name      string
	Prefix    string
	Hash      Hash
	Scopes    []string
	CreatedAt time.Time
	ExpiresAt *time.Time
	// AllowedIPs and RateLimit are the key's restrictions (see Key).
	AllowedIPs []netip.Prefix
	RateLimit  *RateLimit
}

// Credential is the answer to a key lookup: what the gateway checks of a
// key, and its account's plan, read together by one indexed query.
type Credential struct {
	// Key holds only ID, AccountID, Scopes, ExpiresAt, RevokedAt,
	// AllowedIPs and RateLimit; Name,
	// Prefix, CreatedAt and LastUsedAt are zero (GetKey reads them). Less
	// to read and decode makes a cold lookup cheaper, and a refused key
	// (revoked or expired) costs about what an unknown one does, so that
	// latency tells little about which of the three a key is.
	Key Key
	// Plan is the account's current plan ("" if the account has none recorded).
	Plan string
}

// Usable reports whether the credential may authenticate a request at now:
// not revoked and not expired.
func (c *Credential) Usable(now time.Time) bool {
	if c.Key.RevokedAt != nil {
		return false
	}
	return c.Key.ExpiresAt == nil || now.Before(*c.Key.ExpiresAt)
}

// MaxLookupBatch bounds the hashes of one LookupKeys call.
const MaxLookupBatch = 256

// ChangeKind says what a Change invalidates.
type ChangeKind string

// The kinds of change recorded in the change log.
const (
	// ChangeRevoked: a key was revoked. Change.Hash and AccountID are set.
	ChangeRevoked ChangeKind = "revoked"
	// ChangePlan: an account's plan changed. Change.AccountID is set.
	ChangePlan ChangeKind = "plan"
	// ChangeCreated: a key was created. Change.Hash and AccountID are set
	// (another instance may hold a negative cache entry for that hash).
	ChangeCreated ChangeKind = "created"
)

// Change is one entry of the store's change log: every instance that caches
// keys reads it to invalidate what another instance (or the command line)
// changed.
type Change struct {
	// Seq increases strictly with every change.
	Seq       int64
	Kind      ChangeKind
	AccountID string
	Hash      Hash
	At        time.Time
}

// Notifier is implemented by a Store that pushes its changes to every
// instance as they commit (PostgreSQL: LISTEN/NOTIFY on a connection of its
// own), so that a cache learns of a revocation made elsewhere within
// milliseconds rather than at its next read of the change log.
//
// The change log stays the authority: a notification is a hint that
// carries the change's sequence number, kind and account and nothing
// derived from a key, and a session that ends may have lost notifications.
type Notifier interface {
	// Listen opens a dedicated connection, listens, and calls l's methods
	// from a single goroutine until ctx ends (it then returns ctx.Err())
	// or until it can no longer vouch that every change reaches l (an
	// error matching ErrUnavailable). It may replace a connection that
	// fails and go on with the same session, but only if it passes to l,
	// in order, every change committed while none listened, read from the
	// change log, which must prove by sequence number that none is
	// missing. The caller calls Listen again after an error, and treats
	// every new session as having missed whatever committed while no
	// session listened. A Notifier that cannot listen in its setup (such
	// as PostgreSQL reached only through a transaction-pooling proxy)
	// calls nothing and returns when ctx ends: the change log alone
	// carries the changes then.
	Listen(ctx context.Context, l ChangeListener) error
}

// ChangeListener receives what a Notifier pushes during one session.
type ChangeListener interface {
	// Listening is called once, when the session listens: every change
	// that commits from then on reaches Notified.
	Listening()
	// Notified is called as changes commit, in commit order: once per
	// change, or, for a statement that recorded several, once per kind
	// and account with the highest Seq among them (so the Seqs notified
	// need not be consecutive). Only Seq, Kind and AccountID are set, and
	// AccountID is empty when the notification could not carry it: then
	// the change log says what the change was.
	Notified(Change)
	// Alive is called after each answered heartbeat: every change that
	// committed before t has already been passed to Notified.
	Alive(t time.Time)
}

// Store is the persistence of keys and account plans. Every method that
// reads or changes an account's keys takes the account id and matches on it,
// so that one account can never see or touch another's keys.
//
// Implementations are safe for concurrent use. Errors are ErrNotFound,
// ErrConflict, ErrUnavailable (wrapped is fine) or a validation error.
type Store interface {
	// CreateKey stores a new key and records a ChangeCreated. It returns
	// ErrConflict if the id or hash is taken.
	CreateKey(ctx context.Context, p CreateKeyParams) (Key, error)
	// LookupKey finds a key by hash, with its account's plan, in one indexed
	// query (see Credential for the fields it fills). Revoked and expired
	// keys are returned too (the caller decides); an unknown hash is
	// ErrNotFound.
	LookupKey(ctx context.Context, h Hash) (Credential, error)
	// LookupKeys is LookupKey for up to MaxLookupBatch hashes in one
	// query, for reloading cached keys: the credentials of the hashes
	// found (revoked and expired keys too); unknown hashes are absent.
	LookupKeys(ctx context.Context, hashes []Hash) (map[Hash]Credential, error)
	// ListKeys returns the account's keys that are not revoked, newest first.
	ListKeys(ctx context.Context, accountID string) ([]Key, error)
	// GetKey returns one key by id. With a non-empty accountID, a key of
	// another account is ErrNotFound.
	GetKey(ctx context.Context, accountID, keyID string) (Key, error)
	// RevokeKey marks the key revoked and records a ChangeRevoked in the same
	// transaction. With a non-empty accountID, only that account's key can be
	// revoked (another's is ErrNotFound). Revoking a revoked key is
	// ErrNotFound. It returns the revoked key's hash, for cache invalidation.
	RevokeKey(ctx context.Context, accountID, keyID string) (Key, Hash, error)
	// RevokeAccountKeys revokes every active key of the account in one
	// transaction, recording a ChangeRevoked for each key in that
	// transaction too, and returns how many keys it revoked (0 if the
	// account has none). Either all of them are revoked or none is.
	RevokeAccountKeys(ctx context.Context, accountID string) (int, error)
	// SetPlan records the account's plan (creating the account row if needed)
	// and, if it changed, records a ChangePlan in the same transaction.
	// It reports whether the plan changed.
	SetPlan(ctx context.Context, accountID, plan string) (changed bool, err error)
	// GetPlan returns the account's recorded plan, or ErrNotFound.
	GetPlan(ctx context.Context, accountID string) (string, error)
	// TouchKeys sets last_used_at for the given key ids (batched writes from
	// the request path). Unknown ids are ignored.
	TouchKeys(ctx context.Context, used map[string]time.Time) error
	// Changes returns the changes with Seq > after, oldest first, at most
	// limit of them.
	Changes(ctx context.Context, after int64, limit int) ([]Change, error)
	// LastChange returns the highest Seq recorded (0 if none).
	LastChange(ctx context.Context) (int64, error)
	// PruneChanges deletes changes recorded before the given time.
	PruneChanges(ctx context.Context, before time.Time) error
	// UpdateKey edits an active key of the account (any account's with an
	// empty accountID) in one transaction: it reads the key, locked, calls
	// edit with it, and stores what edit left in the editable fields
	// (Name, Scopes, ExpiresAt, AllowedIPs, RateLimit), recording a
	// ChangeUpdated and a key.updated event. An error from edit is
	// returned as it is, and nothing is written; so is nothing when edit
	// changes none of the fields. A revoked or unknown key is ErrNotFound.
	UpdateKey(ctx context.Context, accountID, keyID string, edit func(*Key) error) (Key, error)
	// RollKey replaces an active key with a new one of the same name,
	// scopes, expiry and restrictions, in one transaction: the old key's
	// expiry becomes r.Ends (unless it expires earlier) and its ReplacedBy
	// the new id, and an old key whose end is not after r.At is revoked
	// too. check, if not nil, is called with the old key first; its error
	// is returned as it is. It records a ChangeCreated (new key), a
	// ChangeUpdated (old key) and a key.rolled event, and returns both
	// keys. A revoked or unknown key is ErrNotFound; one already rolled is
	// ErrKeyRolled.
	RollKey(ctx context.Context, accountID, keyID string, r Roll, check func(old Key) error) (old, replacement Key, err error)
	// Events returns the account's audit events, newest first.
	Events(ctx context.Context, accountID string, q EventQuery) ([]Event, error)
	// PruneEvents deletes the events recorded before the given time and
	// returns how many it deleted.
	PruneEvents(ctx context.Context, before time.Time) (int64, error)
	// Ping checks that the store can answer.
	Ping(ctx context.Context) error
	// Close releases the store's connections.
	Close() error
}
