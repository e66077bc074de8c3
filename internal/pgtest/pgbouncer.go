package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PoolMode is PgBouncer's pool_mode: when a client's server connection goes
// back to the pool.
type PoolMode string

// The pool modes a Bouncer runs in.
const (
	// SessionPooling keeps a server connection for the client's whole
	// session: LISTEN and prepared statements work as they do directly.
	SessionPooling PoolMode = "session"
	// TransactionPooling gives the server connection back after every
	// transaction (the default of several managed PostgreSQL services):
	// named prepared statements and LISTEN do not survive it.
	TransactionPooling PoolMode = "transaction"
)

// errNoPgBouncer means no pgbouncer binary was found.
var errNoPgBouncer = errors.New("no pgbouncer binary on PATH or in /usr/sbin (Debian: apt-get install pgbouncer)")

// Bouncer is a PgBouncer process in front of a Server, listening on a free
// port of 127.0.0.1.
type Bouncer struct {
	mode PoolMode
	port int
	dir  string
	cmd  *exec.Cmd
	// exited receives the process's end, once.
	exited chan error
}

// NewBouncer starts PgBouncer in the given pool mode in front of s and
// stops it when the test ends. Every database of s is reachable through it
// under its own name. Without pgbouncer installed the test is skipped,
// except under CI, where it fails.
func NewBouncer(tb testing.TB, s *Server, mode PoolMode) *Bouncer {
	tb.Helper()
	bin, err := findPgBouncer()
	if err != nil {
		skipOrFatal(tb, "pgtest: "+err.Error())
	}
	b, err := startBouncer(bin, s, mode)
	if err != nil {
		tb.Fatalf("pgtest: pgbouncer: %v", err)
	}
	tb.Cleanup(b.stop)
	return b
}

// Addr returns the bouncer's host:port.
func (b *Bouncer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }

// Mode returns the bouncer's pool mode.
func (b *Bouncer) Mode() PoolMode { return b.mode }

// DSN returns dsn (a connection string to a database of the bouncer's
// server) pointed at the bouncer instead.
func (b *Bouncer) DSN(tb testing.TB, dsn string) string {
	tb.Helper()
	return retarget(tb, dsn, b.Addr())
}

// retarget returns dsn with its host and port replaced by addr's.
func retarget(tb testing.TB, dsn, addr string) string {
	tb.Helper()
	host, port, _ := net.SplitHostPort(addr)
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			tb.Fatalf("pgtest: cannot parse the connection string")
		}
		u.Host = addr
		return u.String()
	}
	return dsn + " host=" + host + " port=" + port
}

// findPgBouncer returns the path of the pgbouncer binary.
func findPgBouncer() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/local/bin/pgbouncer"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errNoPgBouncer
}

// startBouncer writes a configuration for s into a temporary directory and
// runs pgbouncer on it (as the "postgres" user when root: PgBouncer
// refuses to run as root) until it accepts connections.
func startBouncer(bin string, s *Server, mode PoolMode) (_ *Bouncer, err error) {
	cfg, err := pgx.ParseConfig(s.baseDSN)
	if err != nil {
		return nil, errors.New("cannot parse the server's connection string")
	}
	b := &Bouncer{mode: mode}
	b.dir, err = os.MkdirTemp("", "spkgate-pgbouncer-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(b.dir)
		}
	}()
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, errors.New(`running as root, but there is no "postgres" user to run pgbouncer as`)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(b.dir, uid, gid); err != nil {
			return nil, err
		}
	}
	// The bouncer logs in to the server as the client's user, with the
	// password of the server's connection string (none for the throwaway
	// cluster, which trusts loopback connections).
	users := fmt.Sprintf("%q %q\n", cfg.User, cfg.Password)
	if err := os.WriteFile(filepath.Join(b.dir, "userlist.txt"), []byte(users), 0o644); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		if b.port, err = freePort(); err != nil {
			return nil, err
		}
		ini := fmt.Sprintf(`[databases]
* = host=%s port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = %s
max_client_conn = 2000
default_pool_size = 40
server_lifetime = 3600
server_idle_timeout = 600
ignore_startup_parameters = extra_float_digits
logfile = %s
pidfile = %s
`, cfg.Host, cfg.Port, b.port, filepath.Join(b.dir, "userlist.txt"), mode,
			filepath.Join(b.dir, "pgbouncer.log"), filepath.Join(b.dir, "pgbouncer.pid"))
		iniPath := filepath.Join(b.dir, "pgbouncer.ini")
		if err := os.WriteFile(iniPath, []byte(ini), 0o644); err != nil {
			return nil, err
		}
		b.cmd = exec.Command(bin, iniPath)
		b.cmd.Dir = b.dir
		// Ends with the test binary even if its cleanup never runs.
		b.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
		if err := b.cmd.Start(); err != nil {
			return nil, fmt.Errorf("starting %s: %w", bin, err)
		}
		b.exited = make(chan error, 1)
		go func() { b.exited <- b.cmd.Wait() }()
		err = b.waitReady(cfg, b.exited)
		if err == nil {
			return b, nil
		}
		b.cmd.Process.Kill()
		<-b.exited
		if attempt < 4 && strings.Contains(b.logTail(), "Address already in use") {
			continue // someone took the port in between
		}
		return nil, fmt.Errorf("%v\n--- pgbouncer log ---\n%s", err, b.logTail())
	}
}

// waitReady waits until a query through the bouncer is answered.
func (b *Bouncer) waitReady(cfg *pgx.ConnConfig, exited <-chan error) error {
	dsn := fmt.Sprintf("postgres://%s@%s/postgres?sslmode=disable&connect_timeout=2&default_query_exec_mode=simple_protocol",
		url.User(cfg.User).String(), b.Addr())
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("pgbouncer exited: %v", err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT 1")
			conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgbouncer does not answer on %s: %v", b.Addr(), redact(err))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logTail returns the end of the bouncer's log.
func (b *Bouncer) logTail() string {
	data, err := os.ReadFile(filepath.Join(b.dir, "pgbouncer.log"))
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(data) > 4096 {
		data = data[len(data)-4096:]
	}
	return string(data)
}

// stop ends the bouncer and removes its directory.
func (b *Bouncer) stop() {
	if b.cmd != nil && b.cmd.Process != nil {
		b.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-b.exited:
		case <-time.After(5 * time.Second):
			b.cmd.Process.Kill()
			<-b.exited
		}
	}
	os.RemoveAll(b.dir)
}
