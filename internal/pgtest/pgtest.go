// Package pgtest gives tests a real PostgreSQL server.
//
// DSN returns a connection string to a new, empty database on a server that
// all tests of one test binary share. The server is the one named by the
// environment variable SPK_TEST_DATABASE_URL (databases are created in it,
// and dropped again) or, without it, a throwaway cluster that pgtest starts
// on first use with the PostgreSQL binaries it finds on PATH or under
// /usr/lib/postgresql/*/bin: in a temporary directory, listening only on
// 127.0.0.1 on a free port, with trust authentication and fsync off. When
// the tests run as root, the cluster runs as the "postgres" user.
//
// Without PostgreSQL binaries, tests that need a server are skipped, except
// when the environment variable CI is set: CI never skips, so there they fail.
//
// A package using pgtest should call Main from its TestMain so that the
// cluster is stopped and removed when its tests end:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// (A watchdog process removes the cluster as well if the test binary dies
// without running Main's cleanup, e.g. on a test timeout.)
//
// Fault tests control a server through Server: Shared returns the shared one,
// NewServer starts a private one (so that stopping it cannot disturb other
// tests running in parallel).
//
// NewBouncer puts a real PgBouncer (Debian's pgbouncer package) in front of
// a server, in session or transaction pool_mode; like PostgreSQL, it is
// skipped when not installed, except under CI. NewCA makes up a certificate
// authority and server certificates, and Server.UseTLS turns ssl on for a
// private server with one of them.
package pgtest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDatabaseURL names the environment variable with the connection string
// of an existing server to create test databases in, instead of starting a
// throwaway cluster. Its role must be allowed to CREATE DATABASE.
const EnvDatabaseURL = "SPK_TEST_DATABASE_URL"

// errNoBinaries means no PostgreSQL installation was found.
var errNoBinaries = errors.New("no PostgreSQL binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin")

// Server is a PostgreSQL server that tests create databases in. The methods
// that stop and start it work only on a cluster that pgtest started.
type Server struct {
	// external: the server named by SPK_TEST_DATABASE_URL.
	external bool
	// baseDSN is the connection string to the maintenance database; the
	// DSNs of test databases differ from it only in the database name.
	baseDSN string

	// The throwaway cluster.
	binDir   string
	dir      string // temporary directory holding everything below
	dataDir  string
	sockDir  string
	logFile  string
	port     int
	asUser   string   // run the binaries as this user (when root)
	watchdog *os.File // write end of the watchdog's stdin

	mu      sync.Mutex // serializes Stop, Start and UseTLS
	running bool
	removed bool
	tls     bool // UseTLS configured ssl
}

var (
	sharedMu  sync.Mutex
	shared    *Server
	sharedErr error

	clustersMu sync.Mutex
	clusters   []*Server // every cluster started, for Main

	dbCounter atomic.Int64
)

// Main runs the tests of m, then stops and removes every cluster that
// pgtest started, and exits with the tests' exit code. Call it from
// TestMain.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main without the exit: it runs the tests of m, stops and removes
// every cluster that pgtest started, and returns the tests' exit code, for
// a TestMain that has more to clean up.
func Run(m *testing.M) int {
	code := m.Run()
	clustersMu.Lock()
	cs := slices.Clone(clusters)
	clustersMu.Unlock()
	for _, s := range cs {
		if err := s.remove(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
	}
	return code
}

// DSN returns a connection string to a new, empty database on the shared
// server. The database is dropped when the test ends (close its pools
// before that, e.g. with t.Cleanup registered after calling DSN).
func DSN(tb testing.TB) string {
	tb.Helper()
	return Shared(tb).DSN(tb)
}

// Shared returns the server shared by the test binary, starting it on first
// use. Tests that stop it must not run in parallel with other tests of the
// binary that use it; NewServer gives a test a server of its own.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		if dsn := os.Getenv(EnvDatabaseURL); dsn != "" {
			shared, sharedErr = externalServer(dsn)
		} else {
			shared, sharedErr = startCluster()
		}
	}
	if sharedErr != nil {
		fail(tb, sharedErr)
	}
	return shared
}

// NewServer starts a throwaway cluster for this test alone (even when
// SPK_TEST_DATABASE_URL is set) and removes it when the test ends.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	s, err := startCluster()
	if err != nil {
		fail(tb, err)
	}
	tb.Cleanup(func() {
		if err := s.remove(); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return s
}

// fail skips the test when PostgreSQL is not installed (fails it under CI)
// and fails it on any other error.
func fail(tb testing.TB, err error) {
	tb.Helper()
	if errors.Is(err, errNoBinaries) {
		skipOrFatal(tb, "pgtest: "+err.Error()+"; install PostgreSQL or set "+EnvDatabaseURL)
	}
	tb.Fatalf("pgtest: %v", err)
}

// skipOrFatal skips, except under CI, where nothing may be skipped.
func skipOrFatal(tb testing.TB, msg string) {
	tb.Helper()
	if os.Getenv("CI") != "" {
		tb.Fatal(msg + " (CI is set: not skipping)")
	}
	tb.Skip(msg)
}

// DSN returns a connection string to a new, empty database on s, dropped
// when the test ends.
func (s *Server) DSN(tb testing.TB) string {
	tb.Helper()
	name := dbName(tb.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.admin(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("pgtest: creating database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.admin(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil && s.isRunning() {
			tb.Logf("pgtest: dropping database %s: %v", name, err)
		}
	})
	dsn, err := withDatabase(s.baseDSN, name)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return dsn
}

// DatabaseName returns the database that dsn names.
func DatabaseName(tb testing.TB, dsn string) string {
	tb.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		tb.Fatalf("pgtest: cannot parse the connection string")
	}
	return cfg.Database
}

// Addr returns the server's host:port.
func (s *Server) Addr() string {
	cfg, err := pgx.ParseConfig(s.baseDSN)
	if err != nil {
		return ""
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}

// TerminateBackends ends every connection to database dbname (as
// pg_terminate_backend does, e.g. when an operator kills sessions or a
// pooler fails over) and waits until they are gone.
func (s *Server) TerminateBackends(tb testing.TB, dbname string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.baseDSN)
	if err != nil {
		tb.Fatalf("pgtest: connecting to %s: %v", s.Addr(), err)
	}
	defer conn.Close(ctx)
	for {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = $1 AND pid <> pg_backend_pid()`, dbname).Scan(&n)
		if err != nil {
			tb.Fatalf("pgtest: terminating backends of %s: %v", dbname, err)
		}
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("pgtest: backends of %s still there after 30s", dbname)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop shuts the server down (fast mode: open sessions are ended). It is
// a no-op if the server is already stopped.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	s.needCluster(tb, "stop")
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return
	}
	if err := s.pgCtl("stop", "-m", "fast"); err != nil {
		tb.Fatalf("pgtest: stopping the server: %v", err)
	}
	s.running = false
}

// Start starts a stopped server again, on the same port with the same data.
// It is a no-op if the server is running.
func (s *Server) Start(tb testing.TB) {
	tb.Helper()
	s.needCluster(tb, "start")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return
	}
	if err := s.start(); err != nil {
		tb.Fatalf("pgtest: starting the server: %v", err)
	}
}

// Restart stops and starts the server.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop(tb)
	s.Start(tb)
}

func (s *Server) needCluster(tb testing.TB, what string) {
	tb.Helper()
	if s.external {
		skipOrFatal(tb, "pgtest: cannot "+what+" the server named by "+EnvDatabaseURL+"; use NewServer")
	}
}

func (s *Server) isRunning() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.external || s.running
}

// admin runs one statement on the maintenance database.
func (s *Server) admin(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, s.baseDSN)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", s.Addr(), redact(err))
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// redact drops the text of connect errors, which name the user and host.
func redact(err error) error {
	var ne *net.OpError
	if errors.As(err, &ne) {
		return ne.Err
	}
	return err
}

var nameUnsafe = regexp.MustCompile(`[^a-z0-9]+`)

// dbName makes a unique database name that still tells which test made it.
func dbName(testName string) string {
	n := nameUnsafe.ReplaceAllString(strings.ToLower(testName), "_")
	n = strings.Trim(n, "_")
	if len(n) > 36 {
		n = n[len(n)-36:]
	}
	return fmt.Sprintf("spk_%s_%d_%s", n, dbCounter.Add(1), strings.ToLower(rand.Text()[:6]))
}

// withDatabase returns dsn with its database replaced by name.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", errors.New("cannot parse the server's connection string")
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// Keyword/value form: a later keyword overrides an earlier one.
	return dsn + " dbname=" + name, nil
}

func externalServer(dsn string) (*Server, error) {
	if _, err := pgx.ParseConfig(dsn); err != nil {
		return nil, fmt.Errorf("cannot parse %s", EnvDatabaseURL)
	}
	s := &Server{external: true, baseDSN: dsn}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.admin(ctx, "SELECT 1"); err != nil {
		return nil, fmt.Errorf("the server named by %s does not answer: %w", EnvDatabaseURL, err)
	}
	return s, nil
}
