package pgstore_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spkgate/spkgate/internal/pgtest"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/pgstore"
	"github.com/spkgate/spkgate/keystore/storetest"
)

// openWith is OpenWith, failing the test on error.
func openWith(tb testing.TB, dsn string, opts pgstore.Options) *pgstore.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := pgstore.OpenWith(ctx, dsn, opts)
	if err != nil {
		tb.Fatalf("OpenWith: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// TestConformanceThroughPgBouncer runs the conformance suite through a real
// PgBouncer with pool_mode=transaction, every test on a database of its
// own: there consecutive statements of one client run on different server
// connections, so anything that needs a named prepared statement or a
// session lock fails. (A session pool behaves as a direct connection does
// for everything but LISTEN, which TestListenThroughPgBouncer covers.)
func TestConformanceThroughPgBouncer(t *testing.T) {
	srv := pgtest.Shared(t)
	b := pgtest.NewBouncer(t, srv, pgtest.TransactionPooling)
	storetest.Run(t, func(t *testing.T) keystore.Store {
		return openWith(t, b.DSN(t, srv.DSN(t)), pgstore.Options{})
	})
}

// TestOpenDetectsTransactionPooling: Open tells a transaction-pooling proxy
// from a direct connection and a session pool. Through the former it does
// not listen unless given a listen connection string.
func TestOpenDetectsTransactionPooling(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.DSN(t)
	session := pgtest.NewBouncer(t, srv, pgtest.SessionPooling)
	transaction := pgtest.NewBouncer(t, srv, pgtest.TransactionPooling)
	for _, tc := range []struct {
		name            string
		dsn             string
		pooled, listens bool
	}{
		{"direct", dsn, false, true},
		{"session", session.DSN(t, dsn), false, true},
		{"transaction", transaction.DSN(t, dsn), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openWith(t, tc.dsn, pgstore.Options{})
			if s.TransactionPooled() != tc.pooled || s.Listens() != tc.listens {
				t.Errorf("TransactionPooled %v Listens %v, want %v %v", s.TransactionPooled(), s.Listens(), tc.pooled, tc.listens)
			}
		})
	}
}

// TestListenThroughPgBouncer: through a session pool the store listens as it
// does directly; with a listen connection string to the server or to a
// session pool, a store whose queries go through a transaction pool hears
// every change as it commits; through a transaction pool alone Listen says
// once, at warn level, why and what to add, and polls the change log
// instead: changes still arrive, and heartbeats (one per read) still vouch.
func TestListenThroughPgBouncer(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.DSN(t)
	session := pgtest.NewBouncer(t, srv, pgtest.SessionPooling)
	transaction := pgtest.NewBouncer(t, srv, pgtest.TransactionPooling)
	writer := open(t, dsn)

	hears := func(t *testing.T, s *pgstore.Store) {
		t.Helper()
		rec, _ := listen(t, s)
		nk := storetest.CreateKeyParams("acct_l")
		if _, err := writer.CreateKey(context.Background(), nk); err != nil {
			t.Fatal(err)
		}
		if ch := next(t, rec, 5*time.Second); ch.Kind != keystore.ChangeCreated || ch.AccountID != "acct_l" {
			t.Errorf("notified %+v, want the creation", ch)
		}
		select {
		case <-rec.alive:
		case <-time.After(5 * time.Second):
			t.Error("no heartbeat answered")
		}
	}
	t.Run("session", func(t *testing.T) {
		hears(t, openWith(t, session.DSN(t, dsn), pgstore.Options{}))
	})
	t.Run("transaction+listen", func(t *testing.T) {
		hears(t, openWith(t, transaction.DSN(t, dsn), pgstore.Options{ListenDSN: dsn}))
	})
	t.Run("transaction+session-listen", func(t *testing.T) {
		hears(t, openWith(t, transaction.DSN(t, dsn), pgstore.Options{ListenDSN: session.DSN(t, dsn)}))
	})
	t.Run("transaction", func(t *testing.T) {
		core, logs := observer.New(zap.WarnLevel)
		s := openWith(t, transaction.DSN(t, dsn), pgstore.Options{Logger: zap.New(core)})
		hears(t, s)
		if logs.Len() != 1 || !strings.Contains(logs.All()[0].Message, "transaction-pooling proxy") ||
			!strings.Contains(logs.All()[0].Message, "listen connection string") {
			t.Errorf("logged %v, want one warning that names the proxy and the fix", logs.All())
		}
		// A second session does not say it again.
		hears(t, s)
		if logs.Len() != 1 {
			t.Errorf("logged %v, want the warning once", logs.All())
		}
	})
}

// TestOpenRefusesWhatCannotWork: through a transaction pool, a connection
// string that asks for named prepared statements, and a listen connection
// string that is itself transaction-pooled, are refused at Open with the
// fix named.
func TestOpenRefusesWhatCannotWork(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.DSN(t)
	transaction := pgtest.NewBouncer(t, srv, pgtest.TransactionPooling)
	pooled := transaction.DSN(t, dsn)
	for _, tc := range []struct {
		name, dsn string
		opts      pgstore.Options
		want      string
	}{
		{"cache_statement", withParams(t, pooled, "default_query_exec_mode", "cache_statement"), pgstore.Options{},
			"remove it"},
		{"listen", pooled, pgstore.Options{ListenDSN: pooled},
			"point it at PostgreSQL itself or at a session-pooling proxy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := pgstore.OpenWith(ctx, tc.dsn, tc.opts)
			if err == nil {
				s.Close()
				t.Fatal("OpenWith succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "127.0.0.1") {
				t.Errorf("error %q: want the fix %q and no server address", err, tc.want)
			}
		})
	}
	// Another mode chosen explicitly is kept.
	s := openWith(t, withParams(t, pooled, "default_query_exec_mode", "exec"), pgstore.Options{})
	if err := s.Ping(context.Background()); err != nil {
		t.Error(err)
	}
}

// TestConcurrentOpenThroughPgBouncer: instances starting at once through a
// transaction pool on an empty database all come up (the migrations' lock
// is scoped to a transaction, so it holds through the pool and is never
// left behind on a server connection).
func TestConcurrentOpenThroughPgBouncer(t *testing.T) {
	srv := pgtest.Shared(t)
	b := pgtest.NewBouncer(t, srv, pgtest.TransactionPooling)
	dsn := b.DSN(t, srv.DSN(t))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, err := pgstore.Open(ctx, dsn)
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			if _, err := s.CreateKey(ctx, storetest.CreateKeyParams("acct")); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
