package keys

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/scope"
)

// Actor says who makes a change (see keystore.Actor): every changing
// method of a Manager takes one, and the store writes it into the change's
// audit event.
type Actor = keystore.Actor

// The sources of a change, for Actor.Source.
const (
	SourceAdminAPI = keystore.SourceAdminAPI
	SourceConsole  = keystore.SourceConsole
	SourceCLI      = keystore.SourceCLI
)

// Limits of what Update and Roll accept.
const (
	// MaxGrace is the longest grace period of a roll.
	MaxGrace = 7 * 24 * time.Hour
	// MaxAllowedIPs is the most CIDR prefixes a key may be restricted to.
	MaxAllowedIPs = 100
	// MaxKeyRatePerSecond is the highest rate a key's own limit may
	// express (requests divided by window, per second). A key's own limit
	// is meant to hold one integration well below its account's; 10,000
	// requests a second is more than one gateway instance serves, so a
	// higher figure can only be a mistake.
	MaxKeyRatePerSecond = 10000
	// MinRateWindow and MaxRateWindow bound a key's rate window.
	MinRateWindow = time.Second
	MaxRateWindow = 24 * time.Hour
	// maxActorLen bounds the text fields of an actor that are recorded.
	maxActorLen = 200
)

// ErrRolled is returned (wrapped) by Update and Roll for a key that was
// already rolled: the key that replaced it is the one to change.
var ErrRolled = keystore.ErrKeyRolled

// Optional is a field of a partial update: absent leaves the value as it
// is, JSON null clears it, anything else replaces it.
type Optional[T any] struct {
	// Set is true when the field was present.
	Set bool
	// Null is true when it was present as null.
	Null bool
	// Value is the value given (when Set and not Null).
	Value T
}

// Some returns an Optional that replaces the value with v.
func Some[T any](v T) Optional[T] { return Optional[T]{Set: true, Value: v} }

// Clear returns an Optional that clears the value.
func Clear[T any]() Optional[T] { return Optional[T]{Set: true, Null: true} }

// UnmarshalJSON records that the field was present, and whether as null.
// Objects inside refuse unknown fields.
func (o *Optional[T]) UnmarshalJSON(b []byte) error {
	o.Set = true
	if string(b) == "null" {
		o.Null = true
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(&o.Value)
}

// MarshalJSON encodes the value, or null.
func (o Optional[T]) MarshalJSON() ([]byte, error) {
	if !o.Set || o.Null {
		return []byte("null"), nil
	}
	return json.Marshal(o.Value)
}

// RateLimitSpec is a key's own rate limit as a request gives it:
// {"requests":10,"window":"1s"}.
type RateLimitSpec struct {
	// Requests is how many requests a window admits.
	Requests int `json:"requests"`
	// Window is a Go duration, e.g. "1s", "1m", "1h".
	Window string `json:"window"`
}

// ParseRateLimit checks a key's own rate limit: at least one request, a
// window from 1s to 24h, and at most MaxKeyRatePerSecond requests a second.
// Errors are FieldErrors of the field "rate_limit".
func ParseRateLimit(s RateLimitSpec) (keystore.RateLimit, error) {
	bad := func(msg string) (keystore.RateLimit, error) {
		return keystore.RateLimit{}, &FieldError{Field: "rate_limit", Message: msg}
	}
	if s.Requests < 1 {
		return bad("requests must be at least 1")
	}
	w, err := time.ParseDuration(strings.TrimSpace(s.Window))
	if err != nil {
		return bad(fmt.Sprintf("window %q is not a duration such as 1s, 1m or 1h", s.Window))
	}
	if w < MinRateWindow || w > MaxRateWindow {
		return bad(fmt.Sprintf("window must be between %v and %v", MinRateWindow, MaxRateWindow))
	}
	if w%time.Millisecond != 0 {
		return bad("window must be a whole number of milliseconds")
	}
	if float64(s.Requests)/w.Seconds() > MaxKeyRatePerSecond {
		return bad(fmt.Sprintf("%d requests per %v is above the highest rate a key may have, %d requests a second",
			s.Requests, w, MaxKeyRatePerSecond))
	}
	return keystore.RateLimit{Requests: s.Requests, Window: w}, nil
}

// ParseAllowedIPs checks a key's allowed client addresses: CIDR prefixes
// (IPv4 or IPv6) or single addresses (taken as /32 or /128), at most
// MaxAllowedIPs, without host bits set beyond the prefix length. Duplicates
// are dropped; the order is kept. Errors are FieldErrors of "allowed_ips".
func ParseAllowedIPs(ss []string) ([]netip.Prefix, error) {
	if len(ss) > MaxAllowedIPs {
		return nil, &FieldError{Field: "allowed_ips", Message: fmt.Sprintf("%d entries; at most %d are allowed", len(ss), MaxAllowedIPs)}
	}
	var out []netip.Prefix
	seen := make(map[netip.Prefix]bool, len(ss))
	for _, s := range ss {
		s = strings.TrimSpace(s)
		var p netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			if p, err = netip.ParsePrefix(s); err != nil {
				return nil, &FieldError{Field: "allowed_ips", Message: fmt.Sprintf("%q is not a CIDR prefix such as 203.0.113.0/24 or 2001:db8::/32", s)}
			}
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return nil, &FieldError{Field: "allowed_ips", Message: fmt.Sprintf("%q is not an IP address or CIDR prefix", s)}
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			return nil, &FieldError{Field: "allowed_ips", Message: fmt.Sprintf("%q: write IPv4-mapped addresses as IPv4", s)}
		}
		if m := p.Masked(); m != p {
			return nil, &FieldError{Field: "allowed_ips", Message: fmt.Sprintf("%q has bits set past its prefix length: did you mean %s or %s?",
				s, m, netip.PrefixFrom(p.Addr(), p.Addr().BitLen()))}
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

// ParseGrace reads a roll's grace period: a Go duration ("24h", "90m",
// "0s") or a whole number of days ("7d"); empty means none. It must be
// from 0 to MaxGrace. Errors are FieldErrors of "grace".
func ParseGrace(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	var (
		d   time.Duration
		err error
	)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var days int
		days, err = strconv.Atoi(n)
		if days < 0 || days > 365 {
			err = errors.New("out of range")
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil {
		return 0, &FieldError{Field: "grace", Message: fmt.Sprintf("%q is not a duration such as 0s, 1h, 24h or 7d", s)}
	}
	if d < 0 || d > MaxGrace {
		return 0, &FieldError{Field: "grace", Message: fmt.Sprintf("grace must be from 0 to 7 days (168h), not %v", d)}
	}
	return d, nil
}

// UpdateRequest is a partial edit of a key: the JSON body of
// PATCH /spk/keys/{id} and of the console's edit. Fields left out are
// kept; null clears expires_at, allowed_ips and rate_limit, and makes
// scopes full access.
type UpdateRequest struct {
	// Name is the new name (as for CreateRequest.Name).
	Name Optional[string] `json:"name"`
	// Scopes replace the key's scopes; [] or null means full access.
	Scopes Optional[[]string] `json:"scopes"`
	// ExpiresAt is the new expiry (in the future), or null for none.
	ExpiresAt Optional[time.Time] `json:"expires_at"`
	// AllowedIPs replace the client addresses the key may be used from
	// (CIDR prefixes or addresses); [] or null means any address.
	AllowedIPs Optional[[]string] `json:"allowed_ips"`
	// RateLimit is the key's own rate limit, or null for none.
	RateLimit Optional[RateLimitSpec] `json:"rate_limit"`
}

// UnmarshalJSON decodes a JSON object field by field, so that a field
// of the wrong type, or one that UpdateRequest does not have, is a
// FieldError naming it.
func (u *UpdateRequest) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if raw == nil {
		return errors.New("the body must be a JSON object")
	}
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		v := raw[name]
		var err error
		switch name {
		case "name":
			err = u.Name.UnmarshalJSON(v)
		case "scopes":
			err = u.Scopes.UnmarshalJSON(v)
		case "expires_at":
			err = u.ExpiresAt.UnmarshalJSON(v)
		case "allowed_ips":
			err = u.AllowedIPs.UnmarshalJSON(v)
		case "rate_limit":
			err = u.RateLimit.UnmarshalJSON(v)
		default:
			return &FieldError{Field: name, Message: "unknown field"}
		}
		if err != nil {
			return &FieldError{Field: name, Message: fieldTypeMessage[name]}
		}
	}
	return nil
}

var fieldTypeMessage = map[string]string{
	"name":        "must be a string",
	"scopes":      "must be a list of scope names",
	"expires_at":  "must be an RFC 3339 time or null",
	"allowed_ips": "must be a list of CIDR prefixes or null",
	"rate_limit":  `must be {"requests":<number>,"window":"<duration>"} or null`,
}

// validated is an UpdateRequest checked and normalised.
type validated struct {
	req        UpdateRequest
	name       string
	scopes     []string
	expiresAt  *time.Time
	allowedIPs []netip.Prefix
	rateLimit  *keystore.RateLimit
}

func (m *Manager) validateUpdate(req UpdateRequest) (*validated, error) {
	v := &validated{req: req}
	if req.Name.Set {
		if req.Name.Null {
			return nil, &FieldError{Field: "name", Message: "name cannot be null"}
		}
		probe := CreateRequest{Name: req.Name.Value}
		if err := validateName(&probe); err != nil {
			return nil, err
		}
		v.name = probe.Name
	}
	if req.Scopes.Set {
		sc, err := scope.Normalize(req.Scopes.Value)
		if err != nil {
			return nil, &FieldError{Field: "scopes", Message: err.Error()}
		}
		if sc == nil {
			sc = []string{}
		}
		v.scopes = sc
	}
	if req.ExpiresAt.Set && !req.ExpiresAt.Null {
		t := req.ExpiresAt.Value.UTC().Truncate(time.Microsecond)
		if !t.After(m.now()) {
			return nil, &FieldError{Field: "expires_at", Message: "expiry must be in the future"}
		}
		v.expiresAt = &t
	}
	if req.AllowedIPs.Set {
		ps, err := ParseAllowedIPs(req.AllowedIPs.Value)
		if err != nil {
			return nil, err
		}
		v.allowedIPs = ps
	}
	if req.RateLimit.Set && !req.RateLimit.Null {
		rl, err := ParseRateLimit(req.RateLimit.Value)
		if err != nil {
			return nil, err
		}
		v.rateLimit = &rl
	}
	return v, nil
}

// apply sets the fields v changes on k.
func (v *validated) apply(k *keystore.Key) {
	if v.req.Name.Set {
		k.Name = v.name
	}
	if v.req.Scopes.Set {
		k.Scopes = v.scopes
	}
	if v.req.ExpiresAt.Set {
		k.ExpiresAt = v.expiresAt
	}
	if v.req.AllowedIPs.Set {
		k.AllowedIPs = v.allowedIPs
	}
	if v.req.RateLimit.Set {
		k.RateLimit = v.rateLimit
	}
}

// checkActor refuses an actor without a known source, and bounds the
// recorded text.
func checkActor(a *Actor) error {
	switch a.Source {
	case SourceAdminAPI, SourceConsole, SourceCLI:
	default:
		return fmt.Errorf("keys: actor source %q is not one of admin_api, console, cli", a.Source)
	}
	a.Name = clip(a.Name)
	a.IP = clip(a.IP)
	a.UserAgent = clip(a.UserAgent)
	return nil
}

// clip keeps at most maxActorLen bytes of valid, printable UTF-8.
func clip(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	if len(s) > maxActorLen {
		s = s[:maxActorLen]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}

// audited returns ctx carrying actor for the store, with the Manager's
// audit log as the receiver of the events written.
func (m *Manager) audited(ctx context.Context, actor Actor) (context.Context, error) {
	if err := checkActor(&actor); err != nil {
		return nil, err
	}
	return keystore.WithAudit(ctx, keystore.Audit{Actor: actor, Written: m.logEvent}), nil
}

// logEvent writes one line on the audit logger for a committed event.
func (m *Manager) logEvent(ev keystore.Event) {
	if m.AuditLog == nil {
		return
	}
	var details any = map[string]any{}
	_ = json.Unmarshal(ev.Details, &details)
	m.AuditLog.Info("audit event",
		zap.Int64("event_id", ev.ID),
		zap.Time("at", ev.At),
		zap.String("action", string(ev.Action)),
		zap.String("account_id", ev.AccountID),
		zap.String("actor", ev.Actor),
		zap.String("source", ev.Source),
		zap.String("ip", ev.IP),
		zap.String("user_agent", ev.UserAgent),
		zap.String("key_id", ev.KeyID),
		zap.String("key_prefix", ev.KeyPrefix),
		zap.String("key_name", ev.KeyName),
		zap.Any("details", details),
	)
}

// usableForChange refuses (as not found) a key that has expired: only
// an active key can be edited or rolled.
func (m *Manager) usableForChange(k *keystore.Key) error {
	if k.ExpiresAt != nil && !m.now().Before(*k.ExpiresAt) {
		return fmt.Errorf("key has expired: %w", keystore.ErrNotFound)
	}
	return nil
}

// Update edits a key: any of its name, scopes, expiry, allowed IPs and own
// rate limit (see UpdateRequest). With a non-empty accountID only that
// account's key can be edited. An unknown, revoked or expired key, or
// another account's, is keystore.ErrNotFound; a rolled key is ErrRolled;
// bad input is a FieldError; in each case nothing changes and no event is
// written. Every instance applies the edit on the key's next request.
func (m *Manager) Update(ctx context.Context, actor Actor, accountID, keyID string, req UpdateRequest) (keystore.Key, error) {
	if accountID != "" {
		if err := ValidateAccount(accountID); err != nil {
			return keystore.Key{}, err
		}
	}
	v, err := m.validateUpdate(req)
	if err != nil {
		return keystore.Key{}, err
	}
	ctx, err = m.audited(ctx, actor)
	if err != nil {
		return keystore.Key{}, err
	}
	k, err := m.Store.UpdateKey(ctx, accountID, keyID, func(k *keystore.Key) error {
		if err := m.usableForChange(k); err != nil {
			return err
		}
		v.apply(k)
		return nil
	})
	if err != nil {
		return keystore.Key{}, err
	}
	if m.Cache != nil {
		m.Cache.InvalidateAccount(k.AccountID)
	}
	if k.Scopes == nil {
		k.Scopes = []string{}
	}
	return k, nil
}

// RollRequest is the body of POST /spk/keys/{id}/roll.
type RollRequest struct {
	// Grace is how long the old key keeps working: "0s" to "168h" (or
	// "7d"); empty means it stops at once.
	Grace string `json:"grace"`
}

// Rolled is the answer to a roll: the new key, with its secret shown once.
type Rolled struct {
	Created
	// Replaces is the id of the key it replaces.
	Replaces string `json:"replaces"`
	// OldKeyExpiresAt is when the old key stops working.
	OldKeyExpiresAt time.Time `json:"old_key_expires_at"`
}

// Roll replaces a key with a new one of the same name, scopes, expiry and
// restrictions, shown once. The old key keeps working for the grace
// period (0 to 7 days; it keeps an earlier expiry of its own), then gets
// the same 401 as a revoked key on every instance. With a non-empty
// accountID only that account's key can be rolled. Errors as for Update.
func (m *Manager) Roll(ctx context.Context, actor Actor, accountID, keyID string, req RollRequest) (Rolled, error) {
	if accountID != "" {
		if err := ValidateAccount(accountID); err != nil {
			return Rolled{}, err
		}
	}
	grace, err := ParseGrace(req.Grace)
	if err != nil {
		return Rolled{}, err
	}
	ctx, err = m.audited(ctx, actor)
	if err != nil {
		return Rolled{}, err
	}
	for attempt := 0; ; attempt++ {
		g, err := apikey.Generate()
		if err != nil {
			return Rolled{}, err
		}
		now := m.now().UTC().Truncate(time.Microsecond)
		old, nk, err := m.Store.RollKey(ctx, accountID, keyID, keystore.Roll{
			ID: g.ID, Prefix: g.Display, Hash: g.Hash, At: now, Ends: now.Add(grace),
		}, func(old keystore.Key) error { return m.usableForChange(&old) })
		if errors.Is(err, keystore.ErrConflict) && attempt < 2 {
			continue // a random id collided: draw again
		}
		if err != nil {
			return Rolled{}, err
		}
		if m.Cache != nil {
			m.Cache.InvalidateUnknown()
			m.Cache.Forget(g.Hash)
			m.Cache.InvalidateAccount(old.AccountID)
		}
		if nk.Scopes == nil {
			nk.Scopes = []string{}
		}
		r := Rolled{Created: Created{Key: nk, Secret: g.Secret}, Replaces: old.ID}
		if old.ExpiresAt != nil {
			r.OldKeyExpiresAt = *old.ExpiresAt
		}
		return r, nil
	}
}

// EventsResponse is the body of an account's audit events.
type EventsResponse struct {
	// Events are newest first.
	Events []keystore.Event `json:"events"`
}

// Events returns a page of the account's audit events, newest first.
func (m *Manager) Events(ctx context.Context, accountID string, q keystore.EventQuery) ([]keystore.Event, error) {
	if err := ValidateAccount(accountID); err != nil {
		return nil, err
	}
	if q.Limit < 0 || q.Limit > keystore.MaxEventLimit {
		return nil, &FieldError{Field: "limit", Message: fmt.Sprintf("limit must be from 1 to %d", keystore.MaxEventLimit)}
	}
	if q.Before < 0 {
		return nil, &FieldError{Field: "before", Message: "before must be an event id"}
	}
	return m.Store.Events(ctx, accountID, q)
}

// ParseEventQuery reads ?limit= and ?before= (an event id) of a request.
func ParseEventQuery(r *http.Request) (keystore.EventQuery, error) {
	var q keystore.EventQuery
	qs := r.URL.Query()
	if s := qs.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > keystore.MaxEventLimit {
			return q, &FieldError{Field: "limit", Message: fmt.Sprintf("limit must be a number from 1 to %d", keystore.MaxEventLimit)}
		}
		q.Limit = n
	}
	if s := qs.Get("before"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return q, &FieldError{Field: "before", Message: "before must be the id of an event"}
		}
		q.Before = n
	}
	return q, nil
}

// RequestActor is the actor of an HTTP request: name, the given source,
// the client address (ip if not empty, else the host of r.RemoteAddr) and
// the User-Agent.
func RequestActor(r *http.Request, name, source, ip string) Actor {
	if ip == "" {
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			ip = host
		} else {
			ip = r.RemoteAddr
		}
	}
	return Actor{Name: name, Source: source, IP: ip, UserAgent: r.UserAgent()}
}
