package pgstore

import (
	"context"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5"

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
	now := micro(time.Now())
	if nk.CreatedAt.IsZero() {
		nk.CreatedAt = now
	}
	k := keystore.Key{
		ID:        nk.ID,
		AccountID: nk.AccountID,
		Name:      nk.Name,
		Prefix:    nk.Prefix,
		Scopes:    append([]string{}, nk.Scopes...),
		CreatedAt: micro(nk.CreatedAt),
	}
	if nk.ExpiresAt != nil {
		e := micro(*nk.ExpiresAt)
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
	ctx, cancel := withTimeout(ctx, WriteTimeout)
	defer cancel()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO api_keys
			(id, account_id, name, prefix, key_hash, scopes, created_at, expires_at, allowed_ips, rate_requests, rate_window_us)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			k.ID, k.AccountID, k.Name, k.Prefix, nk.Hash[:], k.Scopes, k.CreatedAt, k.ExpiresAt, ips, rateN, rateW); err != nil {
			return err
		}
		if err := recordChange(ctx, tx, keystore.ChangeCreated, k.AccountID, &nk.Hash, now); err != nil {
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
	ctx, cancel := withTimeout(ctx, QueryTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT `+keyColumns+` FROM api_keys k
		WHERE k.account_id = $1 AND k.revoked_at IS NULL
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
	ctx, cancel := withTimeout(ctx, QueryTimeout)
	defer cancel()
	k, err := scanKey(s.pool.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys k
		WHERE k.id = $1 AND ($2::text = '' OR k.account_id = $2)`, keyID, accountID))
	if err != nil {
		return keystore.Key{}, s.errorf(op, err)
	}
	return k, nil
}
