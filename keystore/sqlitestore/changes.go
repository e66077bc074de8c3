package sqlitestore

import (
	"context"
	"database/sql"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

func insertChange(ctx context.Context, tx *sql.Tx, kind keystore.ChangeKind, account string, h *keystore.Hash, at time.Time) error {
	var hash any
	if h != nil {
		hash = h[:]
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO changes (kind, account_id, key_hash, at) VALUES (?, ?, ?, ?)`,
		string(kind), account, hash, formatTime(at))
	return err
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
