package pgstore

import (
	"context"
	"embed"
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

// migrate applies the migrations the database lacks, each in its own
// transaction, on a dedicated connection holding a session advisory lock:
// instances starting together wait for each other, and closing the
// connection releases the lock whatever happens.
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

	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLockKey); err != nil {
		return translate(op, err, false)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return translate(op, err, false)
	}
	var newest int
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&newest); err != nil {
		return translate(op, err, false)
	}
	if len(ms) > 0 && newest > ms[len(ms)-1].Version {
		return fmt.Errorf("pgstore: database schema version %d is newer than this binary supports (%d)", newest, ms[len(ms)-1].Version)
	}
	for _, m := range ms {
		if m.Version <= newest {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
			return err
		})
		if err != nil {
			return translate("migrate "+m.Name, err, false)
		}
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, migrationLockKey); err != nil {
		return translate(op, err, false)
	}
	return nil
}
