package limits

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRequest is the limiter's whole per-request work for a limited
// key nobody exceeds: look up the key and account, take a token from the
// key's and the account's bucket, count the quota and the hour's usage.
// Spread over 1000 accounts of 4 keys each, in parallel; each goroutine
// starts at its own place in the key list, as concurrent requests of
// different clients would, rather than all walking the same keys in
// lockstep. With two goroutines the counters' cache lines still move
// between the cores (see docs/performance.md).
func BenchmarkRequest(b *testing.B) {
	huge := &Rate{Requests: 1 << 40, Window: time.Hour}
	l := New(Plans{"pro": {Rate: huge, Quota: &Quota{Requests: 1 << 60, Period: Month}}}, Options{})
	const n = 4000
	ids := make([]string, n)
	accts := make([]string, n)
	for i := range ids {
		ids[i] = "key_" + strconv.Itoa(i)
		accts[i] = "acct_" + strconv.Itoa(i/4)
		l.Begin(time.Now(), ids[i], accts[i], "pro", *huge)
	}
	now := time.Now()
	var start atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(start.Add(n/16)) % n
		for pb.Next() {
			r := l.Begin(now, ids[i], accts[i], "pro", *huge)
			if d, _ := r.TakeRate(); d != NotDenied {
				b.Fatal("limited")
			}
			if ok, _ := r.TakeQuota(); !ok {
				b.Fatal("quota")
			}
			r.Record(Allowed)
			i = (i + 7) % n
		}
	})
}

// BenchmarkRequestOneAccount is BenchmarkRequest with every request on
// one key of one account: the contended case.
func BenchmarkRequestOneAccount(b *testing.B) {
	huge := &Rate{Requests: 1 << 40, Window: time.Hour}
	l := New(Plans{"pro": {Rate: huge, Quota: &Quota{Requests: 1 << 60, Period: Month}}}, Options{})
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := l.Begin(now, "key_1", "acct_1", "pro", Rate{})
			r.TakeRate()
			r.TakeQuota()
			r.Record(Allowed)
		}
	})
}
