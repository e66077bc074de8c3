package pgtest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/spkgate/spkgate/internal/pgtest"
)

// TestBouncerPoolModes: through a session pool a client keeps its backend;
// through a transaction pool the backend it used is handed to the next
// client's transaction.
func TestBouncerPoolModes(t *testing.T) {
	t.Parallel()
	srv := pgtest.Shared(t)
	dsn := srv.DSN(t) + "&default_query_exec_mode=simple_protocol"
	for _, tc := range []struct {
		mode   pgtest.PoolMode
		shared bool
	}{
		{pgtest.SessionPooling, false},
		{pgtest.TransactionPooling, true},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			b := pgtest.NewBouncer(t, srv, tc.mode)
			if b.Mode() != tc.mode {
				t.Errorf("Mode = %q", b.Mode())
			}
			ctx := context.Background()
			pid := func(q interface {
				QueryRow(context.Context, string, ...any) pgx.Row
			}) int32 {
				var p int32
				if err := q.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&p); err != nil {
					t.Fatal(err)
				}
				return p
			}
			a := connect(t, b.DSN(t, dsn))
			first := pid(a)
			tx, err := connect(t, b.DSN(t, dsn)).Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if got := pid(tx) == first; got != tc.shared {
				t.Errorf("second client got the first one's backend: %v, want %v", got, tc.shared)
			}
		})
	}
}
