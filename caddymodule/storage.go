package caddymodule

import (
	"context"
	"errors"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/pgstore"
	"github.com/spkgate/spkgate/keystore/sqlitestore"
)

func init() {
	caddy.RegisterModule(SQLiteStorage{})
	caddy.RegisterModule(PostgresStorage{})
}

// StoreOpener is implemented by the modules in the spk.storage namespace:
// each one opens a keystore.Store.
type StoreOpener interface {
	// PoolKey identifies the database, so that configurations naming the
	// same one share a single store and cache across reloads. It may hold
	// a password and is never logged.
	PoolKey() string
	// OpenStore opens the store and applies its migrations.
	OpenStore(ctx context.Context) (keystore.Store, error)
}

// SQLiteStorage keeps keys in an embedded SQLite database file (pure Go, no
// server to run). Several processes on one machine may share the file; for
// several machines use PostgreSQL.
type SQLiteStorage struct {
	// Path of the database file. Placeholders such as {env.*} are replaced.
	// Default: spk/spk.db under Caddy's data directory.
	Path string `json:"path,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (SQLiteStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "spk.storage.sqlite",
		New: func() caddy.Module { return new(SQLiteStorage) },
	}
}

// Provision fills in the default path.
func (s *SQLiteStorage) Provision(caddy.Context) error {
	s.Path = caddy.NewReplacer().ReplaceKnown(s.Path, "")
	if s.Path == "" {
		s.Path = filepath.Join(caddy.AppDataDir(), "spk", "spk.db")
	}
	abs, err := filepath.Abs(s.Path)
	if err != nil {
		return err
	}
	s.Path = abs
	return nil
}

// PoolKey implements StoreOpener.
func (s *SQLiteStorage) PoolKey() string { return "sqlite:" + s.Path }

// OpenStore implements StoreOpener.
func (s *SQLiteStorage) OpenStore(ctx context.Context) (keystore.Store, error) {
	return sqlitestore.Open(ctx, s.Path)
}

// PostgresStorage keeps keys in PostgreSQL, which several spkgate instances
// can share: directly, through a session-pooling proxy, or through a
// transaction-pooling proxy (PgBouncer pool_mode=transaction, detected at
// start), and over TLS (sslmode=verify-full with sslrootcert in the DSN).
type PostgresStorage struct {
	// DSN is the connection string, as a URL or key=value pairs; it is
	// never logged. Placeholders are replaced, so a Caddyfile can say
	// {env.SPK_DATABASE_URL} and keep the password out of the config.
	DSN string `json:"dsn,omitempty"`
	// ListenDSN is the connection string of the one connection that
	// listens (LISTEN/NOTIFY) for the changes other instances make, which
	// then reach this instance within milliseconds. LISTEN needs a
	// connection that keeps its server session: PostgreSQL itself or a
	// session-pooling proxy, never a transaction-pooling one (refused at
	// start). Set it when DSN goes through a transaction-pooling proxy:
	// without it such an instance reads the change log every
	// change_poll_interval instead, and says so at start. Placeholders are
	// replaced; it is never logged. Default: DSN.
	ListenDSN string `json:"listen_dsn,omitempty"`

	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (PostgresStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "spk.storage.postgres",
		New: func() caddy.Module { return new(PostgresStorage) },
	}
}

// Provision replaces placeholders in the connection strings.
func (s *PostgresStorage) Provision(ctx caddy.Context) error {
	s.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	s.DSN = repl.ReplaceKnown(s.DSN, "")
	s.ListenDSN = repl.ReplaceKnown(s.ListenDSN, "")
	return nil
}

// Validate checks that a DSN was given.
func (s *PostgresStorage) Validate() error {
	if s.DSN == "" {
		return errors.New("postgres storage needs a dsn (is the environment variable it names set?)")
	}
	return nil
}

// PoolKey implements StoreOpener.
func (s *PostgresStorage) PoolKey() string { return "postgres:" + s.DSN + "\x00listen:" + s.ListenDSN }

// OpenStore implements StoreOpener.
func (s *PostgresStorage) OpenStore(ctx context.Context) (keystore.Store, error) {
	return pgstore.OpenWith(ctx, s.DSN, pgstore.Options{ListenDSN: s.ListenDSN, Logger: s.logger})
}

// Interface guards
var (
	_ StoreOpener       = (*SQLiteStorage)(nil)
	_ StoreOpener       = (*PostgresStorage)(nil)
	_ caddy.Provisioner = (*SQLiteStorage)(nil)
	_ caddy.Provisioner = (*PostgresStorage)(nil)
	_ caddy.Validator   = (*PostgresStorage)(nil)
)
