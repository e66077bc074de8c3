package pgstore

import (
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spkgate/spkgate/keystore"
)

// keyColumns are the columns scanKey reads, in order.
const keyColumns = `k.id, k.account_id, k.name, k.prefix, k.scopes, k.created_at, k.last_used_at, k.expires_at, k.revoked_at, k.allowed_ips, k.rate_requests, k.rate_window_us, coalesce(k.replaced_by, '')`

func micro(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// scanKey reads keyColumns, then extra.
func scanKey(row pgx.Row, extra ...any) (keystore.Key, error) {
	var (
		k            keystore.Key
		ips          []string
		rateN, rateW *int64
	)
	dest := append([]any{&k.ID, &k.AccountID, &k.Name, &k.Prefix, &k.Scopes, &k.CreatedAt, &k.LastUsedAt, &k.ExpiresAt, &k.RevokedAt,
		&ips, &rateN, &rateW, &k.ReplacedBy}, extra...)
	if err := row.Scan(dest...); err != nil {
		return keystore.Key{}, err
	}
	if err := decodeRestrictions(&k, ips, rateN, rateW); err != nil {
		return keystore.Key{}, err
	}
	if k.Scopes == nil {
		k.Scopes = []string{}
	}
	k.CreatedAt = k.CreatedAt.UTC()
	k.LastUsedAt = utcPtr(k.LastUsedAt)
	k.ExpiresAt = utcPtr(k.ExpiresAt)
	k.RevokedAt = utcPtr(k.RevokedAt)
	return k, nil
}

// credentialColumns are the columns scanCredential reads, in order: only
// what the gateway checks (see keystore.Credential).
const credentialColumns = `k.id, k.account_id, k.scopes, k.expires_at, k.revoked_at, k.allowed_ips, k.rate_requests, k.rate_window_us, coalesce(a.plan, '')`

// scanCredential reads credentialColumns, then extra.
func scanCredential(row pgx.Row, extra ...any) (keystore.Credential, error) {
	var (
		c            keystore.Credential
		ips          []string
		rateN, rateW *int64
	)
	k := &c.Key
	dest := append([]any{&k.ID, &k.AccountID, &k.Scopes, &k.ExpiresAt, &k.RevokedAt, &ips, &rateN, &rateW, &c.Plan}, extra...)
	if err := row.Scan(dest...); err != nil {
		return keystore.Credential{}, err
	}
	if err := decodeRestrictions(k, ips, rateN, rateW); err != nil {
		return keystore.Credential{}, err
	}
	if k.Scopes == nil {
		k.Scopes = []string{}
	}
	k.ExpiresAt = utcPtr(k.ExpiresAt)
	k.RevokedAt = utcPtr(k.RevokedAt)
	return c, nil
}

func toHash(b []byte) (keystore.Hash, error) {
	var h keystore.Hash
	if b == nil {
		return h, nil
	}
	if len(b) != keystore.HashSize {
		return h, &dataError{msg: "bad stored hash length"}
	}
	copy(h[:], b)
	return h, nil
}
