package sqlitestore

import (
	"context"
	"database/sql"
	"net/netip"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// CreateKey stores a new key and records a ChangeCreated in the same
// transaction. A zero CreatedAt means now; times are kept to the
// microsecond, in UTC.
func (s *Store) CreateKey(ctx context.Context, nk keystore.CreateKeyParams) (keystore.Key, error) {
	const op = "create key"
	switch {
	case nk.ID == "":
		return keystore.Key{}, invalid(op, "empty key id")
	case nk.AccountID == "":
		return keystore.Key{}, invalid(op, "empty account id")
	case nk.Hash == keystore.Hash{}:
		return keystore.Key{}, invalid(op, "zero key hash")
	}
	if err := s.closedErr(op); err != nil {
		return keystore.Key{}, err
	}
	scopes, err := encodeScopes(nk.Scopes)
	if err != nil {
		return keystore.Key{}, invalid(op, "scopes cannot be encoded")
	}
	now := time.Now()
	if nk.CreatedAt.IsZero() {
		nk.CreatedAt = now
	}
	k := keystore.Key{
		ID:        nk.ID,
		AccountID: nk.AccountID,
		Name:      nk.Name,
		Prefix:    nk.Prefix,
		Scopes:    append([]string{}, nk.Scopes...),
		CreatedAt: nk.CreatedAt.UTC().Truncate(time.Microsecond),
	}
	if nk.ExpiresAt != nil {
		e := nk.ExpiresAt.UTC().Truncate(time.Microsecond)
		k.ExpiresAt = &e
	}
	k.AllowedIPs = append([]netip.Prefix(nil), nk.AllowedIPs...)
	if nk.RateLimit != nil {
		rl := *nk.RateLimit
		k.RateLimit = &rl
	}
	ips, rateN, rateW, err := encodeRestrictions(&k)
	if err != nil {
		return keystore.Key{}, invalid(op, err.Error())
	}
	audit := keystore.AuditFrom(ctx)
	ev, err := keystore.NewEvent(audit, keystore.ActionKeyCreated, now, &k, keystore.CreateDetails(&k))
	if err != nil {
		return keystore.Key{}, invalid(op, err.Error())
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO api_keys
			(id, account_id, name, prefix, key_hash, scopes, created_at, expires_at, allowed_ips, rate_requests, rate_window_us)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			k.ID, k.AccountID, k.Name, k.Prefix, nk.Hash[:], scopes, formatTime(k.CreatedAt), formatTimePtr(k.ExpiresAt),
			ips, rateN, rateW); err != nil {
			return err
		}
		if err := insertChange(ctx, tx, keystore.ChangeCreated, k.AccountID, &nk.Hash, now); err != nil {
			return err
		}
		return insertEvent(ctx, tx, &ev)
	})
	if err != nil {
		return keystore.Key{}, s.errorf(op, err)
	}
	audit.Announce(ev)
	return k, nil
}

// ListKeys returns the account's keys that are not revoked, newest first.
func (s *Store) ListKeys(ctx context.Context, accountID string) ([]keystore.Key, error) {
	const op = "list keys"
	if err := s.closedErr(op); err != nil {
		return nil, err
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+keyColumns+` FROM api_keys k
		WHERE k.account_id = ? AND k.revoked_at IS NULL
		ORDER BY k.created_at DESC, k.id DESC`, accountID)
	if err != nil {
		return nil, s.errorf(op, err)
	}
	defer rows.Close()
	keys := []keystore.Key{}
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, s.errorf(op, err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, s.errorf(op, err)
	}
	return keys, nil
}

// GetKey returns one key by id, revoked or not. With a non-empty
// accountID, another account's key is keystore.ErrNotFound.
func (s *Store) GetKey(ctx context.Context, accountID, keyID string) (keystore.Key, error) {
	const op = "get key"
	if err := s.closedErr(op); err != nil {
		return keystore.Key{}, err
	}
	k, err := scanKey(s.rdb.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys k
		WHERE k.id = ?1 AND (?2 = '' OR k.account_id = ?2)`, keyID, accountID))
	if err != nil {
		return keystore.Key{}, s.errorf(op, err)
	}
	return k, nil
}
