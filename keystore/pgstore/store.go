package pgstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
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

// closedErr is returned before touching a closed store's pool.
func (s *Store) closedErr(op string) error {
	if s.closed.Load() {
		return translate(op, nil, true)
	}
	return nil
}

// recordChange appends to the change log. The transaction-scoped advisory
// lock makes seq values commit in the order they are drawn, so a reader
// following Changes(after) never skips a change that commits late.
func recordChange(ctx context.Context, tx pgx.Tx, kind keystore.ChangeKind, account string, h *keystore.Hash, at time.Time) error {
	var hash []byte
	if h != nil {
		hash = h[:]
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT pg_advisory_xact_lock($1)`, changesLockKey)
	b.Queue(`INSERT INTO changes (kind, account_id, key_hash, at) VALUES ($1, $2, $3, $4)`,
		string(kind), account, hash, at)
	return tx.SendBatch(ctx, b).Close()
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

// lookupSQL is the gateway's cold path: one probe of the unique key_hash
// index (TestLookupUsesTheIndex).
const lookupSQL = `SELECT ` + credentialColumns + `
	FROM api_keys k LEFT JOIN accounts a ON a.id = k.account_id
	WHERE k.key_hash = $1`

// LookupKey finds a key by hash, with its account's plan, in one indexed
// query: the fields keystore.Credential names. Revoked and expired keys
// are returned too.
func (s *Store) LookupKey(ctx context.Context, h keystore.Hash) (keystore.Credential, error) {
	const op = "lookup key"
	if err := s.closedErr(op); err != nil {
		return keystore.Credential{}, err
	}
	ctx, cancel := withTimeout(ctx, QueryTimeout)
	defer cancel()
	c, err := scanCredential(s.pool.QueryRow(ctx, lookupSQL, h[:]))
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
	ctx, cancel := withTimeout(ctx, QueryTimeout)
	defer cancel()
	raw := make([][]byte, len(hashes))
	for i := range hashes {
		raw[i] = hashes[i][:]
	}
	rows, err := s.pool.Query(ctx, `SELECT `+credentialColumns+`, k.key_hash
		FROM api_keys k LEFT JOIN accounts a ON a.id = k.account_id
		WHERE k.key_hash = ANY($1)`, raw)
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
	ctx, cancel := withTimeout(ctx, WriteTimeout)
	defer cancel()

	// The common case (the console reports the plan it already knows) is
	// one read.
	var cur string
	switch err := s.pool.QueryRow(ctx, `SELECT plan FROM accounts WHERE id = $1`, accountID).Scan(&cur); {
	case err == nil:
		if cur == plan {
			return false, nil
		}
	case !errors.Is(err, pgx.ErrNoRows):
		return false, s.errorf(op, err)
	}

	var (
		changed bool
		ev      keystore.Event
	)
	now := micro(time.Now())
	audit := keystore.AuditFrom(ctx)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		changed = false
		// Make sure the row exists, then lock it: concurrent SetPlans
		// of one account serialize here and each sees the plan before it.
		if _, err := tx.Exec(ctx, `INSERT INTO accounts (id, plan, updated_at) VALUES ($1, '', $2)
			ON CONFLICT (id) DO NOTHING`, accountID, now); err != nil {
			return err
		}
		var prev string
		if err := tx.QueryRow(ctx, `SELECT plan FROM accounts WHERE id = $1 FOR UPDATE`, accountID).Scan(&prev); err != nil {
			return err
		}
		if prev == plan {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE accounts SET plan = $2, updated_at = $3 WHERE id = $1`, accountID, plan, now); err != nil {
			return err
		}
		if err := recordChange(ctx, tx, keystore.ChangePlan, accountID, nil, now); err != nil {
			return err
		}
		var err error
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
	ctx, cancel := withTimeout(ctx, QueryTimeout)
	defer cancel()
	var plan string
	if err := s.pool.QueryRow(ctx, `SELECT plan FROM accounts WHERE id = $1`, accountID).Scan(&plan); err != nil {
		return "", s.errorf(op, err)
	}
	return plan, nil
}

// touchBatch bounds the ids of one TouchKeys statement.
const touchBatch = 1000

// TouchKeys sets last_used_at for the given key ids; a time older than
// the recorded one is ignored, as are unknown ids. Rows are locked in id
// order, so that instances flushing overlapping batches cannot deadlock.
func (s *Store) TouchKeys(ctx context.Context, used map[string]time.Time) error {
	const op = "touch keys"
	if err := s.closedErr(op); err != nil {
		return err
	}
	if len(used) == 0 {
		return nil
	}
	ctx, cancel := withTimeout(ctx, WriteTimeout)
	defer cancel()
	ids := slices.Sorted(maps.Keys(used))
	for chunk := range slices.Chunk(ids, touchBatch) {
		times := make([]time.Time, len(chunk))
		for i, id := range chunk {
			times[i] = micro(used[id])
		}
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			b := &pgx.Batch{}
			b.Queue(`SELECT id FROM api_keys WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE`, chunk)
			b.Queue(`UPDATE api_keys k SET last_used_at = GREATEST(k.last_used_at, u.t)
				FROM unnest($1::text[], $2::timestamptz[]) AS u(id, t)
				WHERE k.id = u.id`, chunk, times)
			return tx.SendBatch(ctx, b).Close()
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
	ctx, cancel := withTimeout(ctx, QueryTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT seq, kind, account_id, key_hash, at FROM changes
		WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
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
		)
		if err := rows.Scan(&c.Seq, &kind, &c.AccountID, &raw, &c.At); err != nil {
			return nil, s.errorf(op, err)
		}
		c.Kind = keystore.ChangeKind(kind)
		c.At = c.At.UTC()
		if c.Hash, err = toHash(raw); err != nil {
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
	ctx, cancel := withTimeout(ctx, QueryTimeout)
	defer cancel()
	var seq int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM changes`).Scan(&seq); err != nil {
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
	ctx, cancel := withTimeout(ctx, WriteTimeout)
	defer cancel()
	if _, err := s.pool.Exec(ctx, `DELETE FROM changes
		WHERE at < $1 AND seq < (SELECT max(seq) FROM changes)`, before); err != nil {
		return s.errorf(op, err)
	}
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	const op = "ping"
	if err := s.closedErr(op); err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, QueryTimeout)
	defer cancel()
	if err := s.pool.Ping(ctx); err != nil {
		return s.errorf(op, err)
	}
	return nil
}
