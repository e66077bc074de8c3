package pgstore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spkgate/spkgate/keystore"
)

// encodeRestrictions gives the allowed_ips, rate_requests and
// rate_window_us column values of k.
func encodeRestrictions(k *keystore.Key) (ips []string, rateN, rateW *int64, err error) {
	for _, p := range k.AllowedIPs {
		if !p.IsValid() {
			return nil, nil, nil, errors.New("invalid allowed IP prefix")
		}
	}
	ips = keystore.PrefixStrings(k.AllowedIPs)
	if rl := k.RateLimit; rl != nil {
		n, us := int64(rl.Requests), rl.Window.Microseconds()
		if n < 1 || us < 1 {
			return nil, nil, nil, errors.New("rate limit must have positive requests and a window of at least 1µs")
		}
		rateN, rateW = &n, &us
	}
	return ips, rateN, rateW, nil
}

// decodeRestrictions sets k's AllowedIPs and RateLimit from their columns.
func decodeRestrictions(k *keystore.Key, ips []string, rateN, rateW *int64) error {
	ps, err := keystore.ParsePrefixes(ips)
	if err != nil {
		return &dataError{msg: err.Error()}
	}
	k.AllowedIPs = ps
	k.RateLimit = nil
	if rateN != nil && rateW != nil {
		k.RateLimit = &keystore.RateLimit{Requests: int(*rateN), Window: time.Duration(*rateW) * time.Microsecond}
	}
	return nil
}

// insertEvent writes ev in tx and sets its ID.
func insertEvent(ctx context.Context, tx pgx.Tx, ev *keystore.Event) error {
	return tx.QueryRow(ctx, `INSERT INTO events
		(at, account_id, action, actor, source, ip, user_agent, key_id, key_prefix, key_name, details)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id`,
		ev.At, ev.AccountID, string(ev.Action), ev.Actor, ev.Source, ev.IP, ev.UserAgent,
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

// selectForChange reads an active key of the account, locked until the
// transaction ends, with its hash.
func selectForChange(ctx context.Context, tx pgx.Tx, accountID, keyID string) (keystore.Key, keystore.Hash, error) {
	var raw []byte
	k, err := scanKey(tx.QueryRow(ctx, `SELECT `+keyColumns+`, k.key_hash FROM api_keys k
		WHERE k.id = $1 AND ($2::text = '' OR k.account_id = $2) AND k.revoked_at IS NULL
		FOR UPDATE`, keyID, accountID), &raw)
	if err != nil {
		return keystore.Key{}, keystore.Hash{}, err
	}
	h, err := toHash(raw)
	if err != nil {
		return keystore.Key{}, keystore.Hash{}, err
	}
	if k.ReplacedBy != "" {
		return keystore.Key{}, keystore.Hash{}, &callerError{fmt.Errorf("%w (by %s)", keystore.ErrKeyRolled, k.ReplacedBy)}
	}
	return k, h, nil
}

// UpdateKey edits an active key in one transaction (see keystore.Store).
func (s *Store) UpdateKey(ctx context.Context, accountID, keyID string, edit func(*keystore.Key) error) (keystore.Key, error) {
	const op = "update key"
	if err := s.closedErr(op); err != nil {
		return keystore.Key{}, err
	}
	ctx, cancel := withTimeout(ctx, WriteTimeout)
	defer cancel()
	audit := keystore.AuditFrom(ctx)
	var (
		k       keystore.Key
		ev      keystore.Event
		changed bool
	)
	now := micro(time.Now())
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		changed = false
		before, h, err := selectForChange(ctx, tx, accountID, keyID)
		if err != nil {
			return err
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
			e := micro(*after.ExpiresAt)
			after.ExpiresAt = &e
		}
		k = after
		if keystore.EditableEqual(&before, &after) {
			return nil
		}
		ips, rateN, rateW, err := encodeRestrictions(&after)
		if err != nil {
			return &callerError{invalid(op, err.Error())}
		}
		if _, err := tx.Exec(ctx, `UPDATE api_keys SET name = $2, scopes = $3, expires_at = $4,
			allowed_ips = $5, rate_requests = $6, rate_window_us = $7 WHERE id = $1`,
			after.ID, after.Name, after.Scopes, after.ExpiresAt, ips, rateN, rateW); err != nil {
			return err
		}
		if err := recordChange(ctx, tx, keystore.ChangeUpdated, after.AccountID, &h, now); err != nil {
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
	ctx, cancel := withTimeout(ctx, WriteTimeout)
	defer cancel()
	audit := keystore.AuditFrom(ctx)
	now := micro(time.Now())
	at, ends := micro(r.At), micro(r.Ends)
	var (
		old, nk keystore.Key
		ev      keystore.Event
	)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var (
			h   keystore.Hash
			err error
		)
		old, h, err = selectForChange(ctx, tx, accountID, keyID)
		if err != nil {
			return err
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
		ips, rateN, rateW, err := encodeRestrictions(&nk)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO api_keys
			(id, account_id, name, prefix, key_hash, scopes, created_at, expires_at, allowed_ips, rate_requests, rate_window_us)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			nk.ID, nk.AccountID, nk.Name, nk.Prefix, r.Hash[:], nk.Scopes, nk.CreatedAt, nk.ExpiresAt, ips, rateN, rateW); err != nil {
			return err
		}
		end := ends
		if old.ExpiresAt != nil && old.ExpiresAt.Before(end) {
			end = *old.ExpiresAt
		}
		var revoked *time.Time
		if !end.After(at) {
			revoked = &at
		}
		old, err = scanKey(tx.QueryRow(ctx, `UPDATE api_keys k SET expires_at = $2, replaced_by = $3, revoked_at = $4
			WHERE k.id = $1 RETURNING `+keyColumns, old.ID, end, nk.ID, revoked))
		if err != nil {
			return err
		}
		if err := recordChange(ctx, tx, keystore.ChangeCreated, nk.AccountID, &r.Hash, now); err != nil {
			return err
		}
		if err := recordChange(ctx, tx, keystore.ChangeUpdated, old.AccountID, &h, now); err != nil {
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
	ctx, cancel := withTimeout(ctx, QueryTimeout)
	defer cancel()
	before := q.Before
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := s.pool.Query(ctx, `SELECT id, at, account_id, action, actor, source, ip, user_agent,
		key_id, key_prefix, key_name, details::text FROM events
		WHERE account_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3`, accountID, before, q.EffectiveLimit())
	if err != nil {
		return nil, s.errorf(op, err)
	}
	defer rows.Close()
	evs := []keystore.Event{}
	for rows.Next() {
		var (
			ev          keystore.Event
			action, det string
		)
		if err := rows.Scan(&ev.ID, &ev.At, &ev.AccountID, &action, &ev.Actor, &ev.Source, &ev.IP, &ev.UserAgent,
			&ev.KeyID, &ev.KeyPrefix, &ev.KeyName, &det); err != nil {
			return nil, s.errorf(op, err)
		}
		ev.At = ev.At.UTC()
		ev.Action = keystore.Action(action)
		ev.Details = []byte(det)
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
	ctx, cancel := withTimeout(ctx, BulkWriteTimeout)
	defer cancel()
	tag, err := s.pool.Exec(ctx, `DELETE FROM events WHERE at < $1`, before)
	if err != nil {
		return 0, s.errorf(op, err)
	}
	return tag.RowsAffected(), nil
}
