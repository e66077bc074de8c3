package sqlitestore

import (
	"context"
	"database/sql"
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

	// Statement journals (every multi-row upsert of a usage flush has
	// one) are kept in memory, not in temporary files: in the million-key
	// benchmark their writes were a fifth of a flush's CPU, each page one
	// write system call. A journal holds one statement's pages (a usage
	// chunk touches at most 100 rows).
	s.wdb, err = sql.Open("sqlite", base+"&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=temp_store(memory)&_txlock=immediate")
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

// write runs fn in a transaction on the writer connection.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// Ping checks that the database can be read.
func (s *Store) Ping(ctx context.Context) error {
	const op = "ping"
	if err := s.closedErr(op); err != nil {
		return err
	}
	var n int
	if err := s.rdb.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		return s.errorf(op, err)
	}
	return nil
}
