package pgstore

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

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
