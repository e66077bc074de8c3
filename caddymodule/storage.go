package caddymodule

import (
	"context"
	"errors"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"

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
// can share.
type PostgresStorage struct {
	// DSN is the connection string, as a URL or key=value pairs; it is
	// never logged. Placeholders are replaced, so a Caddyfile can say
	// {env.SPK_DATABASE_URL} and keep the password out of the config.
	DSN string `json:"dsn,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (PostgresStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "spk.storage.postgres",
		New: func() caddy.Module { return new(PostgresStorage) },
	}
}

// Provision replaces placeholders in the DSN.
func (s *PostgresStorage) Provision(caddy.Context) error {
	s.DSN = caddy.NewReplacer().ReplaceKnown(s.DSN, "")
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
func (s *PostgresStorage) PoolKey() string { return "postgres:" + s.DSN }

// OpenStore implements StoreOpener.
func (s *PostgresStorage) OpenStore(ctx context.Context) (keystore.Store, error) {
	return pgstore.Open(ctx, s.DSN)
}

// Interface guards
var (
	_ StoreOpener       = (*SQLiteStorage)(nil)
	_ StoreOpener       = (*PostgresStorage)(nil)
	_ caddy.Provisioner = (*SQLiteStorage)(nil)
	_ caddy.Provisioner = (*PostgresStorage)(nil)
	_ caddy.Validator   = (*PostgresStorage)(nil)
)
