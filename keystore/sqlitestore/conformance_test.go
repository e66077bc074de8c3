package sqlitestore_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/sqlitestore"
	"github.com/spkgate/spkgate/keystore/storetest"
)

func openAt(tb testing.TB, path string) *sqlitestore.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := sqlitestore.Open(ctx, path)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) keystore.Store {
		return openAt(t, filepath.Join(t.TempDir(), "spk.db"))
	})
}

// BenchmarkLookupKey measures the store's cold path (no cache in front):
// one LookupKey by hash in a database of 10,000 keys. For a bigger table
// run, e.g.:
//
//	SPK_BENCH_KEYS=1000000 go test -run '^$' -bench LookupKey ./keystore/sqlitestore
func BenchmarkLookupKey(b *testing.B) {
	s := openAt(b, filepath.Join(b.TempDir(), "spk.db"))
	storetest.BenchmarkLookupKey(b, s)
}

// BenchmarkTouchKeys measures one flush of last-used times (1,000 keys).
func BenchmarkTouchKeys(b *testing.B) {
	s := openAt(b, filepath.Join(b.TempDir(), "spk.db"))
	storetest.BenchmarkTouchKeys(b, s)
}
