package limits

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/sqlitestore"
)

func openStore(t *testing.T) *sqlitestore.Store {
	t.Helper()
	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "spk.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestQuotaSurvivesRestart(t *testing.T) {
	st, ctx := openStore(t), context.Background()
	c := newClock(time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC))
	plans := Plans{"pro": {Quota: &Quota{Requests: 5, Period: Day}}}
	l := New(plans, Options{Now: c.now})
	for range 5 {
		if ok, _ := l.Begin(c.now(), "k", "a", "pro", Rate{}).TakeQuota(); !ok {
			t.Fatal("refused within the quota")
		}
	}
	if err := l.Sync(ctx, st, time.Minute); err != nil {
		t.Fatal(err)
	}
	// A restart: a new limiter on the same store refuses from its first request.
	l2 := New(plans, Options{Now: c.now})
	if err := l2.Preload(ctx, st); err != nil {
		t.Fatal(err)
	}
	if ok, resets := l2.Begin(c.now(), "k2", "a", "pro", Rate{}).TakeQuota(); ok || !resets.Equal(time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("after a restart: ok=%v resets=%v", ok, resets)
	}
	// The next day starts from zero.
	c.set(time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC))
	if ok, _ := l2.Begin(c.now(), "k2", "a", "pro", Rate{}).TakeQuota(); !ok {
		t.Fatal("refused on a new day")
	}
}

func TestQuotaSharedBySync(t *testing.T) {
	st, ctx := openStore(t), context.Background()
	c := newClock(time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC))
	plans := Plans{"pro": {Quota: &Quota{Requests: 10, Period: Month}}}
	a, b := New(plans, Options{Now: c.now}), New(plans, Options{Now: c.now})
	for range 6 {
		a.Begin(c.now(), "k1", "acct", "pro", Rate{}).TakeQuota()
	}
	b.Begin(c.now(), "k2", "acct", "pro", Rate{}).TakeQuota()
	for _, l := range []*Limiter{a, b, a} {
		if err := l.Sync(ctx, st, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for name, l := range map[string]*Limiter{"a": a, "b": b} {
		if _, used, _, _ := l.QuotaUsed("acct"); used != 7 {
			t.Errorf("instance %s sees %d used, want 7", name, used)
		}
	}
	// A store failure keeps the counts for the next sync.
	a.Begin(c.now(), "k1", "acct", "pro", Rate{}).TakeQuota()
	st.Close()
	if err := a.Sync(ctx, st, time.Minute); err == nil {
		t.Fatal("sync on a closed store succeeded")
	}
	if _, used, _, _ := a.QuotaUsed("acct"); used != 8 {
		t.Fatalf("after a failed sync instance a sees %d used, want 8", used)
	}
}

func TestRateSharedBySync(t *testing.T) {
	st, ctx := openStore(t), context.Background()
	c := newClock(time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC))
	plans := Plans{"pro": {Rate: rate(10, time.Second)}}
	a, b := New(plans, Options{Now: c.now}), New(plans, Options{Now: c.now})
	// Both know the account before anything is admitted.
	a.Begin(c.now(), "k1", "acct", "pro", Rate{})
	b.Begin(c.now(), "k2", "acct", "pro", Rate{})
	for _, l := range []*Limiter{a, b} {
		if err := l.Sync(ctx, st, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for range 8 {
		if d, _ := a.Begin(c.now(), "k1", "acct", "pro", Rate{}).TakeRate(); d != NotDenied {
			t.Fatal("refused within the rate")
		}
	}
	for _, l := range []*Limiter{a, b} {
		if err := l.Sync(ctx, st, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	// b learned of a's 8: two left.
	admitted := 0
	for range 5 {
		if d, _ := b.Begin(c.now(), "k2", "acct", "pro", Rate{}).TakeRate(); d == NotDenied {
			admitted++
		}
	}
	if admitted != 2 {
		t.Fatalf("instance b admitted %d after a's 8 of 10, want 2", admitted)
	}
	// A total learned after too long without a sync is a new baseline,
	// not a debt.
	for range 2 {
		b.Begin(c.now(), "k2", "acct", "pro", Rate{})
	}
	c.add(time.Hour)
	for range 10 {
		a.Begin(c.now(), "k1", "acct", "pro", Rate{}).TakeRate()
	}
	if err := a.Sync(ctx, st, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx, st, time.Minute); err != nil {
		t.Fatal(err)
	}
	if d, _ := b.Begin(c.now(), "k2", "acct", "pro", Rate{}).TakeRate(); d != NotDenied {
		t.Fatal("a stale total was taken as a debt")
	}
}

func TestFlushUsage(t *testing.T) {
	st, ctx := openStore(t), context.Background()
	h := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	c := newClock(h.Add(59 * time.Minute))
	l := New(nil, Options{Now: c.now})
	l.Begin(c.now(), "k1", "acct", "pro", Rate{}).Record(Allowed)
	l.Begin(c.now(), "k1", "acct", "pro", Rate{}).Record(Forbidden)
	c.add(time.Minute)
	l.Begin(c.now(), "k1", "acct", "pro", Rate{}).Record(Limited)
	l.Begin(c.now(), "k2", "acct", "pro", Rate{}).Record(Allowed)
	if err := l.Flush(ctx, st, 0); err != nil {
		t.Fatal(err)
	}
	l.Begin(c.now(), "k2", "acct", "pro", Rate{}).Record(Allowed)
	if err := l.Flush(ctx, st, 0); err != nil {
		t.Fatal(err)
	}
	got, err := st.Usage(ctx, keystore.UsageQuery{AccountID: "acct", From: h, To: h.Add(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	want := []keystore.UsageCount{
		{KeyID: "k1", AccountID: "acct", Hour: h, Allowed: 1, Forbidden: 1},
		{KeyID: "k1", AccountID: "acct", Hour: h.Add(time.Hour), Limited: 1},
		{KeyID: "k2", AccountID: "acct", Hour: h.Add(time.Hour), Allowed: 2},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		g := got[i]
		if g.KeyID != want[i].KeyID || !g.Hour.Equal(want[i].Hour) || g.Allowed != want[i].Allowed ||
			g.Forbidden != want[i].Forbidden || g.Limited != want[i].Limited {
			t.Fatalf("row %d: got %+v want %+v", i, g, want[i])
		}
	}
	// Idle state is forgotten once its counts are written.
	c.add(3 * time.Hour)
	if err := l.Flush(ctx, st, time.Hour); err != nil {
		t.Fatal(err)
	}
	if l.keyStateFor("k1") != nil || l.acctState("acct") != nil {
		t.Fatal("idle state kept")
	}
}

// TestConcurrentRequestsAndSync runs requests on several goroutines while
// Sync and Flush run, for the race detector, and checks that no count is
// lost or doubled on the way to the store.
func TestConcurrentRequestsAndSync(t *testing.T) {
	st, ctx := openStore(t), context.Background()
	plans := Plans{"pro": {Rate: rate(1<<30, time.Second), Quota: &Quota{Requests: 1 << 40, Period: Day}}}
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	c := newClock(now)
	l := New(plans, Options{Now: c.now})
	const workers, each = 4, 2000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20 {
			l.Sync(ctx, st, time.Minute)
			l.Flush(ctx, st, 0)
		}
	}()
	finished := make(chan struct{})
	for w := range workers {
		go func() {
			for i := range each {
				r := l.Begin(c.now(), "k"+string(rune('a'+w)), "acct", "pro", Rate{})
				r.TakeRate()
				r.TakeQuota()
				r.Record(Outcome(i % 3))
			}
			finished <- struct{}{}
		}()
	}
	for range workers {
		<-finished
	}
	<-done
	if err := l.Sync(ctx, st, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(ctx, st, 0); err != nil {
		t.Fatal(err)
	}
	got, err := st.QuotaCounts(ctx, "day", now.Truncate(24*time.Hour))
	if err != nil || got["acct"] != workers*each {
		t.Fatalf("quota counter %v (%v), want %d", got, err, workers*each)
	}
	rows, err := st.Usage(ctx, keystore.UsageQuery{AccountID: "acct", From: now.Add(-time.Hour), To: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, r := range rows {
		sum += r.Allowed + r.Forbidden + r.Limited
	}
	if sum != workers*each {
		t.Fatalf("usage rows sum to %d, want %d", sum, workers*each)
	}
}
