package pgstore

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

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
	// listenCfg configures the dedicated connection of Listen; nil when
	// no connection can listen (see Options.ListenDSN).
	listenCfg *pgconn.Config
	// txPooled: the connection string leads through a transaction-pooling
	// proxy (detected at Open).
	txPooled bool
	logger   *zap.Logger

	closed    atomic.Bool
	closeOnce sync.Once
	// deafOnce: Listen has said why it cannot listen.
	deafOnce sync.Once
}

// Interface guard.
var _ keystore.Store = (*Store)(nil)

// Options are the settings of OpenWith beyond the connection string.
type Options struct {
	// ListenDSN is the connection string of Listen's dedicated connection.
	// LISTEN needs a connection that keeps its server session: PostgreSQL
	// itself or a session-pooling proxy. Give it when the main connection
	// string goes through a transaction-pooling proxy. Default: the main
	// connection string, unless that goes through a transaction-pooling
	// proxy: then the store cannot listen, and Listen returns only when
	// its context ends (the caller reads the change log instead).
	ListenDSN string
	// Logger is told, once, why Listen cannot listen, and when a listening
	// connection is lost or cannot be kept up. Default: none.
	Logger *zap.Logger
}

// Open connects to the database named by dsn (a postgres:// URL or
// keyword/value string, as libpq accepts, including pgxpool's pool_*
// settings and sslmode, sslrootcert) and applies the embedded migrations.
// If the server cannot be reached the error matches keystore.ErrUnavailable.
func Open(ctx context.Context, dsn string) (*Store, error) {
	return OpenWith(ctx, dsn, Options{})
}

// OpenWith is Open with Options.
//
// It detects whether dsn leads through a transaction-pooling proxy such as
// PgBouncer with pool_mode=transaction (see transactionPooled). If so,
// queries use pgx's cache_describe mode, which needs no named prepared
// statement, unless the connection string sets default_query_exec_mode
// itself (cache_statement is refused there: it cannot work); and Listen
// uses opts.ListenDSN, or does not listen at all. A ListenDSN that itself
// leads through a transaction-pooling proxy is refused.
func OpenWith(ctx context.Context, dsn string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, parseError("", err)
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	appName := defaults(cfg.ConnConfig, "spkgate")
	s := &Store{logger: opts.Logger}
	if s.logger == nil {
		s.logger = zap.NewNop()
	}
	s.txPooled, err = transactionPooled(ctx, cfg.ConnConfig)
	if err != nil {
		return nil, translate("open", err, false)
	}
	if s.txPooled {
		if !strings.Contains(dsn, "default_query_exec_mode") {
			cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
		} else if cfg.ConnConfig.DefaultQueryExecMode == pgx.QueryExecModeCacheStatement {
			return nil, errors.New("pgstore: the connection string leads through a transaction-pooling proxy " +
				"(PgBouncer pool_mode=transaction), where default_query_exec_mode=cache_statement cannot work: " +
				"remove it (the store then uses cache_describe) or set cache_describe")
		}
	}
	if err := migrate(ctx, cfg.ConnConfig); err != nil {
		return nil, err
	}
	switch {
	case opts.ListenDSN != "":
		lc, err := pgx.ParseConfig(opts.ListenDSN)
		if err != nil {
			return nil, parseError("listen ", err)
		}
		listenName := defaults(lc, appName)
		pooled, err := transactionPooled(ctx, lc)
		if err != nil {
			return nil, translate("open listen connection", err, false)
		}
		if pooled {
			return nil, errors.New("pgstore: the listen connection string leads through a transaction-pooling " +
				"proxy (PgBouncer pool_mode=transaction), where LISTEN cannot work: " +
				"point it at PostgreSQL itself or at a session-pooling proxy (pool_mode=session)")
		}
		s.listenCfg = lc.Config.Copy()
		s.listenCfg.RuntimeParams["application_name"] = listenName + ListenerSuffix
	case !s.txPooled:
		s.listenCfg = cfg.ConnConfig.Config.Copy()
		s.listenCfg.RuntimeParams["application_name"] = appName + ListenerSuffix
	}
	s.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, s.errorf("open", err)
	}
	return s, nil
}

// defaults applies the settings a connection string may leave out and
// returns the connection's application_name.
func defaults(cc *pgx.ConnConfig, appName string) string {
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = DefaultConnectTimeout
	}
	if name, ok := cc.RuntimeParams["application_name"]; ok {
		return name
	}
	cc.RuntimeParams["application_name"] = appName
	return appName
}

// TransactionPooled reports whether the connection string leads through a
// transaction-pooling proxy (detected at Open).
func (s *Store) TransactionPooled() bool { return s.txPooled }

// Listens reports whether Listen can listen (false: it only waits for its
// context to end; see Options.ListenDSN).
func (s *Store) Listens() bool { return s.listenCfg != nil }

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
