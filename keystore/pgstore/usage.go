package pgstore

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spkgate/spkgate/keystore"
)

// Interface guard.
var _ keystore.UsageStore = (*Store)(nil)

// AddUsage adds the counts to the hourly rows in one statement; rows are
// locked in key and hour order.
func (s *Store) AddUsage(ctx context.Context, counts []keystore.UsageCount) error {
	const op = "add usage"
	if err := s.closedErr(op); err != nil {
		return err
	}
	rows, err := keystore.MergeUsage(counts)
	if err != nil {
		return invalid(op, err.Error())
	}
	if len(rows) == 0 {
		return nil
	}
	n := len(rows)
	keys, accts, hours := make([]string, n), make([]string, n), make([]time.Time, n)
	al, fo, li := make([]int64, n), make([]int64, n), make([]int64, n)
	for i, r := range rows {
		keys[i], accts[i], hours[i] = r.KeyID, r.AccountID, r.Hour
		al[i], fo[i], li[i] = r.Allowed, r.Forbidden, r.Limited
	}
	ctx, cancel := withTimeout(ctx, WriteTimeout)
	defer cancel()
	_, err = s.pool.Exec(ctx, `INSERT INTO key_usage AS u (key_id, account_id, hour, allowed, forbidden, limited)
		SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bigint[], $5::bigint[], $6::bigint[])
		ON CONFLICT (key_id, hour) DO UPDATE SET allowed = u.allowed + EXCLUDED.allowed,
			forbidden = u.forbidden + EXCLUDED.forbidden, limited = u.limited + EXCLUDED.limited`,
		keys, accts, hours, al, fo, li)
	if err != nil {
		return s.errorf(op, err)
	}
	return nil
}

// Usage returns the hourly rows q selects, oldest first, then by key.
func (s *Store) Usage(ctx context.Context, q keystore.UsageQuery) ([]keystore.UsageCount, error) {
	const op = "usage"
	if err := s.closedErr(op); err != nil {
		return nil, err
	}
	if q.AccountID == "" && q.KeyID == "" {
		return nil, invalid(op, "an account or key id is required")
	}
	ctx, cancel := withTimeout(ctx, QueryTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT key_id, account_id, hour, allowed, forbidden, limited FROM key_usage
		WHERE ($1 = '' OR account_id = $1) AND ($2 = '' OR key_id = $2) AND hour >= $3 AND hour < $4
		ORDER BY hour, key_id`, q.AccountID, q.KeyID, q.From.UTC(), q.To.UTC())
	if err != nil {
		return nil, s.errorf(op, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keystore.UsageCount, error) {
		var u keystore.UsageCount
		err := row.Scan(&u.KeyID, &u.AccountID, &u.Hour, &u.Allowed, &u.Forbidden, &u.Limited)
		u.Hour = u.Hour.UTC()
		return u, err
	})
	if err != nil {
		return nil, s.errorf(op, err)
	}
	return out, nil
}

// PruneUsage deletes the hourly rows before the given hour.
func (s *Store) PruneUsage(ctx context.Context, before time.Time) (int64, error) {
	const op = "prune usage"
	if err := s.closedErr(op); err != nil {
		return 0, err
	}
	ctx, cancel := withTimeout(ctx, BulkWriteTimeout)
	defer cancel()
	tag, err := s.pool.Exec(ctx, `DELETE FROM key_usage WHERE hour < $1`, before.UTC())
	if err != nil {
		return 0, s.errorf(op, err)
	}
	return tag.RowsAffected(), nil
}

// AddQuota adds to the quota counters in one transaction, locking them
// in account, period and start order, and returns their values.
func (s *Store) AddQuota(ctx context.Context, counts []keystore.QuotaCount) ([]int64, error) {
	const op = "add quota"
	if err := s.closedErr(op); err != nil {
		return nil, err
	}
	if err := keystore.CheckQuotaCounts(counts); err != nil {
		return nil, invalid(op, err.Error())
	}
	out := make([]int64, len(counts))
	if len(counts) == 0 {
		return out, nil
	}
	order := make([]int, len(counts))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		x, y := counts[a], counts[b]
		return cmp.Or(cmp.Compare(x.AccountID, y.AccountID), cmp.Compare(x.Period, y.Period), x.Start.Compare(y.Start))
	})
	ctx, cancel := withTimeout(ctx, WriteTimeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, i := range order {
			c := counts[i]
			if c.Add == 0 {
				b.Queue(`SELECT coalesce((SELECT used FROM quota_counters
					WHERE account_id = $1 AND period = $2 AND period_start = $3), 0)`,
					c.AccountID, c.Period, c.Start.UTC()).QueryRow(func(r pgx.Row) error { return r.Scan(&out[i]) })
				continue
			}
			b.Queue(`INSERT INTO quota_counters AS q (account_id, period, period_start, used) VALUES ($1, $2, $3, $4)
				ON CONFLICT (account_id, period, period_start) DO UPDATE SET used = q.used + EXCLUDED.used, updated_at = now()
				RETURNING used`, c.AccountID, c.Period, c.Start.UTC(), c.Add).QueryRow(func(r pgx.Row) error { return r.Scan(&out[i]) })
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return nil, s.errorf(op, err)
	}
	return out, nil
}

// QuotaCounts returns every account's counter of one period.
func (s *Store) QuotaCounts(ctx context.Context, period string, start time.Time) (map[string]int64, error) {
	const op = "quota counts"
	if err := s.closedErr(op); err != nil {
		return nil, err
	}
	ctx, cancel := withTimeout(ctx, BulkWriteTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT account_id, used FROM quota_counters WHERE period = $1 AND period_start = $2`,
		period, start.UTC())
	if err != nil {
		return nil, s.errorf(op, err)
	}
	defer rows.Close()
	out := make(map[string]int64)
	for rows.Next() {
		var a string
		var n int64
		if err := rows.Scan(&a, &n); err != nil {
			return nil, s.errorf(op, err)
		}
		out[a] = n
	}
	if err := rows.Err(); err != nil {
		return nil, s.errorf(op, err)
	}
	return out, nil
}

// SyncRates adds to the shared rate counters and returns their totals.
// Additions are one statement (rows locked in name order, each total read
// under its row lock); counters only read are read after it.
func (s *Store) SyncRates(ctx context.Context, counts []keystore.RateCount) ([]int64, error) {
	const op = "sync rates"
	if err := s.closedErr(op); err != nil {
		return nil, err
	}
	if err := keystore.CheckRateCounts(counts); err != nil {
		return nil, invalid(op, err.Error())
	}
	out := make([]int64, len(counts))
	var addNames, readNames []string
	var adds []int64
	index := make(map[string]int, len(counts))
	for i, c := range counts {
		index[c.Name] = i
		if c.Add != 0 {
			addNames, adds = append(addNames, c.Name), append(adds, c.Add)
		} else {
			readNames = append(readNames, c.Name)
		}
	}
	ctx, cancel := withTimeout(ctx, WriteTimeout)
	defer cancel()
	scan := func(rows pgx.Rows) error {
		defer rows.Close()
		for rows.Next() {
			var name string
			var total int64
			if err := rows.Scan(&name, &total); err != nil {
				return err
			}
			out[index[name]] = total
		}
		return rows.Err()
	}
	if len(addNames) > 0 {
		rows, err := s.pool.Query(ctx, `INSERT INTO rate_counters AS r (name, total)
			SELECT * FROM unnest($1::text[], $2::bigint[]) ORDER BY 1
			ON CONFLICT (name) DO UPDATE SET total = r.total + EXCLUDED.total, updated_at = now()
			RETURNING name, total`, addNames, adds)
		if err == nil {
			err = scan(rows)
		}
		if err != nil {
			return nil, s.errorf(op, err)
		}
	}
	if len(readNames) > 0 {
		rows, err := s.pool.Query(ctx, `SELECT name, total FROM rate_counters WHERE name = ANY($1::text[])`, readNames)
		if err == nil {
			err = scan(rows)
		}
		if err != nil {
			return nil, s.errorf(op, err)
		}
	}
	return out, nil
}

// PruneLimitCounters deletes idle rate counters and old quota counters.
func (s *Store) PruneLimitCounters(ctx context.Context, before time.Time) error {
	const op = "prune limit counters"
	if err := s.closedErr(op); err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, BulkWriteTimeout)
	defer cancel()
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM rate_counters WHERE updated_at < $1`, before.UTC())
	b.Queue(`DELETE FROM quota_counters WHERE period_start < $1`, before.UTC())
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return s.errorf(op, err)
	}
	return nil
}
