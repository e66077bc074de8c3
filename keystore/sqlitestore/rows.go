package sqlitestore

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// timeLayout is how times are stored: UTC, fixed width, microseconds.
const timeLayout = "2006-01-02T15:04:05.000000Z"

func formatTime(t time.Time) string { return t.UTC().Truncate(time.Microsecond).Format(timeLayout) }

func formatTimePtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return formatTime(*t)
}

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad stored time %q", s)
	}
	return t.UTC(), nil
}

func parseTimePtr(ns sql.NullString) (*time.Time, error) {
	if !ns.Valid {
		return nil, nil
	}
	t, err := parseTime(ns.String)
	if err != nil {
		return nil, err
	}
	return &t, nil
}

func encodeScopes(scopes []string) (string, error) {
	if len(scopes) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(scopes)
	return string(b), err
}

// keyColumns are the columns scanKey reads, in order; returningColumns
// are the same without the table alias, which RETURNING does not accept.
const (
	keyColumns       = `k.id, k.account_id, k.name, k.prefix, k.scopes, k.created_at, k.last_used_at, k.expires_at, k.revoked_at, k.allowed_ips, k.rate_requests, k.rate_window_us, k.replaced_by`
	returningColumns = `id, account_id, name, prefix, scopes, created_at, last_used_at, expires_at, revoked_at, allowed_ips, rate_requests, rate_window_us, replaced_by`
)

// credentialColumns are the columns scanCredential reads, in order: only
// what the gateway checks (see keystore.Credential).
const credentialColumns = `k.id, k.account_id, k.scopes, k.expires_at, k.revoked_at, k.allowed_ips, k.rate_requests, k.rate_window_us, coalesce(a.plan, '')`

type scanner interface{ Scan(dest ...any) error }

// scanKey reads keyColumns, then extra.
func scanKey(row scanner, extra ...any) (keystore.Key, error) {
	var (
		k                                      keystore.Key
		scopes, created, ips                   string
		lastUsed, expires, revoked, replacedBy sql.NullString
		rateN, rateW                           sql.NullInt64
	)
	dest := append([]any{&k.ID, &k.AccountID, &k.Name, &k.Prefix, &scopes, &created, &lastUsed, &expires, &revoked,
		&ips, &rateN, &rateW, &replacedBy}, extra...)
	if err := row.Scan(dest...); err != nil {
		return keystore.Key{}, err
	}
	var err error
	if k.Scopes, err = parseScopes(scopes); err != nil {
		return keystore.Key{}, err
	}
	if k.CreatedAt, err = parseTime(created); err != nil {
		return keystore.Key{}, err
	}
	if k.LastUsedAt, err = parseTimePtr(lastUsed); err != nil {
		return keystore.Key{}, err
	}
	if k.ExpiresAt, err = parseTimePtr(expires); err != nil {
		return keystore.Key{}, err
	}
	if k.RevokedAt, err = parseTimePtr(revoked); err != nil {
		return keystore.Key{}, err
	}
	if err := decodeRestrictions(&k, ips, rateN, rateW); err != nil {
		return keystore.Key{}, err
	}
	k.ReplacedBy = replacedBy.String
	return k, nil
}

// scanCredential reads credentialColumns, then extra.
func scanCredential(row scanner, extra ...any) (keystore.Credential, error) {
	var (
		c                keystore.Credential
		scopes, ips      string
		expires, revoked sql.NullString
		rateN, rateW     sql.NullInt64
	)
	dest := append([]any{&c.Key.ID, &c.Key.AccountID, &scopes, &expires, &revoked, &ips, &rateN, &rateW, &c.Plan}, extra...)
	if err := row.Scan(dest...); err != nil {
		return keystore.Credential{}, err
	}
	var err error
	if c.Key.Scopes, err = parseScopes(scopes); err != nil {
		return keystore.Credential{}, err
	}
	if c.Key.ExpiresAt, err = parseTimePtr(expires); err != nil {
		return keystore.Credential{}, err
	}
	if c.Key.RevokedAt, err = parseTimePtr(revoked); err != nil {
		return keystore.Credential{}, err
	}
	if err := decodeRestrictions(&c.Key, ips, rateN, rateW); err != nil {
		return keystore.Credential{}, err
	}
	return c, nil
}

// parseScopes decodes the scopes column (a JSON array) into a non-nil slice.
func parseScopes(stored string) ([]string, error) {
	scopes := []string{}
	if err := json.Unmarshal([]byte(stored), &scopes); err != nil {
		return nil, fmt.Errorf("bad stored scopes: %w", err)
	}
	if scopes == nil {
		scopes = []string{}
	}
	return scopes, nil
}

func toHash(b []byte) (keystore.Hash, error) {
	var h keystore.Hash
	if b == nil {
		return h, nil
	}
	if len(b) != keystore.HashSize {
		return h, fmt.Errorf("bad stored hash length %d", len(b))
	}
	copy(h[:], b)
	return h, nil
}
