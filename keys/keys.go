// Package keys is the one place where API keys are created, listed and
// revoked, and plans recorded: the admin API, the console and the command
// line all go through a Manager, so that validation and cache invalidation
// are the same everywhere.
package keys

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/scope"
)

// MaxNameLen is the longest key name, in characters.
const MaxNameLen = 100

// FieldError is a validation error about one request field. Its message is
// safe to show to the user.
type FieldError struct {
	// Field is the JSON name of the field, e.g. "name".
	Field string `json:"field"`
	// Message says what is wrong with it.
	Message string `json:"message"`
}

// Error returns "field: message".
func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// Invalidator is told about changes made through the Manager, so that the
// local cache reflects them at once (other instances read the change log).
// *keycache.Cache implements it.
type Invalidator interface {
	InvalidateAccount(accountID string)
	InvalidateUnknown()
	Forget(h keystore.Hash)
}

// Manager creates, lists and revokes keys and records plans.
type Manager struct {
	// Store is where keys live.
	Store keystore.Store
	// Cache, if not nil, is invalidated after every change.
	Cache Invalidator
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// AuditLog, if not nil, gets one line per audit event once its change
	// has committed (the logger "spk.audit" in Caddy). Never a secret.
	AuditLog *zap.Logger
}

// CreateRequest is what a key is created from. It is the JSON body of the
// admin API and the console API.
type CreateRequest struct {
	// Name is a descriptive name, e.g. "ci-pipeline". Required; trimmed; at
	// most 100 characters.
	Name string `json:"name"`
	// Scopes limit what the key may do; none means full access.
	Scopes []string `json:"scopes"`
	// ExpiresAt is when the key stops working; nil means never.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// RateLimit is the key's own rate, below its account's; nil means
	// the account's limit alone applies (see ParseRateLimit).
	RateLimit *RateLimitSpec `json:"rate_limit,omitempty"`

	rateLimit *keystore.RateLimit // RateLimit, checked by Validate
}

// Created is a new key: the only time its secret is available.
type Created struct {
	keystore.Key
	// Secret is the whole key, shown once.
	Secret string `json:"key"`
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// ValidateAccount checks an account id: non-empty, printable, at most 200 bytes.
func ValidateAccount(accountID string) error {
	if accountID == "" {
		return &FieldError{Field: "account", Message: "account id is empty"}
	}
	if len(accountID) > 200 || !utf8.ValidString(accountID) || strings.IndexFunc(accountID, unicode.IsControl) >= 0 {
		return &FieldError{Field: "account", Message: "account id must be printable text of at most 200 bytes"}
	}
	return nil
}

// Validate checks and normalises req: the trimmed name, known scopes in
// their canonical order, and an expiry in the future.
func (m *Manager) Validate(req *CreateRequest) error {
	if err := validateName(req); err != nil {
		return err
	}
	sc, err := scope.Normalize(req.Scopes)
	if err != nil {
		return &FieldError{Field: "scopes", Message: err.Error()}
	}
	req.Scopes = sc
	if req.ExpiresAt != nil {
		t := req.ExpiresAt.UTC().Truncate(time.Microsecond)
		if !t.After(m.now()) {
			return &FieldError{Field: "expires_at", Message: "expiry must be in the future"}
		}
		req.ExpiresAt = &t
	}
	req.rateLimit = nil
	if req.RateLimit != nil {
		rl, err := ParseRateLimit(*req.RateLimit)
		if err != nil {
			return err
		}
		req.rateLimit = &rl
	}
	return nil
}

// validateName trims req.Name and checks it.
func validateName(req *CreateRequest) error {
	req.Name = strings.TrimSpace(req.Name)
	switch n := utf8.RuneCountInString(req.Name); {
	case !utf8.ValidString(req.Name):
		return &FieldError{Field: "name", Message: "name must be valid UTF-8"}
	case n == 0:
		return &FieldError{Field: "name", Message: "name is required"}
	case n > MaxNameLen:
		return &FieldError{Field: "name", Message: fmt.Sprintf("name is %d characters long; at most %d are allowed", n, MaxNameLen)}
	case strings.IndexFunc(req.Name, unicode.IsControl) >= 0:
		return &FieldError{Field: "name", Message: "name must not contain control characters"}
	}
	return nil
}

// Create validates req and stores a new key for the account, recording a
// key.created event by actor.
func (m *Manager) Create(ctx context.Context, actor Actor, accountID string, req CreateRequest) (Created, error) {
	if err := ValidateAccount(accountID); err != nil {
		return Created{}, err
	}
	if err := m.Validate(&req); err != nil {
		return Created{}, err
	}
	ctx, err := m.audited(ctx, actor)
	if err != nil {
		return Created{}, err
	}
	for attempt := 0; ; attempt++ {
		g, err := apikey.Generate()
		if err != nil {
			return Created{}, err
		}
		k, err := m.Store.CreateKey(ctx, keystore.CreateKeyParams{
			ID:        g.ID,
			AccountID: accountID,
			Name:      req.Name,
			Prefix:    g.Display,
			Hash:      g.Hash,
			Scopes:    req.Scopes,
			CreatedAt: m.now().UTC().Truncate(time.Microsecond),
			ExpiresAt: req.ExpiresAt,
			RateLimit: req.rateLimit,
		})
		if errors.Is(err, keystore.ErrConflict) && attempt < 2 {
			continue // a random id collided: draw again
		}
		if err != nil {
			return Created{}, err
		}
		if m.Cache != nil {
			m.Cache.InvalidateUnknown()
			m.Cache.Forget(g.Hash)
		}
		if k.Scopes == nil {
			k.Scopes = []string{}
		}
		return Created{Key: k, Secret: g.Secret}, nil
	}
}

// List returns the account's active keys, newest first.
func (m *Manager) List(ctx context.Context, accountID string) ([]keystore.Key, error) {
	if err := ValidateAccount(accountID); err != nil {
		return nil, err
	}
	ks, err := m.Store.ListKeys(ctx, accountID)
	for i := range ks {
		if ks[i].Scopes == nil {
			ks[i].Scopes = []string{}
		}
	}
	if ks == nil && err == nil {
		ks = []keystore.Key{}
	}
	return ks, err
}

// Revoke revokes a key. With a non-empty accountID only that account's key
// can be revoked; another account's or an unknown id is keystore.ErrNotFound.
// The local cache forgets the key at once. It records a key.revoked event
// by actor.
func (m *Manager) Revoke(ctx context.Context, actor Actor, accountID, keyID string) (keystore.Key, error) {
	ctx, err := m.audited(ctx, actor)
	if err != nil {
		return keystore.Key{}, err
	}
	k, h, err := m.Store.RevokeKey(ctx, accountID, keyID)
	if err != nil {
		return keystore.Key{}, err
	}
	if m.Cache != nil {
		m.Cache.InvalidateAccount(k.AccountID)
		m.Cache.Forget(h)
	}
	return k, nil
}

// RevokeAccount revokes every active key of the account in one
// transaction (an account that was compromised or closed) and returns how
// many it revoked. The local cache forgets them at once; other instances
// learn of it as of any other revocation. It records one
// account.keys_revoked event by actor (none when there was no key).
func (m *Manager) RevokeAccount(ctx context.Context, actor Actor, accountID string) (int, error) {
	if err := ValidateAccount(accountID); err != nil {
		return 0, err
	}
	ctx, err := m.audited(ctx, actor)
	if err != nil {
		return 0, err
	}
	n, err := m.Store.RevokeAccountKeys(ctx, accountID)
	if err != nil {
		return 0, err
	}
	if n > 0 && m.Cache != nil {
		m.Cache.InvalidateAccount(accountID)
	}
	return n, nil
}

// SetPlan records the account's plan. The local cache re-reads the
// account's keys on their next use. A change of plan records an
// account.plan_changed event by actor.
func (m *Manager) SetPlan(ctx context.Context, actor Actor, accountID, plan string) error {
	if err := ValidateAccount(accountID); err != nil {
		return err
	}
	plan = strings.ToLower(strings.TrimSpace(plan))
	if plan == "" || len(plan) > 64 || strings.IndexFunc(plan, unicode.IsControl) >= 0 {
		return &FieldError{Field: "plan", Message: "plan must be a non-empty name of at most 64 bytes"}
	}
	ctx, err := m.audited(ctx, actor)
	if err != nil {
		return err
	}
	changed, err := m.Store.SetPlan(ctx, accountID, plan)
	if err != nil {
		return err
	}
	if changed && m.Cache != nil {
		m.Cache.InvalidateAccount(accountID)
	}
	return nil
}
