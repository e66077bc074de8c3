package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

//go:embed migrations/*.up.sql
var migrationFiles embed.FS

// loadMigrations reads the embedded migrations, in order.
func loadMigrations() ([]keystore.Migration, error) {
	ms, err := keystore.LoadMigrations(migrationFiles, "migrations/*.up.sql")
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: %w", err)
	}
	return ms, nil
}

// migrate applies the embedded migrations that the database lacks, each in
// its own IMMEDIATE transaction (so two processes starting at once apply
// each migration exactly once).
func migrate(ctx context.Context, db *sql.DB) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at TEXT NOT NULL
	) STRICT`); err != nil {
		return fmt.Errorf("sqlitestore: creating schema_migrations: %w", classify(err, false))
	}
	var newest int
	if err := db.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&newest); err != nil {
		return fmt.Errorf("sqlitestore: reading schema version: %w", classify(err, false))
	}
	if len(ms) > 0 && newest > ms[len(ms)-1].Version {
		return fmt.Errorf("sqlitestore: database schema version %d is newer than this binary supports (%d)", newest, ms[len(ms)-1].Version)
	}
	for _, m := range ms {
		if err := applyMigration(ctx, db, m); err != nil {
			return fmt.Errorf("sqlitestore: applying migration %s: %w", m.Name, classify(err, false))
		}
	}
	return nil
}

func applyMigration(ctx context.Context, db *sql.DB, m keystore.Migration) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, m.Version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		m.Version, m.Name, formatTime(time.Now())); err != nil {
		return err
	}
	return tx.Commit()
}
