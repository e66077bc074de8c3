package sqlitestore_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/sqlitestore"
)

// BenchmarkAddUsage is one usage flush of 10,000 keys that were all used
// this hour (the spread scenario's flush, every row an update), in the
// limiter's batches: the cost per row is the figure.
func BenchmarkAddUsage(b *testing.B) {
	ctx := context.Background()
	s, err := sqlitestore.Open(ctx, filepath.Join(b.TempDir(), "spk.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const keys = 10_000
	hour := time.Now().UTC().Truncate(time.Hour)
	rows := make([]keystore.UsageCount, keys)
	for i := range rows {
		rows[i] = keystore.UsageCount{KeyID: "key_" + strconv.Itoa(i), AccountID: "acct_" + strconv.Itoa(i/100), Hour: hour, Allowed: 3, Forbidden: 1}
	}
	flush := func() {
		for i := 0; i < keys; i += keystore.MaxUsageBatch {
			if err := s.AddUsage(ctx, rows[i:min(i+keystore.MaxUsageBatch, keys)]); err != nil {
				b.Fatal(err)
			}
		}
	}
	flush() // the rows exist: what follows updates them
	b.ResetTimer()
	for range b.N {
		flush()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*keys), "ns/row")
}
