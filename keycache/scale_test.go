package keycache

import (
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"testing"

	"github.com/spkgate/spkgate/apikey"
	"github.com/spkgate/spkgate/keystore"
)

// testKeys returns n well-formed secrets and their hashes.
func testKeys(tb testing.TB, n int) ([]string, []keystore.Hash, []string) {
	tb.Helper()
	secrets, hashes, ids := make([]string, n), make([]keystore.Hash, n), make([]string, n)
	for i := range n {
		g, err := apikey.Generate()
		if err != nil {
			tb.Fatal(err)
		}
		secrets[i], hashes[i], ids[i] = g.Secret, g.Hash, g.ID
	}
	return secrets, hashes, ids
}

// fill installs one valid key per hash (ten per account, ids and account
// ids as long as real ones) as a lookup would, into a cache with no store
// behind it.
func fill(tb testing.TB, hashes []keystore.Hash, ids []string) *Cache {
	tb.Helper()
	n := len(hashes)
	c, err := New(nil, Config{MaxEntries: int64(max(n+n/10, 1000))})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	now := c.now().UnixNano()
	for round := 0; round < 3; round++ {
		for i := range hashes {
			if round > 0 {
				// Sets that ristretto dropped (its buffers were full)
				// are made again.
				if e, ok := c.entries.Get(slot(&hashes[i])); ok && e.hash == hashes[i] {
					continue
				}
			}
			cred := keystore.Credential{
				Key:  keystore.Key{ID: ids[i], AccountID: fmt.Sprintf("acct_%020d", i/10), Scopes: []string{"monitors:read", "incidents:write"}},
				Plan: "pro",
			}
			if _, err := c.install(hashes[i], c.epoch.Load(), now, cred, nil); err != nil {
				tb.Fatal(err)
			}
			if i%10_000 == 9_999 {
				c.Wait()
			}
		}
		c.Wait()
	}
	return c
}

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// scannable is how many bytes of heap a collection has to scan (read for
// pointers), after a full collection: the marking work of every cycle,
// measured exactly rather than timed on a shared machine.
func scannable() uint64 {
	runtime.GC()
	m := []metrics.Sample{{Name: "/gc/scan/heap:bytes"}}
	metrics.Read(m)
	return m[0].Value.Uint64()
}

// BenchmarkVerifyCachedAt is the cached check with 1, 10,000 and 1,000,000
// keys cached, used round robin, and reports what the cache costs in heap
// per key (B/key) and in heap the collector scans every cycle per key
// (scan-B/key).
func BenchmarkVerifyCachedAt(b *testing.B) {
	for _, n := range []int{1, 10_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			secrets, hashes, ids := testKeys(b, n)
			before, scanBefore := heapInUse(), scannable()
			c := fill(b, hashes, ids)
			after, scanAfter := heapInUse(), scannable()
			hashes, ids = nil, nil
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
			b.ReportMetric((float64(scanAfter)-float64(scanBefore))/float64(n), "scan-B/key")
			runtime.KeepAlive(c)
		})
	}
}
