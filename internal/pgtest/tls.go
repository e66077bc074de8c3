package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// UseTLS makes a cluster that pgtest started accept TLS connections with
// the given PEM certificate (chain) and key, replacing any it had, and
// reloads it: connections opened from then on use them. Plain connections
// are still accepted (the client's sslmode decides). Use it on a server of
// the test's own (NewServer): the shared one serves other tests too.
func (s *Server) UseTLS(tb testing.TB, certPEM, keyPEM []byte) {
	tb.Helper()
	s.needCluster(tb, "configure TLS on")
	s.mu.Lock()
	defer s.mu.Unlock()
	cert := filepath.Join(s.dataDir, "spk_server.crt")
	key := filepath.Join(s.dataDir, "spk_server.key")
	if err := os.WriteFile(cert, certPEM, 0o644); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	// PostgreSQL refuses a key that others can read.
	if err := os.WriteFile(key, keyPEM, 0o600); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	if s.asUser != "" {
		u, err := user.Lookup(s.asUser)
		if err != nil {
			tb.Fatalf("pgtest: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{cert, key} {
			if err := os.Chown(p, uid, gid); err != nil {
				tb.Fatalf("pgtest: %v", err)
			}
		}
	}
	if !s.tls {
		f, err := os.OpenFile(filepath.Join(s.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			tb.Fatalf("pgtest: %v", err)
		}
		_, err = fmt.Fprintf(f, "\n# pgtest TLS\nssl = on\nssl_cert_file = 'spk_server.crt'\nssl_key_file = 'spk_server.key'\n")
		if err := errors.Join(err, f.Close()); err != nil {
			tb.Fatalf("pgtest: %v", err)
		}
		s.tls = true
	}
	// PostgreSQL reads its certificate again on reload, which pg_ctl only
	// signals: wait until new sessions see the new configuration.
	before, err := s.confLoadTime()
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	if err := s.pgCtl("reload"); err != nil {
		tb.Fatalf("pgtest: reloading the server: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		after, err := s.confLoadTime()
		if err == nil && after.After(before) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("pgtest: the server did not reload within 30s (%v)\n%s", err, s.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// confLoadTime is when the server last read its configuration files.
func (s *Server) confLoadTime() (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.baseDSN)
	if err != nil {
		return time.Time{}, redact(err)
	}
	defer conn.Close(ctx)
	var t time.Time
	err = conn.QueryRow(ctx, `SELECT pg_conf_load_time()`).Scan(&t)
	return t, err
}
