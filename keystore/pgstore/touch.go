package pgstore

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

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
