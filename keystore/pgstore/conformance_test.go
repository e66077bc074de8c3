package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/spkgate/spkgate/internal/pgtest"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/pgstore"
	"github.com/spkgate/spkgate/keystore/storetest"
)

func open(tb testing.TB, dsn string) *pgstore.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := pgstore.Open(ctx, dsn)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) keystore.Store {
		return open(t, pgtest.DSN(t))
	})
}

// BenchmarkLookupKey measures the store's cold path (no cache in front):
// one LookupKey by hash in a database of 10,000 keys, over TCP to a local
// server. For a bigger table run, e.g.:
//
//	SPK_BENCH_KEYS=1000000 go test -run '^$' -bench LookupKey ./keystore/pgstore
//
// (set SPK_TEST_DATABASE_URL to measure against another server).
func BenchmarkLookupKey(b *testing.B) {
	s := open(b, pgtest.DSN(b))
	storetest.BenchmarkLookupKey(b, s)
}

// BenchmarkTouchKeys measures one flush of last-used times (1,000 keys).
func BenchmarkTouchKeys(b *testing.B) {
	s := open(b, pgtest.DSN(b))
	storetest.BenchmarkTouchKeys(b, s)
}
