package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/spkgate/spkgate/keystore"
)

//go:embed migrations/*.up.sql
var migrationFiles embed.FS

// loadMigrations reads the embedded migrations, in order.
func loadMigrations() ([]keystore.Migration, error) {
	ms, err := keystore.LoadMigrations(migrationFiles, "migrations/*.up.sql")
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	return ms, nil
}

// migrate applies the migrations the database lacks, one transaction
// each. Every transaction first takes a transaction-scoped advisory lock
// and reads the schema's version again, so instances starting together
// wait for each other and none applies a migration twice. A lock scoped to
// the transaction, not the session, is what works through a
// transaction-pooling proxy, where consecutive statements of one client
// may run on different server connections: a session lock could be left
// held on a server connection that the proxy hands to someone else.
func migrate(ctx context.Context, cc *pgx.ConnConfig) error {
	const op = "migrate"
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, MigrateTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cc.Copy())
	if err != nil {
		return translate(op, err, false)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	for {
		var applied *keystore.Migration
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			applied = nil
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
				version    integer PRIMARY KEY,
				name       text NOT NULL,
				applied_at timestamptz NOT NULL DEFAULT now()
			)`); err != nil {
				return err
			}
			var newest int
			if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&newest); err != nil {
				return err
			}
			if len(ms) > 0 && newest > ms[len(ms)-1].Version {
				return &dataError{fmt.Sprintf("database schema version %d is newer than this binary supports (%d)", newest, ms[len(ms)-1].Version)}
			}
			for i := range ms {
				if ms[i].Version <= newest {
					continue
				}
				m := &ms[i]
				if _, err := tx.Exec(ctx, m.SQL); err != nil {
					return &migrationError{name: m.Name, err: err}
				}
				if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
					return err
				}
				applied = m
				return nil
			}
			return nil
		})
		if err != nil {
			var me *migrationError
			if errors.As(err, &me) {
				return translate(op+" "+me.name, me.err, false)
			}
			return translate(op, err, false)
		}
		if applied == nil {
			return nil
		}
	}
}

// migrationError is the failure of one migration's SQL.
type migrationError struct {
	name string
	err  error
}

func (e *migrationError) Error() string { return e.name + ": " + e.err.Error() }
func (e *migrationError) Unwrap() error { return e.err }
