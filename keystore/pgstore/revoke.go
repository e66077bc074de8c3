package pgstore

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spkgate/spkgate/keystore"
)

// RevokeKey marks the key revoked and records a ChangeRevoked in the same
// transaction, and returns the key and its hash.
func (s *Store) RevokeKey(ctx context.Context, accountID, keyID string) (keystore.Key, keystore.Hash, error) {
	const op = "revoke key"
	if err := s.closedErr(op); err != nil {
		return keystore.Key{}, keystore.Hash{}, err
	}
	ctx, cancel := withTimeout(ctx, WriteTimeout)
	defer cancel()
	var (
		k keystore.Key
		h keystore.Hash
	)
	now := micro(time.Now())
	audit := keystore.AuditFrom(ctx)
	var ev keystore.Event
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var raw []byte
		var err error
		k, err = scanKey(tx.QueryRow(ctx, `UPDATE api_keys k SET revoked_at = $3
			WHERE k.id = $1 AND ($2::text = '' OR k.account_id = $2) AND k.revoked_at IS NULL
			RETURNING `+keyColumns+`, k.key_hash`, keyID, accountID, now), &raw)
		if err != nil {
			return err
		}
		if h, err = toHash(raw); err != nil {
			return err
		}
		if err := recordChange(ctx, tx, keystore.ChangeRevoked, k.AccountID, &h, now); err != nil {
			return err
		}
		if ev, err = keystore.NewEvent(audit, keystore.ActionKeyRevoked, now, &k, nil); err != nil {
			return err
		}
		return insertEvent(ctx, tx, &ev)
	})
	if err != nil {
		return keystore.Key{}, keystore.Hash{}, s.errorf(op, err)
	}
	audit.Announce(ev)
	return k, h, nil
}

// RevokeAccountKeys revokes every active key of the account and records a
// ChangeRevoked for each, all in one transaction, and returns how many keys
// it revoked. The rows are locked in id order before the change log's
// advisory lock is taken, as TouchKeys and RevokeKey lock them, so that
// none of them can deadlock with another.
func (s *Store) RevokeAccountKeys(ctx context.Context, accountID string) (int, error) {
	const op = "revoke account keys"
	if accountID == "" {
		return 0, invalid(op, "empty account id")
	}
	if err := s.closedErr(op); err != nil {
		return 0, err
	}
	ctx, cancel := withTimeout(ctx, BulkWriteTimeout)
	defer cancel()
	now := micro(time.Now())
	audit := keystore.AuditFrom(ctx)
	var (
		n  int
		ev keystore.Event
	)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		n = 0
		rows, err := tx.Query(ctx, `UPDATE api_keys k SET revoked_at = $2
			FROM (SELECT id FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL
				ORDER BY id FOR UPDATE) AS l
			WHERE k.id = l.id AND k.revoked_at IS NULL
			RETURNING k.key_hash`, accountID, now)
		if err != nil {
			return err
		}
		hashes, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) ([]byte, error) {
			var raw []byte
			if err := row.Scan(&raw); err != nil {
				return nil, err
			}
			if _, err := toHash(raw); err != nil {
				return nil, err
			}
			return raw, nil
		})
		if err != nil || len(hashes) == 0 {
			return err
		}
		b := &pgx.Batch{}
		b.Queue(`SELECT pg_advisory_xact_lock($1)`, changesLockKey)
		b.Queue(`INSERT INTO changes (kind, account_id, key_hash, at)
			SELECT $1, $2, u.h, $4 FROM unnest($3::bytea[]) WITH ORDINALITY AS u(h, i) ORDER BY u.i`,
			string(keystore.ChangeRevoked), accountID, hashes, now)
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		ev, err = keystore.NewEvent(audit, keystore.ActionAccountKeysRevoked, now,
			&keystore.Key{AccountID: accountID}, keystore.RevokedDetails{Revoked: len(hashes)})
		if err != nil {
			return err
		}
		if err := insertEvent(ctx, tx, &ev); err != nil {
			return err
		}
		n = len(hashes)
		return nil
	})
	if err != nil {
		return 0, s.errorf(op, err)
	}
	if n > 0 {
		audit.Announce(ev)
	}
	return n, nil
}
