package pgstore

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ProbeTimeout bounds the detection of a transaction-pooling proxy at Open.
const ProbeTimeout = 5 * time.Second

// probeWait is how long the probe waits for a server connection of its
// own; through a direct or session-pooled connection it has one already.
const probeWait = 2 * time.Second

// transactionPooled reports whether cc leads to PostgreSQL through a proxy
// that gives a client's server connection back after every transaction
// (PgBouncer's pool_mode=transaction, the default of several managed
// services). Through one, named prepared statements, session advisory
// locks and LISTEN do not work; directly or through a session pool, a
// client keeps one server connection, one backend, for its whole session.
//
// The probe asks for the backend of a client A, then lets a second client
// B open a transaction and asks for its backend: through a transaction
// pool B is given the server connection A left idle (PgBouncer reuses the
// most recently used one), so both name the same backend; and if it is
// given another, A's next statement runs on a backend other than its
// first, or, when B holds the only server connection, waits. Directly or
// through a session pool, none of this can happen: A's backend is A's.
func transactionPooled(ctx context.Context, cc *pgx.ConnConfig) (bool, error) {
	ctx, cancel := withTimeout(ctx, ProbeTimeout)
	defer cancel()
	cfg := cc.Copy()
	// Statements with no parameters, in the simple protocol: nothing the
	// probe does depends on what it is probing.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	a, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, err
	}
	defer a.Close(context.WithoutCancel(ctx))
	b, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, err
	}
	defer b.Close(context.WithoutCancel(ctx))

	// One trial can miss a transaction pool while other clients use it
	// (B may be given another idle server connection, and A its own
	// again); it never sees one that is not there. So a few trials
	// decide, and any one that sees the pool is proof.
	for range probeTrials {
		pooled, err := probeOnce(ctx, a, b)
		if err != nil || pooled {
			return pooled, err
		}
	}
	return false, nil
}

// probeTrials is how many trials transactionPooled makes before it
// concludes that no transaction pool is in the way.
const probeTrials = 8

// probeOnce is one trial of transactionPooled with clients a and b.
func probeOnce(ctx context.Context, a, b *pgx.Conn) (bool, error) {
	backend := func(ctx context.Context, q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) (int32, error) {
		var pid int32
		err := q.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid)
		return pid, err
	}
	a1, err := backend(ctx, a)
	if err != nil {
		return false, err
	}
	tx, err := b.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only
	bp, err := backend(ctx, tx)
	if err != nil {
		return false, err
	}
	if bp == a1 {
		return true, nil
	}
	wctx, wcancel := context.WithTimeout(ctx, probeWait)
	a2, err := backend(wctx, a)
	wcancel()
	if err != nil {
		if ctx.Err() == nil && (pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded)) {
			return true, nil // A has no server connection of its own
		}
		return false, err
	}
	return a2 != a1, nil
}
