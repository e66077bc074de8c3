package pgstore

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/spkgate/spkgate/keystore"
)

// Defaults applied when the connection string does not set them.
const (
	// DefaultMaxConns is the pool size unless the DSN has pool_max_conns.
	DefaultMaxConns = 10
	// DefaultConnectTimeout bounds establishing one connection unless the
	// DSN has connect_timeout, so that an unreachable server answers fast.
	DefaultConnectTimeout = 2 * time.Second
	// QueryTimeout bounds a read whose context has no deadline.
	QueryTimeout = 2 * time.Second
	// WriteTimeout bounds a write whose context has no deadline.
	WriteTimeout = 5 * time.Second
	// BulkWriteTimeout bounds a write of many rows (RevokeAccountKeys)
	// whose context has no deadline.
	BulkWriteTimeout = 30 * time.Second
	// MigrateTimeout bounds Open's migrations (including the wait for
	// another instance's) when its context has no deadline.
	MigrateTimeout = 2 * time.Minute
)

// Advisory lock keys ("spkgate" + a digit, as a bigint).
const (
	migrationLockKey int64 = 0x73706b6761746531 // held while migrating
	changesLockKey   int64 = 0x73706b6761746532 // held while appending to changes
)

// Store is a keystore.Store backed by PostgreSQL. It is safe for
// concurrent use.
type Store struct {
	pool *pgxpool.Pool
	// listenCfg configures the dedicated connection of Listen.
	listenCfg *pgconn.Config

	closed    atomic.Bool
	closeOnce sync.Once
}

// Interface guard.
var _ keystore.Store = (*Store)(nil)

// Open connects to the database named by dsn (a postgres:// URL or
// keyword/value string, as libpq accepts, including pgxpool's pool_*
// settings) and applies the embedded migrations. If the server cannot be
// reached the error matches keystore.ErrUnavailable.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The parse error may quote the connection string.
		return nil, errors.New("pgstore: invalid postgres connection string")
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	appName, ok := cfg.ConnConfig.RuntimeParams["application_name"]
	if !ok {
		appName = "spkgate"
		cfg.ConnConfig.RuntimeParams["application_name"] = appName
	}
	if err := migrate(ctx, cfg.ConnConfig); err != nil {
		return nil, err
	}
	listenCfg := cfg.ConnConfig.Config.Copy()
	listenCfg.RuntimeParams["application_name"] = appName + ListenerSuffix
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, (&Store{}).errorf("open", err)
	}
	return &Store{pool: pool, listenCfg: listenCfg}, nil
}

// Close closes the pool, waiting for connections in use to be returned.
// Later calls return keystore.ErrUnavailable; closing twice is harmless.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.pool.Close()
	})
	return nil
}

// withTimeout gives ctx a deadline d from now unless it already has one.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	const op = "ping"
	if err := s.closedErr(op); err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, QueryTimeout)
	defer cancel()
	if err := s.pool.Ping(ctx); err != nil {
		return s.errorf(op, err)
	}
	return nil
}
