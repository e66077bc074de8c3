package keystore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ChangeUpdated: a key was edited or rolled (its name, scopes, expiry,
// allowed IPs or rate limit changed, or a roll set the end of its grace
// period). Change.Hash and AccountID are set. Caches treat it like a
// revocation: every cached entry of the account is read again.
const ChangeUpdated ChangeKind = "updated"

// Action names what an audit event records.
type Action string

// The actions of the audit trail.
const (
	ActionKeyCreated         Action = "key.created"
	ActionKeyUpdated         Action = "key.updated"
	ActionKeyRolled          Action = "key.rolled"
	ActionKeyRevoked         Action = "key.revoked"
	ActionAccountKeysRevoked Action = "account.keys_revoked"
	ActionAccountPlanChanged Action = "account.plan_changed"
)

// The sources of a change.
const (
	SourceAdminAPI = "admin_api"
	SourceConsole  = "console"
	SourceCLI      = "cli"
)

// Actor says who makes a change: it is written into the change's audit
// event.
type Actor struct {
	// Name is who acted: the console's signed-in user, "admin" for Caddy's
	// admin API, the OS user for the command line.
	Name string
	// Source is where the change came from: SourceAdminAPI, SourceConsole
	// or SourceCLI.
	Source string
	// IP is the client address the change came from ("" if none, as for
	// the command line).
	IP string
	// UserAgent is the client's User-Agent ("" if none).
	UserAgent string
}

// Audit is carried by a change's context to the store. Every Store method
// that changes something (CreateKey, UpdateKey, RollKey, RevokeKey,
// RevokeAccountKeys, SetPlan) writes one audit event in the change's own
// transaction, so that an event exists exactly when the change does; the
// event's actor, source, IP and user agent come from the context's Audit.
// A change made without one (tests, tools that use a store directly) is
// recorded with an empty actor and source.
type Audit struct {
	Actor
	// Written, if not nil, is called with each event after the
	// transaction that wrote it has committed (e.g. to log it).
	Written func(Event)
}

type auditKey struct{}

// WithAudit returns ctx carrying a.
func WithAudit(ctx context.Context, a Audit) context.Context {
	return context.WithValue(ctx, auditKey{}, a)
}

// AuditFrom returns the Audit that ctx carries (the zero Audit if none).
func AuditFrom(ctx context.Context) Audit {
	a, _ := ctx.Value(auditKey{}).(Audit)
	return a
}

// Event is one entry of the audit trail. It never holds a secret or a hash.
type Event struct {
	// ID increases with every event.
	ID int64 `json:"id"`
	// At is when the change was made.
	At time.Time `json:"at"`
	// AccountID is the account the change belongs to.
	AccountID string `json:"account_id"`
	// Action is what was done.
	Action Action `json:"action"`
	// Actor is who did it (see Actor.Name).
	Actor string `json:"actor"`
	// Source is where it came from (see Actor.Source).
	Source string `json:"source"`
	// IP is the client address of the change ("" if none).
	IP string `json:"ip"`
	// UserAgent is the client's User-Agent ("" if none).
	UserAgent string `json:"user_agent"`
	// KeyID, KeyPrefix and KeyName describe the key changed ("" for an
	// account's change).
	KeyID     string `json:"key_id"`
	KeyPrefix string `json:"key_prefix"`
	KeyName   string `json:"key_name"`
	// Details is a JSON object whose fields depend on the action: for
	// key.updated, {"<field>":{"from":...,"to":...}} for each field changed.
	Details json.RawMessage `json:"details"`
}

// NewEvent is an event of action about key k (for an account's change, k
// has only AccountID), from the actor that a carries, with details
// marshalled to JSON (nil: {}). Backends use it to build what they write.
func NewEvent(a Audit, action Action, at time.Time, k *Key, details any) (Event, error) {
	ev := Event{
		At:        at.UTC().Truncate(time.Microsecond),
		AccountID: k.AccountID,
		Action:    action,
		Actor:     a.Name,
		Source:    a.Source,
		IP:        a.IP,
		UserAgent: a.UserAgent,
		KeyID:     k.ID,
		KeyPrefix: k.Prefix,
		KeyName:   k.Name,
		Details:   json.RawMessage(`{}`),
	}
	if details != nil {
		b, err := json.Marshal(details)
		if err != nil {
			return Event{}, fmt.Errorf("encoding event details: %w", err)
		}
		ev.Details = b
	}
	return ev, nil
}

// Announce passes committed events to a.Written, if set.
func (a Audit) Announce(evs ...Event) {
	if a.Written == nil {
		return
	}
	for _, ev := range evs {
		a.Written(ev)
	}
}

// EventQuery selects a page of an account's events.
type EventQuery struct {
	// Limit is the most events returned; <= 0 means DefaultEventLimit, and
	// more than MaxEventLimit means MaxEventLimit.
	Limit int
	// Before, if positive, returns only events with an ID below it (the
	// ID of the last event of the previous page).
	Before int64
}

// Bounds of EventQuery.Limit.
const (
	DefaultEventLimit = 50
	MaxEventLimit     = 500
)

// EffectiveLimit returns q.Limit with the defaults and bounds applied.
func (q EventQuery) EffectiveLimit() int {
	switch {
	case q.Limit <= 0:
		return DefaultEventLimit
	case q.Limit > MaxEventLimit:
		return MaxEventLimit
	}
	return q.Limit
}

// DefaultEventRetention is how long audit events are kept by default.
const DefaultEventRetention = 400 * 24 * time.Hour

// Roll describes the key that replaces another in RollKey.
type Roll struct {
	// ID, Prefix and Hash are the new key's, as for CreateKeyParams.
	ID     string
	Prefix string
	Hash   Hash
	// At is when the roll happens: the new key's creation time.
	At time.Time
	// Ends is when the old key stops working (At for no grace period). An
	// old key that would expire earlier keeps its expiry.
	Ends time.Time
}

// Problem says what makes r unusable, or "" when nothing does. Both
// backends refuse such a roll with it before touching the store.
func (r *Roll) Problem() string {
	switch {
	case r.ID == "":
		return "empty key id"
	case r.Hash == Hash{}:
		return "zero key hash"
	case r.Ends.Before(r.At):
		return "the old key's end is before the roll"
	}
	return ""
}

// ErrKeyRolled is returned (wrapped) when a key that has already been
// rolled is edited or rolled again: its successor is the key to change.
var ErrKeyRolled = errors.New("key was rolled; change the key that replaced it")

// EditableEqual reports whether a and b agree on every field UpdateKey may
// change: name, scopes, expiry, allowed IPs and rate limit.
func EditableEqual(a, b *Key) bool {
	return a.Name == b.Name &&
		equalStrings(a.Scopes, b.Scopes) &&
		equalTimePtr(a.ExpiresAt, b.ExpiresAt) &&
		equalPrefixes(a.AllowedIPs, b.AllowedIPs) &&
		equalRate(a.RateLimit, b.RateLimit)
}

// EditDetails is the details of a key.updated event: for each editable
// field that differs between before and after, {"from":...,"to":...}.
func EditDetails(before, after *Key) map[string]FromTo {
	d := map[string]FromTo{}
	if before.Name != after.Name {
		d["name"] = FromTo{before.Name, after.Name}
	}
	if !equalStrings(before.Scopes, after.Scopes) {
		d["scopes"] = FromTo{nonNil(before.Scopes), nonNil(after.Scopes)}
	}
	if !equalTimePtr(before.ExpiresAt, after.ExpiresAt) {
		d["expires_at"] = FromTo{before.ExpiresAt, after.ExpiresAt}
	}
	if !equalPrefixes(before.AllowedIPs, after.AllowedIPs) {
		d["allowed_ips"] = FromTo{PrefixStrings(before.AllowedIPs), PrefixStrings(after.AllowedIPs)}
	}
	if !equalRate(before.RateLimit, after.RateLimit) {
		d["rate_limit"] = FromTo{before.RateLimit, after.RateLimit}
	}
	return d
}

// FromTo is one field's change in an event's details.
type FromTo struct {
	From any `json:"from"`
	To   any `json:"to"`
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalTimePtr(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func equalPrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalRate(a, b *RateLimit) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// PrefixStrings formats prefixes as text, e.g. ["10.0.0.0/8"]; never nil.
func PrefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// ParsePrefixes parses stored prefixes (written by PrefixStrings); nil for
// none.
func ParsePrefixes(ss []string) ([]netip.Prefix, error) {
	if len(ss) == 0 {
		return nil, nil
	}
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("bad stored allowed IP %q", s)
		}
		ps[i] = p
	}
	return ps, nil
}

// String formats the rate as "<requests>/<window>", e.g. "10/1s".
func (r RateLimit) String() string {
	return strconv.Itoa(r.Requests) + "/" + r.Window.String()
}

// ParseRateLimit parses "<requests>/<window>", e.g. "10/1s" or "600/1m".
// It checks the syntax and that both parts are positive; the keys service
// checks the bounds.
func ParseRateLimit(s string) (RateLimit, error) {
	n, w, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return RateLimit{}, fmt.Errorf("rate %q is not <requests>/<window>, e.g. 10/1s", s)
	}
	req, err := strconv.Atoi(strings.TrimSpace(n))
	if err != nil || req < 1 {
		return RateLimit{}, fmt.Errorf("rate %q: requests must be a positive whole number", s)
	}
	win, err := time.ParseDuration(strings.TrimSpace(w))
	if err != nil || win <= 0 {
		return RateLimit{}, fmt.Errorf("rate %q: window must be a positive duration such as 1s or 1m", s)
	}
	return RateLimit{Requests: req, Window: win}, nil
}

// rateLimitJSON is RateLimit's JSON shape: {"requests":10,"window":"1s"}.
type rateLimitJSON struct {
	Requests int    `json:"requests"`
	Window   string `json:"window"`
}

// MarshalJSON encodes r as {"requests":10,"window":"1s"}.
func (r RateLimit) MarshalJSON() ([]byte, error) {
	return json.Marshal(rateLimitJSON{Requests: r.Requests, Window: r.Window.String()})
}

// UnmarshalJSON decodes {"requests":10,"window":"1s"}, refusing unknown
// fields, a missing or non-positive request count and a window that is not
// a positive Go duration.
func (r *RateLimit) UnmarshalJSON(b []byte) error {
	var v rateLimitJSON
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("rate_limit must be {\"requests\":<n>,\"window\":\"<duration>\"}: %w", err)
	}
	if v.Requests < 1 {
		return errors.New("rate_limit requests must be at least 1")
	}
	w, err := time.ParseDuration(v.Window)
	if err != nil || w <= 0 {
		return fmt.Errorf("rate_limit window %q is not a positive duration such as 1s or 1m", v.Window)
	}
	*r = RateLimit{Requests: v.Requests, Window: w}
	return nil
}

// CreateDetails is the details of a key.created event: the key's scopes,
// expiry and restrictions.
func CreateDetails(k *Key) any {
	return createDetails{
		Scopes:     nonNil(k.Scopes),
		ExpiresAt:  k.ExpiresAt,
		AllowedIPs: PrefixStrings(k.AllowedIPs),
		RateLimit:  k.RateLimit,
	}
}

type createDetails struct {
	Scopes     []string   `json:"scopes"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	AllowedIPs []string   `json:"allowed_ips,omitempty"`
	RateLimit  *RateLimit `json:"rate_limit,omitempty"`
}

// RevokedDetails is the details of an account.keys_revoked event.
type RevokedDetails struct {
	// Revoked is how many keys were revoked.
	Revoked int `json:"revoked"`
}

// RollDetails is the details of a key.rolled event (whose key is the old
// one).
type RollDetails struct {
	// NewKeyID and NewKeyPrefix name the key that replaces it.
	NewKeyID     string `json:"new_key_id"`
	NewKeyPrefix string `json:"new_key_prefix"`
	// Grace is how long the old key keeps working, e.g. "24h0m0s".
	Grace string `json:"grace"`
	// OldKeyEndsAt is when the old key stops working.
	OldKeyEndsAt time.Time `json:"old_key_ends_at"`
}
