package pgstore_test

import (
	"context"
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spkgate/spkgate/internal/pgtest"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/pgstore"
	"github.com/spkgate/spkgate/keystore/storetest"
)

// withParams returns the URL connection string dsn with the given query
// parameters set.
func withParams(t *testing.T, dsn string, kv ...string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parse dsn: %v", err)
	}
	q := u.Query()
	for i := 0; i < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// TestTLS runs PostgreSQL with certificates of a CA made up for the test:
// with sslmode=verify-full and that CA as sslrootcert the store works,
// listener included; a certificate the CA did not sign, one for another
// host name, a CA file that cannot be read, and a server without TLS are
// each refused at Open with an error that says what to fix and names no
// connection string.
func TestTLS(t *testing.T) {
	srv := pgtest.NewServer(t)
	ca := pgtest.NewCA(t, "spkgate test CA")
	plain := srv.DSN(t)
	verify := withParams(t, plain, "sslmode", "verify-full", "sslrootcert", ca.CertFile())

	openErr := func(t *testing.T, dsn string) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := pgstore.Open(ctx, dsn)
		if err == nil {
			s.Close()
			t.Fatal("Open succeeded, want an error")
		}
		if strings.Contains(err.Error(), "127.0.0.1") || strings.Contains(err.Error(), "postgres://") {
			t.Errorf("error %q names the server or the connection string", err)
		}
		t.Logf("Open: %v", err)
		return err
	}

	t.Run("NoTLSOnServer", func(t *testing.T) {
		err := openErr(t, verify)
		if !strings.Contains(err.Error(), "does not accept TLS") {
			t.Errorf("error %q does not say the server refuses TLS", err)
		}
	})

	t.Run("Good", func(t *testing.T) {
		cert, key := ca.Issue(t, "127.0.0.1", "localhost")
		srv.UseTLS(t, cert, key)
		s := open(t, verify)
		rec, _ := listen(t, s)
		nk := storetest.CreateKeyParams("acct_tls")
		if _, err := s.CreateKey(context.Background(), nk); err != nil {
			t.Fatal(err)
		}
		if _, err := s.LookupKey(context.Background(), nk.Hash); err != nil {
			t.Fatal(err)
		}
		next(t, rec, 5*time.Second)
		var ssl bool
		if err := connect(t, verify).QueryRow(context.Background(),
			`SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&ssl); err != nil || !ssl {
			t.Errorf("connection uses TLS: %v (%v)", ssl, err)
		}
	})

	t.Run("UnknownAuthority", func(t *testing.T) {
		other := pgtest.NewCA(t, "someone else's CA")
		cert, key := other.Issue(t, "127.0.0.1", "localhost")
		srv.UseTLS(t, cert, key)
		err := openErr(t, verify)
		if !errors.Is(err, keystore.ErrUnavailable) || !strings.Contains(err.Error(), "not signed by a trusted CA") ||
			!strings.Contains(err.Error(), "sslrootcert") {
			t.Errorf("error %q does not say the certificate is not signed by the CA in sslrootcert", err)
		}
	})

	t.Run("WrongHost", func(t *testing.T) {
		cert, key := ca.Issue(t, "db.invalid")
		srv.UseTLS(t, cert, key)
		err := openErr(t, verify)
		if !strings.Contains(err.Error(), "not valid for the host name") {
			t.Errorf("error %q does not say the certificate is for another host", err)
		}
		// verify-ca checks the chain, not the name.
		s := open(t, withParams(t, verify, "sslmode", "verify-ca"))
		if err := s.Ping(context.Background()); err != nil {
			t.Errorf("verify-ca: %v", err)
		}
	})

	t.Run("MissingCAFile", func(t *testing.T) {
		err := openErr(t, withParams(t, verify, "sslrootcert", filepath.Join(t.TempDir(), "nope.pem")))
		if !strings.Contains(err.Error(), "invalid TLS settings") || !strings.Contains(err.Error(), "CA file") {
			t.Errorf("error %q does not name the unreadable CA file", err)
		}
	})
}
