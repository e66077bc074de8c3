package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// encodeRestrictions gives the allowed_ips, rate_requests and
// rate_window_us column values of k.
func encodeRestrictions(k *keystore.Key) (ips string, rateN, rateW any, err error) {
	ips = "[]"
	if len(k.AllowedIPs) > 0 {
		for _, p := range k.AllowedIPs {
			if !p.IsValid() {
				return "", nil, nil, fmt.Errorf("invalid allowed IP prefix")
			}
		}
		b, err := json.Marshal(keystore.PrefixStrings(k.AllowedIPs))
		if err != nil {
			return "", nil, nil, err
		}
		ips = string(b)
	}
	if rl := k.RateLimit; rl != nil {
		us := rl.Window.Microseconds()
		if rl.Requests < 1 || us < 1 {
			return "", nil, nil, fmt.Errorf("rate limit must have positive requests and a window of at least 1µs")
		}
		rateN, rateW = int64(rl.Requests), us
	}
	return ips, rateN, rateW, nil
}

// decodeRestrictions sets k's AllowedIPs and RateLimit from their columns.
func decodeRestrictions(k *keystore.Key, ips string, rateN, rateW sql.NullInt64) error {
	k.AllowedIPs = nil
	if ips != "[]" && ips != "" {
		var ss []string
		if err := json.Unmarshal([]byte(ips), &ss); err != nil {
			return fmt.Errorf("bad stored allowed IPs: %w", err)
		}
		ps, err := keystore.ParsePrefixes(ss)
		if err != nil {
			return err
		}
		k.AllowedIPs = ps
	}
	k.RateLimit = nil
	if rateN.Valid && rateW.Valid {
		k.RateLimit = &keystore.RateLimit{Requests: int(rateN.Int64), Window: time.Duration(rateW.Int64) * time.Microsecond}
	}
	return nil
}

// insertEvent writes ev in tx and sets its ID.
func insertEvent(ctx context.Context, tx *sql.Tx, ev *keystore.Event) error {
	return tx.QueryRowContext(ctx, `INSERT INTO events
		(at, account_id, action, actor, source, ip, user_agent, key_id, key_prefix, key_name, details)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		formatTime(ev.At), ev.AccountID, string(ev.Action), ev.Actor, ev.Source, ev.IP, ev.UserAgent,
		ev.KeyID, ev.KeyPrefix, ev.KeyName, string(ev.Details)).Scan(&ev.ID)
}

// callerError carries an error of a caller's callback through a
// transaction, so that it is returned as it is rather than translated.
type callerError struct{ err error }

func (e *callerError) Error() string { return e.err.Error() }

// result returns a callback's error as it is, or translates err.
func (s *Store) result(op string, err error) error {
	var ce *callerError
	if errors.As(err, &ce) {
		return ce.err
	}
	return s.errorf(op, err)
}

// UpdateKey edits an active key in one transaction (see keystore.Store).
func (s *Store) UpdateKey(ctx context.Context, accountID, keyID string, edit func(*keystore.Key) error) (keystore.Key, error) {
	const op = "update key"
	if err := s.closedErr(op); err != nil {
		return keystore.Key{}, err
	}
	audit := keystore.AuditFrom(ctx)
	var (
		k       keystore.Key
		ev      keystore.Event
		changed bool
	)
	now := time.Now()
	err := s.write(ctx, func(tx *sql.Tx) error {
		changed = false
		var raw []byte
		var err error
		before, err := scanKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns+`, k.key_hash FROM api_keys k
			WHERE k.id = ?1 AND (?2 = '' OR k.account_id = ?2) AND k.revoked_at IS NULL`, keyID, accountID), &raw)
		if err != nil {
			return err
		}
		h, err := toHash(raw)
		if err != nil {
			return err
		}
		if before.ReplacedBy != "" {
			return &callerError{fmt.Errorf("%w (by %s)", keystore.ErrKeyRolled, before.ReplacedBy)}
		}
		k = before
		k.Scopes = append([]string{}, before.Scopes...)
		k.AllowedIPs = append([]netip.Prefix(nil), before.AllowedIPs...)
		if err := edit(&k); err != nil {
			return &callerError{err}
		}
		// Only the editable fields are taken from the edit.
		after := before
		after.Name, after.Scopes, after.ExpiresAt, after.AllowedIPs, after.RateLimit = k.Name, k.Scopes, k.ExpiresAt, k.AllowedIPs, k.RateLimit
		if after.Scopes == nil {
			after.Scopes = []string{}
		}
		if after.ExpiresAt != nil {
			e := after.ExpiresAt.UTC().Truncate(time.Microsecond)
			after.ExpiresAt = &e
		}
		k = after
		if keystore.EditableEqual(&before, &after) {
			return nil
		}
		scopes, err := encodeScopes(after.Scopes)
		if err != nil {
			return &callerError{invalid(op, "scopes cannot be encoded")}
		}
		ips, rateN, rateW, err := encodeRestrictions(&after)
		if err != nil {
			return &callerError{invalid(op, err.Error())}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET name = ?, scopes = ?, expires_at = ?,
			allowed_ips = ?, rate_requests = ?, rate_window_us = ? WHERE id = ?`,
			after.Name, scopes, formatTimePtr(after.ExpiresAt), ips, rateN, rateW, after.ID); err != nil {
			return err
		}
		if err := insertChange(ctx, tx, keystore.ChangeUpdated, after.AccountID, &h, now); err != nil {
			return err
		}
		if ev, err = keystore.NewEvent(audit, keystore.ActionKeyUpdated, now, &after, keystore.EditDetails(&before, &after)); err != nil {
			return err
		}
		if err := insertEvent(ctx, tx, &ev); err != nil {
			return err
		}
		changed = true
		return nil
	})
	if err != nil {
		return keystore.Key{}, s.result(op, err)
	}
	if changed {
		audit.Announce(ev)
	}
	return k, nil
}

// RollKey replaces an active key with a new one (see keystore.Store).
func (s *Store) RollKey(ctx context.Context, accountID, keyID string, r keystore.Roll, check func(old keystore.Key) error) (keystore.Key, keystore.Key, error) {
	const op = "roll key"
	if p := r.Problem(); p != "" {
		return keystore.Key{}, keystore.Key{}, invalid(op, p)
	}
	if err := s.closedErr(op); err != nil {
		return keystore.Key{}, keystore.Key{}, err
	}
	audit := keystore.AuditFrom(ctx)
	now := time.Now()
	at := r.At.UTC().Truncate(time.Microsecond)
	ends := r.Ends.UTC().Truncate(time.Microsecond)
	var (
		old, nk keystore.Key
		ev      keystore.Event
	)
	err := s.write(ctx, func(tx *sql.Tx) error {
		var raw []byte
		var err error
		old, err = scanKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns+`, k.key_hash FROM api_keys k
			WHERE k.id = ?1 AND (?2 = '' OR k.account_id = ?2) AND k.revoked_at IS NULL`, keyID, accountID), &raw)
		if err != nil {
			return err
		}
		h, err := toHash(raw)
		if err != nil {
			return err
		}
		if old.ReplacedBy != "" {
			return &callerError{fmt.Errorf("%w (by %s)", keystore.ErrKeyRolled, old.ReplacedBy)}
		}
		if check != nil {
			if err := check(old); err != nil {
				return &callerError{err}
			}
		}
		nk = keystore.Key{
			ID:         r.ID,
			AccountID:  old.AccountID,
			Name:       old.Name,
			Prefix:     r.Prefix,
			Scopes:     old.Scopes,
			CreatedAt:  at,
			ExpiresAt:  old.ExpiresAt,
			AllowedIPs: old.AllowedIPs,
			RateLimit:  old.RateLimit,
		}
		scopes, err := encodeScopes(nk.Scopes)
		if err != nil {
			return err
		}
		ips, rateN, rateW, err := encodeRestrictions(&nk)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO api_keys
			(id, account_id, name, prefix, key_hash, scopes, created_at, expires_at, allowed_ips, rate_requests, rate_window_us)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			nk.ID, nk.AccountID, nk.Name, nk.Prefix, r.Hash[:], scopes, formatTime(nk.CreatedAt), formatTimePtr(nk.ExpiresAt),
			ips, rateN, rateW); err != nil {
			return err
		}
		end := ends
		if old.ExpiresAt != nil && old.ExpiresAt.Before(end) {
			end = *old.ExpiresAt
		}
		var revoked any
		if !end.After(at) {
			revoked = formatTime(at)
		}
		old, err = scanKey(tx.QueryRowContext(ctx, `UPDATE api_keys SET expires_at = ?, replaced_by = ?, revoked_at = ?
			WHERE id = ? RETURNING `+returningColumns, formatTime(end), nk.ID, revoked, old.ID))
		if err != nil {
			return err
		}
		if err := insertChange(ctx, tx, keystore.ChangeCreated, nk.AccountID, &r.Hash, now); err != nil {
			return err
		}
		if err := insertChange(ctx, tx, keystore.ChangeUpdated, old.AccountID, &h, now); err != nil {
			return err
		}
		if ev, err = keystore.NewEvent(audit, keystore.ActionKeyRolled, now, &old, keystore.RollDetails{
			NewKeyID: nk.ID, NewKeyPrefix: nk.Prefix, Grace: ends.Sub(at).String(), OldKeyEndsAt: end,
		}); err != nil {
			return err
		}
		return insertEvent(ctx, tx, &ev)
	})
	if err != nil {
		return keystore.Key{}, keystore.Key{}, s.result(op, err)
	}
	audit.Announce(ev)
	return old, nk, nil
}

// Events returns the account's audit events, newest first.
func (s *Store) Events(ctx context.Context, accountID string, q keystore.EventQuery) ([]keystore.Event, error) {
	const op = "events"
	if err := s.closedErr(op); err != nil {
		return nil, err
	}
	before := q.Before
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT id, at, account_id, action, actor, source, ip, user_agent,
		key_id, key_prefix, key_name, details FROM events
		WHERE account_id = ? AND id < ? ORDER BY id DESC LIMIT ?`, accountID, before, q.EffectiveLimit())
	if err != nil {
		return nil, s.errorf(op, err)
	}
	defer rows.Close()
	evs := []keystore.Event{}
	for rows.Next() {
		var (
			ev              keystore.Event
			at, action, det string
		)
		if err := rows.Scan(&ev.ID, &at, &ev.AccountID, &action, &ev.Actor, &ev.Source, &ev.IP, &ev.UserAgent,
			&ev.KeyID, &ev.KeyPrefix, &ev.KeyName, &det); err != nil {
			return nil, s.errorf(op, err)
		}
		if ev.At, err = parseTime(at); err != nil {
			return nil, s.errorf(op, err)
		}
		ev.Action = keystore.Action(action)
		ev.Details = json.RawMessage(det)
		evs = append(evs, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, s.errorf(op, err)
	}
	return evs, nil
}

// PruneEvents deletes the events recorded before the given time.
func (s *Store) PruneEvents(ctx context.Context, before time.Time) (int64, error) {
	const op = "prune events"
	if err := s.closedErr(op); err != nil {
		return 0, err
	}
	res, err := s.wdb.ExecContext(ctx, `DELETE FROM events WHERE at < ?`, formatTime(before))
	if err != nil {
		return 0, s.errorf(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, s.errorf(op, err)
	}
	return n, nil
}
