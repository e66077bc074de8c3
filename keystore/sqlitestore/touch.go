package sqlitestore

import (
	"context"
	"database/sql"
	"maps"
	"slices"
	"time"
)

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
