package limits

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable clock.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.ns.Store(t.UnixNano())
	return c
}
func (c *clock) now() time.Time           { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) add(d time.Duration)      { c.ns.Add(int64(d)) }
func (c *clock) set(t time.Time)          { c.ns.Store(t.UnixNano()) }
func rate(n int64, w time.Duration) *Rate { return &Rate{Requests: n, Window: w} }

var t0 = time.Date(2026, 3, 31, 23, 59, 0, 0, time.UTC)

func TestAccountRateSharedByKeys(t *testing.T) {
	c := newClock(t0)
	l := New(Plans{"pro": {Rate: rate(10, time.Second)}}, Options{Now: c.now})
	admitted := 0
	for i := range 30 {
		r := l.Begin(c.now(), fmt.Sprintf("key_%d", i%3), "acct", "pro", Rate{})
		if d, _ := r.TakeRate(); d == NotDenied {
			admitted++
		} else if d != AccountRate {
			t.Fatalf("denied by %v, want AccountRate", d)
		}
	}
	if admitted != 10 {
		t.Fatalf("three keys of one account admitted %d, want 10 (the account's bucket)", admitted)
	}
	// Another account has its own bucket.
	r := l.Begin(c.now(), "key_other", "acct2", "pro", Rate{})
	if d, _ := r.TakeRate(); d != NotDenied {
		t.Fatal("another account was limited")
	}
	// One token comes back every 100ms.
	r = l.Begin(c.now(), "key_0", "acct", "pro", Rate{})
	d, wait := r.TakeRate()
	if d != AccountRate || wait != 100*time.Millisecond {
		t.Fatalf("got %v wait %v, want AccountRate after 100ms", d, wait)
	}
	c.add(100 * time.Millisecond)
	if d, _ := l.Begin(c.now(), "key_1", "acct", "pro", Rate{}).TakeRate(); d != NotDenied {
		t.Fatal("a token did not come back after its interval")
	}
}

func TestKeyRateBelowAccount(t *testing.T) {
	c := newClock(t0)
	l := New(Plans{"pro": {Rate: rate(10, time.Second)}}, Options{Now: c.now})
	slow := rate(2, time.Second)
	var denials [3]int
	for range 5 {
		r := l.Begin(c.now(), "key_slow", "acct", "pro", *slow)
		d, _ := r.TakeRate()
		denials[d]++
	}
	if denials[NotDenied] != 2 || denials[KeyRate] != 3 {
		t.Fatalf("key at 2/1s: %v", denials)
	}
	// The key's refusals took nothing from the account: 8 left for the others.
	admitted := 0
	for range 10 {
		if d, _ := l.Begin(c.now(), "key_fast", "acct", "pro", Rate{}).TakeRate(); d == NotDenied {
			admitted++
		}
	}
	if admitted != 8 {
		t.Fatalf("other key admitted %d, want 8", admitted)
	}
	// When the account refuses, the key's token is given back.
	c.add(time.Second / 2) // key: +1 token (2 total... capped), account: +5
	for range 5 {
		l.Begin(c.now(), "key_fast", "acct", "pro", Rate{}).TakeRate()
	}
	r := l.Begin(c.now(), "key_slow", "acct", "pro", *slow)
	if d, _ := r.TakeRate(); d != AccountRate {
		t.Fatalf("got %v, want AccountRate", d)
	}
	if rem, _ := r.k.rate.state(slow, r.now); rem != 1 {
		t.Fatalf("key has %d tokens after an account refusal, want its 1 back", rem)
	}
	// A key without a plan limit, but with its own rate, is limited by it alone.
	for i := range 3 {
		d, _ := l.Begin(c.now(), "key_free", "acct_free", "free", *slow).TakeRate()
		if (i < 2) != (d == NotDenied) {
			t.Fatalf("request %d on an unlimited plan with a key rate: %v", i, d)
		}
	}
}

func TestReconfigure(t *testing.T) {
	c := newClock(t0)
	l := New(Plans{"pro": {Rate: rate(2, time.Second)}}, Options{Now: c.now})
	r := l.Begin(c.now(), "k", "a", "pro", Rate{})
	if r.Policy() != `"account";q=2;w=1` {
		t.Fatalf("policy %q", r.Policy())
	}
	l.Begin(c.now(), "k", "a", "pro", Rate{}).TakeRate()
	l.Begin(c.now(), "k", "a", "pro", Rate{}).TakeRate()
	if d, _ := l.Begin(c.now(), "k", "a", "pro", Rate{}).TakeRate(); d == NotDenied {
		t.Fatal("third request admitted at 2/1s")
	}
	// A reload raises the limit: the bucket keeps its level, the new rate applies.
	l.SetPlans(Plans{"pro": {Rate: rate(4, time.Second)}, "business": {}})
	r = l.Begin(c.now(), "k", "a", "pro", Rate{})
	if d, _ := r.TakeRate(); d != NotDenied {
		t.Fatal("raised limit not applied")
	}
	if r.Policy() != `"account";q=4;w=1` {
		t.Fatalf("policy after reload %q", r.Policy())
	}
	// A plan change removes the limit.
	r = l.Begin(c.now(), "k", "a", "business", Rate{})
	if r.Limited() {
		t.Fatal("business plan without limits still limited")
	}
	// A key rate set later applies, and shows in the policy.
	r = l.Begin(c.now(), "k", "a", "pro", *rate(1, time.Minute))
	if want := `"key";q=1;w=60, "account";q=4;w=1`; r.Policy() != want {
		t.Fatalf("policy %q, want %q", r.Policy(), want)
	}
}

func TestQuotaCalendarPeriods(t *testing.T) {
	c := newClock(t0) // 2026-03-31 23:59 UTC
	l := New(Plans{"pro": {Quota: &Quota{Requests: 3, Period: Month}}, "day": {Quota: &Quota{Requests: 1, Period: Day}}}, Options{Now: c.now})
	for i := range 4 {
		r := l.Begin(c.now(), "k", "a", "pro", Rate{})
		ok, resets := r.TakeQuota()
		if ok != (i < 3) {
			t.Fatalf("request %d: ok=%v", i, ok)
		}
		if !ok && !resets.Equal(time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)) {
			t.Fatalf("resets at %v, want April 1st", resets)
		}
	}
	r := l.Begin(c.now(), "k", "a", "pro", Rate{})
	if got := string(r.AppendRateLimit(nil)); got != `"quota";r=0;t=60` {
		t.Fatalf("RateLimit %q", got)
	}
	c.set(time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC))
	if ok, _ := l.Begin(c.now(), "k", "a", "pro", Rate{}).TakeQuota(); !ok {
		t.Fatal("quota did not reset with the month")
	}
	q, used, resets, ok := l.QuotaUsed("a")
	if !ok || q.Requests != 3 || used != 1 || !resets.Equal(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("QuotaUsed = %v %d %v %v", q, used, resets, ok)
	}
	// The ended period's count waits for the store.
	if got := l.acctState("a").quota.rolled; len(got) != 1 || got[0].n != 3 || got[0].start.Month() != time.March {
		t.Fatalf("rolled %+v", got)
	}
	// Daily quota.
	ok1, _ := l.Begin(c.now(), "k2", "b", "day", Rate{}).TakeQuota()
	ok2, resets2 := l.Begin(c.now(), "k2", "b", "day", Rate{}).TakeQuota()
	if !ok1 || ok2 || !resets2.Equal(time.Date(2026, 4, 2, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("daily quota: %v %v %v", ok1, ok2, resets2)
	}
}

func TestRateLimitHeader(t *testing.T) {
	c := newClock(t0)
	l := New(Plans{"pro": {Rate: rate(10, time.Second), Quota: &Quota{Requests: 100, Period: Day}}}, Options{Now: c.now})
	r := l.Begin(c.now(), "k", "a", "pro", *rate(5, 10*time.Second))
	if want := `"key";q=5;w=10, "account";q=10;w=1, "quota";q=100;w=86400`; r.Policy() != want {
		t.Fatalf("policy %q\nwant   %q", r.Policy(), want)
	}
	r.TakeRate()
	r.TakeQuota()
	if got, want := string(r.AppendRateLimit(nil)), `"key";r=4;t=2, "account";r=9;t=1, "quota";r=99;t=60`; got != want {
		t.Fatalf("RateLimit %q\nwant      %q", got, want)
	}
	// A window under a second is shown per second.
	r = l.Begin(c.now(), "k2", "a", "pro", *rate(3, 100*time.Millisecond))
	if want := `"key";q=30;w=1`; r.Policy()[:len(want)] != want {
		t.Fatalf("policy %q", r.Policy())
	}
}

func TestUsageHours(t *testing.T) {
	c := newClock(time.Date(2026, 1, 1, 10, 59, 59, 0, time.UTC))
	l := New(nil, Options{Now: c.now})
	l.Begin(c.now(), "k", "a", "free", Rate{}).Record(Allowed)
	l.Begin(c.now(), "k", "a", "free", Rate{}).Record(Forbidden)
	c.add(time.Second)
	l.Begin(c.now(), "k", "a", "free", Rate{}).Record(Limited)
	k := l.keyStateFor("k")
	h10 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC).Unix()
	for i := range k.usage {
		s := &k.usage[i]
		switch s.hour.Load() {
		case h10:
			if s.n[Allowed].Load() != 1 || s.n[Forbidden].Load() != 1 || s.n[Limited].Load() != 0 {
				t.Fatal("10:00 counts wrong")
			}
		case h10 + 3600:
			if s.n[Limited].Load() != 1 || s.n[Allowed].Load() != 0 {
				t.Fatal("11:00 counts wrong")
			}
		default:
			t.Fatalf("slot for hour %d", s.hour.Load())
		}
	}
}

func (l *Limiter) keyStateFor(id string) *keyState {
	sh := &l.keyShards[hashString(l, id)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.m[id]
}

func (l *Limiter) acctState(id string) *account {
	sh := &l.acctShards[hashString(l, id)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.m[id]
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]Rate{
		"10/1s": {10, time.Second}, "100/m": {100, time.Minute}, "5/250ms": {5, 250 * time.Millisecond},
	} {
		got, err := ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v", in, got, err)
		}
		if back, err := ParseRate(got.String()); err != nil || back != got {
			t.Errorf("round trip of %q: %q", in, got.String())
		}
	}
	for _, bad := range []string{"", "10", "0/1s", "-1/1s", "10/0s", "10/-1s", "x/1s", "10/fortnight", "10/48h", "2000000/1ms"} {
		if _, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) accepted", bad)
		}
	}
	if err := (Quota{Requests: 1, Period: "week"}).Validate(); err == nil {
		t.Error("week accepted as a period")
	}
	if err := (Quota{Requests: 0, Period: Day}).Validate(); err == nil {
		t.Error("zero quota accepted")
	}
	if !rate(10, time.Second).Exceeds(*rate(100, time.Minute)) || rate(1, time.Second).Exceeds(*rate(60, time.Minute)) {
		t.Error("Exceeds")
	}
}
