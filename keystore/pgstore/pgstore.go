// Package pgstore is the PostgreSQL keystore.Store, through pgx and a
// pgxpool connection pool. Several spkgate instances can share one
// database: each follows the others' revocations, plan changes and key
// creations through the change log (keystore.Store.Changes).
//
// Open applies the embedded migrations under a PostgreSQL advisory lock,
// so that any number of instances starting at once on an empty database
// all come up. Errors are translated at the package boundary: a driver type
// never leaks out, and an error message never contains the connection
// string, its password or a key hash. A store that cannot answer
// (connection refused, timeout, server shutting down, pool closed) returns
// an error matching keystore.ErrUnavailable.
package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
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

//go:embed migrations/*.up.sql
var migrationFiles embed.FS

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

// withTimeout gives ctx a deadline d from now unless it already has one.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// opError is what every Store method returns on failure: "pgstore: op:
// reason", matching the keystore sentinel it stands for (if any) and the
// context error that caused it (if any), and nothing from pgx.
type opError struct {
	op     string
	reason string
	errs   []error
}

func (e *opError) Error() string   { return "pgstore: " + e.op + ": " + e.reason }
func (e *opError) Unwrap() []error { return e.errs }

// invalid is a validation error: it matches no keystore sentinel.
func invalid(op, reason string) error { return &opError{op: op, reason: reason} }

// dataError reports a row the store cannot decode.
type dataError struct{ msg string }

func (e *dataError) Error() string { return e.msg }

func (s *Store) errorf(op string, err error) error {
	return translate(op, err, s.closed.Load())
}

// translate maps err from operation op to an *opError.
func translate(op string, err error, closed bool) error {
	unavailable := func(detail string, extra ...error) error {
		return &opError{op: op, reason: keystore.ErrUnavailable.Error() + ": " + detail,
			errs: append([]error{keystore.ErrUnavailable}, extra...)}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return &opError{op: op, reason: keystore.ErrNotFound.Error(), errs: []error{keystore.ErrNotFound}}
	}
	if closed {
		return unavailable("store closed")
	}
	// A context error may arrive alone or inside a pgconn timeout error.
	for _, ce := range []error{context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, ce) {
			return unavailable(ce.Error(), ce)
		}
	}
	var de *dataError
	if errors.As(err, &de) {
		return &opError{op: op, reason: de.msg}
	}
	var se pgx.ScanArgError
	if errors.As(err, &se) {
		return &opError{op: op, reason: "cannot decode column " + se.FieldName}
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return unavailable("cannot connect: " + detail(err))
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505": // unique_violation
			return &opError{op: op, reason: keystore.ErrConflict.Error(), errs: []error{keystore.ErrConflict}}
		case transient(pe.Code):
			return unavailable(detail(err))
		}
		// The message, not the detail: a detail can quote row values.
		return &opError{op: op, reason: pe.Message + " (SQLSTATE " + pe.Code + ")"}
	}
	// Anything else is the connection failing: network errors, a closed
	// pool or connection, a protocol error.
	return unavailable(detail(err))
}

// transient reports whether a SQLSTATE means the server cannot answer now
// (as opposed to rejecting the statement).
func transient(code string) bool {
	switch code[:2] {
	case "08", // connection exception
		"53", // insufficient resources (too many connections, disk full)
		"57", // operator intervention (shutdown, query canceled)
		"58", // system error
		"40", // transaction rollback (serialization failure, deadlock)
		"28", // invalid authorization
		"3D": // invalid catalog name (database does not exist)
		return true
	}
	return code == "55P03" // lock_not_available
}

// detail describes a connection failure without the connection string,
// host names or addresses.
func detail(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Message + " (SQLSTATE " + pe.Code + ")"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "cannot resolve the server's host name"
	}
	if pgconn.Timeout(err) {
		return "timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, pgconn.ErrConnClosed) {
		return "connection closed"
	}
	if strings.Contains(err.Error(), "closed pool") {
		return "store closed"
	}
	return "connection failed"
}
