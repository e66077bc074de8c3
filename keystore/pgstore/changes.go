package pgstore

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spkgate/spkgate/keystore"
)

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
