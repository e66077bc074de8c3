package sqlitestore

import (
	"context"
	"database/sql"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

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
