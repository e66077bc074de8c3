// Package sqlitestore is the embedded keystore.Store: one SQLite file,
// through the pure-Go modernc.org/sqlite driver, so that spkgate runs with
// no database server.
//
// The database is opened in WAL mode. Reads go through a pool of read-only
// connections and never wait for writers; writes go through a single
// connection whose transactions begin IMMEDIATE, so that writers queue on
// SQLite's busy handler (BusyTimeout) instead of failing with SQLITE_BUSY,
// whether they are goroutines of this process or another process (such as
// a command line tool) using the same file.
//
// Times are stored as UTC text with exactly six fractional digits, so they
// round-trip to the microsecond and compare as text.
package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"

	"github.com/spkgate/spkgate/keystore"
)

// BusyTimeout is how long a statement waits for a lock held by another
// connection (or process) before it gives up with keystore.ErrUnavailable.
const BusyTimeout = 5 * time.Second

//go:embed migrations/*.up.sql
var migrationFiles embed.FS

// Store is a keystore.Store backed by a SQLite database file.
// It is safe for concurrent use.
type Store struct {
	rdb *sql.DB // read-only connections, a pool
	wdb *sql.DB // the one writer connection, BEGIN IMMEDIATE

	lookup *sql.Stmt // prepared on rdb: the hot path

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Interface guard.
var _ keystore.Store = (*Store)(nil)

// Open opens (creating if needed) the SQLite database at path and applies
// the embedded migrations. Missing parent directories are created with mode
// 0700 and a new database file with mode 0600: the file holds key hashes.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, errors.New("sqlitestore: a database file path is required")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: resolving database path: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("sqlitestore: creating database directory: %w", err)
	}
	// Create the file ourselves so that it (and the -wal and -shm files,
	// which SQLite creates with the database file's mode) is private.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: opening database file: %w", err)
	}
	f.Close()

	base := "file:" + uriEscape(abs) + "?_pragma=busy_timeout(" + strconv.Itoa(int(BusyTimeout/time.Millisecond)) + ")" +
		"&_pragma=foreign_keys(1)"
	s := &Store{}

	s.wdb, err = sql.Open("sqlite", base+"&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: opening database: %w", err)
	}
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetMaxIdleConns(1)
	s.wdb.SetConnMaxLifetime(0)
	s.wdb.SetConnMaxIdleTime(0)

	if err := connectWriter(ctx, s.wdb); err != nil {
		s.wdb.Close()
		return nil, err
	}
	if err := migrate(ctx, s.wdb); err != nil {
		s.wdb.Close()
		return nil, err
	}

	readers := max(4, runtime.GOMAXPROCS(0))
	// Lookups read through a memory map (up to 256 MiB of the file) rather
	// than a read system call per page that misses SQLite's own 2 MB
	// cache: with a million keys, most probes reach such pages. The cost:
	// a disk I/O error on a mapped page stops the process (SIGBUS) where a
	// read would have returned an error. Not on 32-bit builds, where four
	// readers would take a gigabyte of address space.
	rdbURI := base + "&_query_only=1"
	if strconv.IntSize == 64 {
		rdbURI += "&_pragma=mmap_size(268435456)"
	}
	s.rdb, err = sql.Open("sqlite", rdbURI)
	if err != nil {
		s.wdb.Close()
		return nil, fmt.Errorf("sqlitestore: opening database: %w", err)
	}
	s.rdb.SetMaxOpenConns(readers)
	s.rdb.SetMaxIdleConns(readers)
	s.rdb.SetConnMaxLifetime(0)
	s.rdb.SetConnMaxIdleTime(5 * time.Minute)

	s.lookup, err = s.rdb.PrepareContext(ctx, lookupSQL)
	if err != nil {
		s.rdb.Close()
		s.wdb.Close()
		return nil, s.errorf("open", err)
	}
	return s, nil
}

// Close closes the database. Later calls return keystore.ErrUnavailable;
// closing twice is harmless.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.closeErr = errors.Join(s.lookup.Close(), s.rdb.Close(), s.wdb.Close())
		if s.closeErr != nil {
			s.closeErr = fmt.Errorf("sqlitestore: close: %w", s.closeErr)
		}
	})
	return s.closeErr
}

// connectWriter opens the writer's one connection, which sets the
// database's journal mode to WAL. On a new file that switch needs an
// exclusive lock, and SQLite answers SQLITE_BUSY at once, without its busy
// handler, when another connection (of this process or another one
// starting at the same moment) holds a shared lock on the file. Such
// refusals are retried here for up to BusyTimeout, as any other lock wait.
func connectWriter(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(BusyTimeout)
	wait := 5 * time.Millisecond
	for {
		err := db.PingContext(ctx)
		if err == nil {
			return nil
		}
		var se *sqlite.Error
		if !errors.As(err, &se) || se.Code()&0xff != sqliteBusy || time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("sqlitestore: opening database: %w", classify(err, false))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("sqlitestore: opening database: %w", classify(ctx.Err(), false))
		case <-t.C:
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// uriEscape escapes the characters that would end or corrupt the path of a
// SQLite URI filename.
func uriEscape(p string) string {
	r := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")
	return r.Replace(filepath.ToSlash(p))
}

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

// SQLite primary result codes (the low byte of an extended code).
const (
	sqliteBusy       = 5
	sqliteLocked     = 6
	sqliteNoMem      = 7
	sqliteReadOnly   = 8
	sqliteInterrupt  = 9
	sqliteIOErr      = 10
	sqliteCorrupt    = 11
	sqliteFull       = 13
	sqliteCantOpen   = 14
	sqliteProtocol   = 15
	sqliteConstraint = 19
	sqliteNotADB     = 26

	sqliteConstraintPrimaryKey = 1555
	sqliteConstraintUnique     = 2067
)

// opError is what every Store method returns on failure: "sqlitestore: op:
// reason", matching the keystore sentinel it wraps (if any) and the
// context error that caused it (if any).
type opError struct {
	op     string
	reason string
	errs   []error
}

func (e *opError) Error() string   { return "sqlitestore: " + e.op + ": " + e.reason }
func (e *opError) Unwrap() []error { return e.errs }

// errorf translates err, from operation op, into an *opError.
func (s *Store) errorf(op string, err error) error {
	c := classify(err, s.closed.Load())
	return &opError{op: op, reason: c.msg, errs: c.errs}
}

// invalid is a validation error: it matches no keystore sentinel.
func invalid(op, reason string) error {
	return &opError{op: op, reason: reason}
}

// classified is an error reduced to a safe message and the errors it matches.
type classified struct {
	msg  string
	errs []error
}

func (c *classified) Error() string   { return c.msg }
func (c *classified) Unwrap() []error { return c.errs }

// classify maps a driver or database/sql error to the keystore sentinels.
func classify(err error, closed bool) *classified {
	unavailable := func(detail string, extra ...error) *classified {
		return &classified{msg: keystore.ErrUnavailable.Error() + ": " + detail, errs: append([]error{keystore.ErrUnavailable}, extra...)}
	}
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return &classified{msg: keystore.ErrNotFound.Error(), errs: []error{keystore.ErrNotFound}}
	case errors.Is(err, context.Canceled):
		return unavailable(context.Canceled.Error(), context.Canceled)
	case errors.Is(err, context.DeadlineExceeded):
		return unavailable(context.DeadlineExceeded.Error(), context.DeadlineExceeded)
	case closed || errors.Is(err, sql.ErrConnDone):
		return unavailable("store closed")
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		code := se.Code()
		switch code & 0xff {
		case sqliteConstraint:
			if code == sqliteConstraintUnique || code == sqliteConstraintPrimaryKey {
				return &classified{msg: keystore.ErrConflict.Error(), errs: []error{keystore.ErrConflict}}
			}
		case sqliteBusy, sqliteLocked:
			return unavailable("database is locked")
		case sqliteInterrupt:
			return unavailable("interrupted")
		case sqliteNoMem, sqliteReadOnly, sqliteIOErr, sqliteCorrupt, sqliteFull, sqliteCantOpen, sqliteProtocol, sqliteNotADB:
			return unavailable(se.Error())
		}
		return &classified{msg: se.Error(), errs: []error{err}}
	}
	if err.Error() == "sql: database is closed" {
		return unavailable("store closed")
	}
	return &classified{msg: err.Error(), errs: []error{err}}
}
