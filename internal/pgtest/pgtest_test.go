package pgtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spkgate/spkgate/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestDSNGivesFreshDatabases(t *testing.T) {
	t.Parallel()
	a, b := pgtest.DSN(t), pgtest.DSN(t)
	if a == b {
		t.Fatalf("two calls returned the same DSN")
	}
	ctx := context.Background()
	ca, cb := connect(t, a), connect(t, b)
	if _, err := ca.Exec(ctx, `CREATE TABLE t (x int)`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := cb.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("second database has %d tables, want 0", n)
	}
	if got, want := pgtest.DatabaseName(t, a), ca.Config().Database; got != want {
		t.Errorf("DatabaseName = %q, want %q", got, want)
	}
}

func TestParallelDSNs(t *testing.T) {
	for i := range 8 {
		t.Run("db", func(t *testing.T) {
			t.Parallel()
			conn := connect(t, pgtest.DSN(t))
			var one int
			if err := conn.QueryRow(context.Background(), `SELECT $1::int`, i).Scan(&one); err != nil || one != i {
				t.Errorf("query: %v, %d", err, one)
			}
		})
	}
}

func TestStopStartTerminate(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t)
	dsn := srv.DSN(t)
	conn := connect(t, dsn)
	ctx := context.Background()

	srv.TerminateBackends(t, pgtest.DatabaseName(t, dsn))
	if err := conn.Ping(ctx); err == nil {
		t.Errorf("connection still works after TerminateBackends")
	}

	srv.Stop(t)
	srv.Stop(t) // no-op
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if c, err := pgx.Connect(cctx, dsn); err == nil {
		c.Close(ctx)
		t.Fatalf("connected to a stopped server")
	}
	srv.Start(t)
	c2 := connect(t, dsn)
	if err := c2.Ping(ctx); err != nil {
		t.Fatalf("after Start: %v", err)
	}
	srv.Restart(t)
	c3 := connect(t, dsn)
	var n int
	if err := c3.QueryRow(ctx, `SELECT 1`).Scan(&n); err != nil {
		t.Fatalf("after Restart: %v", err)
	}
}
