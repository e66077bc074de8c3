package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spkgate/spkgate/internal/pgtest"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/storetest"
)

// withPassword returns dsn with a password, so that the test can check
// that error messages never contain it. The throwaway cluster trusts every
// local connection, so any password works.
func withPassword(t *testing.T, dsn, pw string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		t.Skip("needs a postgres:// URL")
	}
	u.User = url.UserPassword(u.User.Username(), pw)
	return u.String()
}

// TestServerStopped: with the server down, LookupKey fails fast with an
// error matching keystore.ErrUnavailable that does not leak the password;
// once the server is back the same store works again.
func TestServerStopped(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t)
	const pw = "s3cret-Pa55word"
	dsn := withPassword(t, srv.DSN(t), pw)
	s := open(t, dsn)
	ctx := context.Background()
	nk := storetest.CreateKeyParams("acct")
	if _, err := s.CreateKey(ctx, nk); err != nil {
		t.Fatal(err)
	}

	srv.Stop(t)
	for _, call := range []struct {
		name string
		fn   func() error
	}{
		{"LookupKey", func() error { _, err := s.LookupKey(ctx, nk.Hash); return err }},
		{"CreateKey", func() error { _, err := s.CreateKey(ctx, storetest.CreateKeyParams("acct")); return err }},
		{"RevokeKey", func() error { _, _, err := s.RevokeKey(ctx, "acct", nk.ID); return err }},
		{"Changes", func() error { _, err := s.Changes(ctx, 0, 10); return err }},
		{"Ping", func() error { return s.Ping(ctx) }},
	} {
		start := time.Now()
		err := call.fn()
		if !errors.Is(err, keystore.ErrUnavailable) {
			t.Errorf("%s with the server stopped: err = %v, want ErrUnavailable", call.name, err)
			continue
		}
		if errors.Is(err, keystore.ErrNotFound) {
			t.Errorf("%s: an outage looks like an unknown key: %v", call.name, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v to fail, want a fast answer", call.name, d)
		}
		msg := err.Error()
		for _, secret := range []string{pw, dsn, fmt.Sprintf("%x", nk.Hash[:])} {
			if strings.Contains(msg, secret) {
				t.Errorf("%s error %q leaks a secret", call.name, msg)
			}
		}
		t.Logf("%s: %v", call.name, err)
	}

	srv.Start(t)
	deadline := time.Now().Add(15 * time.Second)
	for {
		cred, err := s.LookupKey(ctx, nk.Hash)
		if err == nil {
			if cred.Key.ID != nk.ID {
				t.Errorf("after restart: got key %q", cred.Key.ID)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store did not recover after the server came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The revocation that failed during the outage did not happen.
	cred, err := s.LookupKey(ctx, nk.Hash)
	if err != nil || cred.Key.RevokedAt != nil {
		t.Errorf("after the outage: %v, revoked %v", err, cred.Key.RevokedAt)
	}
}

// TestBackendsTerminated: connections killed under the pool (a failover,
// an operator's pg_terminate_backend) cost at most one failed call.
func TestBackendsTerminated(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t)
	dsn := srv.DSN(t)
	s := open(t, dsn)
	ctx := context.Background()
	nk := storetest.CreateKeyParams("acct")
	if _, err := s.CreateKey(ctx, nk); err != nil {
		t.Fatal(err)
	}
	srv.TerminateBackends(t, pgtest.DatabaseName(t, dsn))
	ok := 0
	for range 5 {
		_, err := s.LookupKey(ctx, nk.Hash)
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, keystore.ErrUnavailable):
			t.Errorf("after terminated backends: %v, want ErrUnavailable or success", err)
		}
	}
	if ok < 4 {
		t.Errorf("%d of 5 lookups succeeded after backends were terminated", ok)
	}
}
