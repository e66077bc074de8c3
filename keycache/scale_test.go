package keycache

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/keystore"
)

// filledCache returns a cache holding n valid keys (ten per account, ids
// and account ids as long as real ones) with no store behind it, and
// their secrets. The entries are installed as a lookup would install
// them.
func filledCache(tb testing.TB, n int) (*Cache, []string) {
	tb.Helper()
	c, err := New(nil, Config{MaxEntries: int64(max(n+n/10, 1000))})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	secrets := make([]string, n)
	now := c.now().UnixNano()
	for i := range n {
		g, err := apikey.Generate()
		if err != nil {
			tb.Fatal(err)
		}
		secrets[i] = g.Secret
		cred := keystore.Credential{
			Key:  keystore.Key{ID: g.ID, AccountID: fmt.Sprintf("acct_%020d", i/10), Scopes: []string{"monitors:read", "incidents:write"}},
			Plan: "pro",
		}
		if _, err := c.install(g.Hash, c.epoch.Load(), now, cred, nil); err != nil {
			tb.Fatal(err)
		}
		if i%10_000 == 9_999 {
			c.Wait() // ristretto drops sets its buffers cannot take
		}
	}
	c.Wait()
	// Sets that ristretto dropped anyway are made again.
	for i, s := range secrets {
		if _, st := c.Cached(s); st != Valid {
			h := apikey.Hash(s)
			cred := keystore.Credential{Key: keystore.Key{ID: fmt.Sprintf("k%d", i), AccountID: "a"}, Plan: "pro"}
			c.install(h, c.epoch.Load(), now, cred, nil)
		}
	}
	c.Wait()
	return c, secrets
}

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// gcTime is the mean duration of a forced full collection: with little
// else on the heap, what the cache adds to every cycle's marking.
func gcTime() time.Duration {
	const n = 5
	start := time.Now()
	for range n {
		runtime.GC()
	}
	return time.Since(start) / n
}

// BenchmarkVerifyCachedAt is the cached check with 1, 10,000 and 1,000,000
// keys cached, used round robin, and reports what the cache costs in heap
// per key (B/key) and in time of a full collection (gc-ms).
func BenchmarkVerifyCachedAt(b *testing.B) {
	for _, n := range []int{1, 10_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			before := heapInUse()
			c, secrets := filledCache(b, n)
			after := heapInUse()
			gc := gcTime()
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				if _, st := c.Verify(ctx, secrets[i]); st != Valid {
					b.Fatal("refused")
				}
				if i++; i == len(secrets) {
					i = 0
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(after-before)/float64(n), "B/key")
			b.ReportMetric(float64(gc)/1e6, "gc-ms")
			runtime.KeepAlive(c)
		})
	}
}
