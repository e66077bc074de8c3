package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
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

// lookupSQL is the gateway's cold path: one probe of the unique key_hash
// index (TestLookupUsesTheIndex).
const lookupSQL = `SELECT ` + credentialColumns + `
	FROM api_keys k LEFT JOIN accounts a ON a.id = k.account_id
	WHERE k.key_hash = ?`

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

// closedErr is returned before touching a closed store's pools.
func (s *Store) closedErr(op string) error {
	if s.closed.Load() {
		return s.errorf(op, sql.ErrConnDone)
	}
	return nil
}

// write runs fn in a transaction on the writer connection.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func insertChange(ctx context.Context, tx *sql.Tx, kind keystore.ChangeKind, account string, h *keystore.Hash, at time.Time) error {
	var hash any
	if h != nil {
		hash = h[:]
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO changes (kind, account_id, key_hash, at) VALUES (?, ?, ?, ?)`,
		string(kind), account, hash, formatTime(at))
	return err
}

// CreateKey stores a new key and records a ChangeCreated in the same
// transaction. A zero CreatedAt means now; times are kept to the
// microsecond, in UTC.
func (s *Store) CreateKey(ctx context.Context, nk keystore.NewKey) (keystore.Key, error) {
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

// LookupKey finds a key by hash, with its account's plan, in one indexed
// query: the fields keystore.Credential names. Revoked and expired keys
// are returned too.
func (s *Store) LookupKey(ctx context.Context, h keystore.Hash) (keystore.Credential, error) {
	const op = "lookup key"
	if err := s.closedErr(op); err != nil {
		return keystore.Credential{}, err
	}
	c, err := scanCredential(s.lookup.QueryRowContext(ctx, h[:]))
	if err != nil {
		return keystore.Credential{}, s.errorf(op, err)
	}
	return c, nil
}

// LookupKeys finds many keys by hash in one query: one probe of the
// key_hash index per hash.
func (s *Store) LookupKeys(ctx context.Context, hashes []keystore.Hash) (map[keystore.Hash]keystore.Credential, error) {
	const op = "lookup keys"
	if len(hashes) > keystore.MaxLookupBatch {
		return nil, invalid(op, fmt.Sprintf("%d hashes, at most %d", len(hashes), keystore.MaxLookupBatch))
	}
	if err := s.closedErr(op); err != nil {
		return nil, err
	}
	found := make(map[keystore.Hash]keystore.Credential, len(hashes))
	if len(hashes) == 0 {
		return found, nil
	}
	args := make([]any, len(hashes))
	for i := range hashes {
		args[i] = hashes[i][:]
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+credentialColumns+`, k.key_hash
		FROM api_keys k LEFT JOIN accounts a ON a.id = k.account_id
		WHERE k.key_hash IN (?`+strings.Repeat(", ?", len(hashes)-1)+`)`, args...)
	if err != nil {
		return nil, s.errorf(op, err)
	}
	defer rows.Close()
	for rows.Next() {
		var hb []byte
		c, err := scanCredential(rows, &hb)
		if err != nil {
			return nil, s.errorf(op, err)
		}
		h, err := toHash(hb)
		if err != nil {
			return nil, s.errorf(op, err)
		}
		found[h] = c
	}
	if err := rows.Err(); err != nil {
		return nil, s.errorf(op, err)
	}
	return found, nil
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

// SetPlan records the account's plan and, if it differs from the recorded
// one (an account without a record has plan ""), records a ChangePlan in
// the same transaction. Calling it with an unchanged plan writes nothing.
func (s *Store) SetPlan(ctx context.Context, accountID, plan string) (bool, error) {
	const op = "set plan"
	if accountID == "" {
		return false, invalid(op, "empty account id")
	}
	if err := s.closedErr(op); err != nil {
		return false, err
	}
	// The common case (the console reports the plan it already knows) is a
	// read that needs no write lock.
	var cur string
	switch err := s.rdb.QueryRowContext(ctx, `SELECT plan FROM accounts WHERE id = ?`, accountID).Scan(&cur); err {
	case nil:
		if cur == plan {
			return false, nil
		}
	case sql.ErrNoRows:
	default:
		return false, s.errorf(op, err)
	}

	var (
		changed bool
		ev      keystore.Event
	)
	now := time.Now()
	audit := keystore.AuditFrom(ctx)
	err := s.write(ctx, func(tx *sql.Tx) error {
		changed = false
		var prev string
		err := tx.QueryRowContext(ctx, `SELECT plan FROM accounts WHERE id = ?`, accountID).Scan(&prev)
		exists := err == nil
		if err != nil && err != sql.ErrNoRows {
			return err
		}
		if exists && prev == plan {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO accounts (id, plan, updated_at) VALUES (?1, ?2, ?3)
			ON CONFLICT (id) DO UPDATE SET plan = excluded.plan, updated_at = excluded.updated_at`,
			accountID, plan, formatTime(now)); err != nil {
			return err
		}
		if prev == plan { // a new account with plan ""
			return nil
		}
		if err := insertChange(ctx, tx, keystore.ChangePlan, accountID, nil, now); err != nil {
			return err
		}
		ev, err = keystore.NewEvent(audit, keystore.ActionAccountPlanChanged, now,
			&keystore.Key{AccountID: accountID}, keystore.FromTo{From: prev, To: plan})
		if err != nil {
			return err
		}
		if err := insertEvent(ctx, tx, &ev); err != nil {
			return err
		}
		changed = true
		return nil
	})
	if err != nil {
		return false, s.errorf(op, err)
	}
	if changed {
		audit.Announce(ev)
	}
	return changed, nil
}

// GetPlan returns the account's recorded plan, or keystore.ErrNotFound.
func (s *Store) GetPlan(ctx context.Context, accountID string) (string, error) {
	const op = "get plan"
	if err := s.closedErr(op); err != nil {
		return "", err
	}
	var plan string
	if err := s.rdb.QueryRowContext(ctx, `SELECT plan FROM accounts WHERE id = ?`, accountID).Scan(&plan); err != nil {
		return "", s.errorf(op, err)
	}
	return plan, nil
}

// touchBatch bounds how long one TouchKeys transaction holds the write lock.
const touchBatch = 500

// TouchKeys sets last_used_at for the given key ids; a time older than
// the recorded one is ignored, as are unknown ids.
func (s *Store) TouchKeys(ctx context.Context, used map[string]time.Time) error {
	const op = "touch keys"
	if err := s.closedErr(op); err != nil {
		return err
	}
	ids := slices.Sorted(maps.Keys(used))
	for chunk := range slices.Chunk(ids, touchBatch) {
		err := s.write(ctx, func(tx *sql.Tx) error {
			stmt, err := tx.PrepareContext(ctx, `UPDATE api_keys
				SET last_used_at = max(coalesce(last_used_at, ?1), ?1) WHERE id = ?2`)
			if err != nil {
				return err
			}
			defer stmt.Close()
			for _, id := range chunk {
				if _, err := stmt.ExecContext(ctx, formatTime(used[id]), id); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return s.errorf(op, err)
		}
	}
	return nil
}

// defaultChangesLimit applies when Changes is given a limit <= 0.
const defaultChangesLimit = 1000

// Changes returns the changes with Seq > after, oldest first, at most limit
// of them (a limit <= 0 means 1000).
func (s *Store) Changes(ctx context.Context, after int64, limit int) ([]keystore.Change, error) {
	const op = "changes"
	if err := s.closedErr(op); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = defaultChangesLimit
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT seq, kind, account_id, key_hash, at FROM changes
		WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
	if err != nil {
		return nil, s.errorf(op, err)
	}
	defer rows.Close()
	cs := []keystore.Change{}
	for rows.Next() {
		var (
			c    keystore.Change
			kind string
			raw  []byte
			at   string
		)
		if err := rows.Scan(&c.Seq, &kind, &c.AccountID, &raw, &at); err != nil {
			return nil, s.errorf(op, err)
		}
		c.Kind = keystore.ChangeKind(kind)
		if c.Hash, err = toHash(raw); err != nil {
			return nil, s.errorf(op, err)
		}
		if c.At, err = parseTime(at); err != nil {
			return nil, s.errorf(op, err)
		}
		cs = append(cs, c)
	}
	if err := rows.Err(); err != nil {
		return nil, s.errorf(op, err)
	}
	return cs, nil
}

// LastChange returns the highest Seq recorded (0 if none).
func (s *Store) LastChange(ctx context.Context) (int64, error) {
	const op = "last change"
	if err := s.closedErr(op); err != nil {
		return 0, err
	}
	var seq int64
	if err := s.rdb.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM changes`).Scan(&seq); err != nil {
		return 0, s.errorf(op, err)
	}
	return seq, nil
}

// PruneChanges deletes changes recorded before the given time, except the
// most recent change, which is kept so that LastChange never goes back.
func (s *Store) PruneChanges(ctx context.Context, before time.Time) error {
	const op = "prune changes"
	if err := s.closedErr(op); err != nil {
		return err
	}
	if _, err := s.wdb.ExecContext(ctx, `DELETE FROM changes
		WHERE at < ? AND seq < (SELECT max(seq) FROM changes)`, formatTime(before)); err != nil {
		return s.errorf(op, err)
	}
	return nil
}

// Ping checks that the database can be read.
func (s *Store) Ping(ctx context.Context) error {
	const op = "ping"
	if err := s.closedErr(op); err != nil {
		return err
	}
	var n int
	if err := s.rdb.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		return s.errorf(op, err)
	}
	return nil
}
