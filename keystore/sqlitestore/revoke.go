package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// RevokeKey marks the key revoked and records a ChangeRevoked in the same
// transaction, and returns the key and its hash.
func (s *Store) RevokeKey(ctx context.Context, accountID, keyID string) (keystore.Key, keystore.Hash, error) {
	const op = "revoke key"
	if err := s.closedErr(op); err != nil {
		return keystore.Key{}, keystore.Hash{}, err
	}
	var (
		k keystore.Key
		h keystore.Hash
	)
	now := time.Now()
	audit := keystore.AuditFrom(ctx)
	var ev keystore.Event
	err := s.write(ctx, func(tx *sql.Tx) error {
		var raw []byte
		var err error
		k, err = scanKey(tx.QueryRowContext(ctx, `UPDATE api_keys SET revoked_at = ?1
			WHERE id = ?2 AND (?3 = '' OR account_id = ?3) AND revoked_at IS NULL
			RETURNING `+returningColumns+`, key_hash`, formatTime(now), keyID, accountID), &raw)
		if err != nil {
			return err
		}
		if h, err = toHash(raw); err != nil {
			return err
		}
		if err := insertChange(ctx, tx, keystore.ChangeRevoked, k.AccountID, &h, now); err != nil {
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
// it revoked.
func (s *Store) RevokeAccountKeys(ctx context.Context, accountID string) (int, error) {
	const op = "revoke account keys"
	if accountID == "" {
		return 0, invalid(op, "empty account id")
	}
	if err := s.closedErr(op); err != nil {
		return 0, err
	}
	now := time.Now()
	audit := keystore.AuditFrom(ctx)
	var (
		n  int
		ev keystore.Event
	)
	err := s.write(ctx, func(tx *sql.Tx) error {
		n = 0
		rows, err := tx.QueryContext(ctx, `UPDATE api_keys SET revoked_at = ?1
			WHERE account_id = ?2 AND revoked_at IS NULL
			RETURNING key_hash`, formatTime(now), accountID)
		if err != nil {
			return err
		}
		var hashes []keystore.Hash
		for rows.Next() {
			var raw []byte
			if err := rows.Scan(&raw); err != nil {
				rows.Close()
				return err
			}
			h, err := toHash(raw)
			if err != nil {
				rows.Close()
				return err
			}
			hashes = append(hashes, h)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO changes (kind, account_id, key_hash, at) VALUES (?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		at := formatTime(now)
		for _, h := range hashes {
			if _, err := stmt.ExecContext(ctx, string(keystore.ChangeRevoked), accountID, h[:], at); err != nil {
				return err
			}
		}
		if len(hashes) == 0 {
			return nil
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
