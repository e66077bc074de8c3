package storetest

import (
	"context"
	"errors"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// BenchKeysEnv names the environment variable that sets how many keys
// BenchmarkLookupKey and BenchmarkTouchKeys store before they measure
// (default 10,000).
const BenchKeysEnv = "SPK_BENCH_KEYS"

// Seed stores n keys spread over n/10 accounts, with a plan for each
// account, and returns their hashes.
func Seed(tb testing.TB, s keystore.Store, n int) []keystore.Hash {
	tb.Helper()
	ctx := context.Background()
	hashes := make([]keystore.Hash, n)
	var (
		next   atomic.Int64
		wg     sync.WaitGroup
		failed atomic.Pointer[error]
	)
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || failed.Load() != nil {
					return
				}
				acct := "acct_" + strconv.Itoa(i/10)
				nk := CreateKeyParams(acct, "monitors:read")
				if _, err := s.CreateKey(ctx, nk); err != nil {
					failed.Store(&err)
					return
				}
				if i%10 == 0 {
					if _, err := s.SetPlan(ctx, acct, "pro"); err != nil {
						failed.Store(&err)
						return
					}
				}
				hashes[i] = nk.Hash
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		tb.Fatalf("seeding %d keys: %v", n, *err)
	}
	return hashes
}

// BenchmarkLookupKey measures s.LookupKey, the gateway's cold path (a key
// that is not cached), after storing SPK_BENCH_KEYS keys (default 10,000),
// from one goroutine ("serial") and from GOMAXPROCS goroutines
// ("parallel").
func BenchmarkLookupKey(b *testing.B, s keystore.Store) {
	hashes := Seed(b, s, benchKeys())
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := s.LookupKey(ctx, hashes[i%len(hashes)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("unknown", func(b *testing.B) {
		// A well-formed key the store does not hold: one probe of the
		// index that finds nothing, and no row to read.
		i := 0
		for b.Loop() {
			h := hashes[i%len(hashes)]
			h[0] ^= 0xff
			if _, err := s.LookupKey(ctx, h); !errors.Is(err, keystore.ErrNotFound) {
				b.Fatalf("unknown key: %v", err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var ctr atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(ctr.Add(7919))
			for pb.Next() {
				if _, err := s.LookupKey(ctx, hashes[i%len(hashes)]); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}

// BenchmarkTouchKeys measures s.TouchKeys as the cache calls it: one flush
// of 1,000 keys first used since the last one, all with the same time. It
// reports the cost per key ("ns/key"); a key is written at most once per
// keycache.TouchPrecision, so per request it costs ns/key divided by the
// key's uses in that time.
func BenchmarkTouchKeys(b *testing.B, s keystore.Store) {
	hashes := Seed(b, s, benchKeys())
	ctx := context.Background()
	found, err := lookupAll(ctx, s, hashes)
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, 0, len(found))
	for _, c := range found {
		ids = append(ids, c.Key.ID)
	}
	// Map order: keys first used together are spread over the table, as
	// a gateway's are, not neighbours on a few pages.
	const batch = 1000
	at := time.Now()
	i := 0
	for b.Loop() {
		used := make(map[string]time.Time, batch)
		for range batch {
			used[ids[i%len(ids)]] = at
			i++
		}
		at = at.Add(time.Second)
		if err := s.TouchKeys(ctx, used); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/key")
}

// benchKeys is the number of keys a store benchmark stores: SPK_BENCH_KEYS,
// or 10,000.
func benchKeys() int {
	if v, err := strconv.Atoi(os.Getenv(BenchKeysEnv)); err == nil && v > 0 {
		return v
	}
	return 10_000
}

// lookupAll looks hashes up in batches of keystore.MaxLookupBatch.
func lookupAll(ctx context.Context, s keystore.Store, hashes []keystore.Hash) (map[keystore.Hash]keystore.Credential, error) {
	all := make(map[keystore.Hash]keystore.Credential, len(hashes))
	for chunk := range slices.Chunk(hashes, keystore.MaxLookupBatch) {
		found, err := s.LookupKeys(ctx, chunk)
		if err != nil {
			return nil, err
		}
		maps.Copy(all, found)
	}
	return all, nil
}
