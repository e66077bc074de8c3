package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// The throwaway cluster: finding the binaries, initdb, starting and
// stopping it as the postgres user, and removing it (a watchdog too).

// findBinaries returns the directory holding initdb and pg_ctl.
func findBinaries() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest major version first.
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range append(dirs, "/usr/local/pgsql/bin") {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d, nil
		}
	}
	return "", errNoBinaries
}

// startCluster creates and starts a throwaway cluster.
func startCluster() (_ *Server, err error) {
	binDir, err := findBinaries()
	if err != nil {
		return nil, err
	}
	s := &Server{binDir: binDir}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root.
		if _, err := user.Lookup("postgres"); err != nil {
			return nil, errors.New(`running as root, but there is no "postgres" user to run PostgreSQL as`)
		}
		if _, err := exec.LookPath("runuser"); err != nil {
			return nil, errors.New("running as root, but runuser is not installed")
		}
		s.asUser = "postgres"
	}
	s.dir, err = os.MkdirTemp("", "spkgate-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("creating the cluster directory: %w", err)
	}
	defer func() {
		if err != nil {
			if s.watchdog != nil {
				s.watchdog.Close()
			}
			os.RemoveAll(s.dir)
		}
	}()
	s.dataDir = filepath.Join(s.dir, "data")
	s.sockDir = filepath.Join(s.dir, "sock")
	s.logFile = filepath.Join(s.dir, "postgres.log")
	if err := os.Mkdir(s.sockDir, 0o700); err != nil {
		return nil, err
	}
	if s.asUser != "" {
		u, _ := user.Lookup(s.asUser)
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{s.dir, s.sockDir} {
			if err := os.Chown(p, uid, gid); err != nil {
				return nil, fmt.Errorf("handing the cluster directory to %s: %w", s.asUser, err)
			}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := s.command(ctx, "initdb", "-D", s.dataDir, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--no-locale", "-N").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("initdb failed: %v\n%s\n(the %q user must be able to reach %s; set TMPDIR elsewhere if not)",
			err, out, cmp(s.asUser, "current"), s.dir)
	}

	// Everything runs until the test binary ends; the watchdog removes the
	// cluster even if it ends without Main's cleanup.
	if err := s.startWatchdog(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		if err := s.writeConfig(); err != nil {
			return nil, err
		}
		err = s.start()
		if err == nil {
			break
		}
		if attempt < 4 && strings.Contains(err.Error(), "already in use") {
			continue // someone took the port in between
		}
		return nil, err
	}
	s.baseDSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
	clustersMu.Lock()
	clusters = append(clusters, s)
	clustersMu.Unlock()
	return s, nil
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// writeConfig appends the cluster's settings (later lines win).
func (s *Server) writeConfig() error {
	f, err := os.OpenFile(filepath.Join(s.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, `
# pgtest
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
max_connections = 1000
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
`, s.port, s.sockDir)
	return errors.Join(err, f.Close())
}

// start runs pg_ctl start and waits until TCP connections are accepted.
// s.mu must be held.
func (s *Server) start() error {
	if err := s.pgCtl("start", "-l", s.logFile); err != nil {
		return err
	}
	s.running = true
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", s.port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			conn.Close(ctx)
			cancel()
			return nil
		}
		cancel()
		if time.Now().After(deadline) {
			return fmt.Errorf("server started but does not accept connections on port %d: %v\n%s", s.port, redact(err), s.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pgCtl runs pg_ctl with a bounded wait and reports its log on failure.
func (s *Server) pgCtl(action string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args = append([]string{action, "-D", s.dataDir, "-w", "-t", "60"}, args...)
	out, err := s.command(ctx, "pg_ctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl %s failed: %v\n%s\n--- server log ---\n%s", action, err, out, s.logTail())
	}
	return nil
}

// command prepares one of the PostgreSQL binaries, as s.asUser if set.
func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	bin := filepath.Join(s.binDir, name)
	var cmd *exec.Cmd
	if s.asUser != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", s.asUser, "--", bin}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, bin, args...)
	}
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=UTC")
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// logTail returns the end of the server log.
func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logFile)
	if err != nil {
		return "(no server log: " + err.Error() + ")"
	}
	if len(b) > 8192 {
		b = b[len(b)-8192:]
	}
	return string(b)
}

// startWatchdog starts a process that, once this process's end closes its
// stdin, stops the cluster and removes its directory. It runs in its own
// process group so that a terminal's ^C reaches only the test binary.
func (s *Server) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	stop := s.command(context.Background(), "pg_ctl", "stop", "-D", s.dataDir, "-m", "immediate", "-w", "-t", "30")
	script := `dir=$1; shift; read -r _; "$@" >/dev/null 2>&1; rm -rf "$dir"`
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "pgtest-watchdog", s.dir}, stop.Args...)...)
	cmd.Stdin = r
	cmd.Env = stop.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("starting the cluster watchdog: %w", err)
	}
	go cmd.Wait() //nolint:errcheck // reaped only; it outlives us if need be
	s.watchdog = w
	return nil
}

// remove stops the cluster and deletes its directory.
func (s *Server) remove() error {
	if s.external {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.removed {
		return nil
	}
	s.removed = true
	var errs []error
	if s.running {
		if err := s.pgCtl("stop", "-m", "immediate"); err != nil {
			errs = append(errs, err)
		}
		s.running = false
	}
	if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, err)
	}
	s.watchdog.Close() // the watchdog now finds nothing left to do
	return errors.Join(errs...)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
