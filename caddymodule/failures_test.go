package caddymodule

import (
	"net/http/httptest"
	"testing"
	"time"
)

func TestFailureLimiter(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newFailureLimiter(3, 30*time.Second) // one try back every 10s
	l.now = func() time.Time { return now }
	req := func(addr string) (time.Duration, bool) {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = addr + ":1234"
		return l.retryAfter(r)
	}
	for i := range 2 {
		l.fail("10.0.0.1")
		if _, blocked := req("10.0.0.1"); blocked {
			t.Fatalf("blocked after %d failures", i+1)
		}
	}
	l.fail("10.0.0.1")
	wait, blocked := req("10.0.0.1")
	if !blocked || wait != 10*time.Second {
		t.Fatalf("after 3 failures: blocked=%v wait=%s", blocked, wait)
	}
	if _, blocked := req("10.0.0.2"); blocked {
		t.Fatal("another address is blocked")
	}
	now = now.Add(4 * time.Second)
	if wait, _ := req("10.0.0.1"); wait != 6*time.Second {
		t.Fatalf("wait %s after 4s", wait)
	}
	now = now.Add(6 * time.Second)
	if _, blocked := req("10.0.0.1"); blocked {
		t.Fatal("still blocked after earning a try back")
	}
	if l.blocked.Load() != 0 {
		t.Fatalf("blocked count %d", l.blocked.Load())
	}
	l.fail("10.0.0.1")
	if _, blocked := req("10.0.0.1"); !blocked {
		t.Fatal("one try back, used: blocked again")
	}
}

func TestFailureLimiterBoundsMemory(t *testing.T) {
	l := newFailureLimiter(2, time.Minute)
	l.maxAddr = 8
	for i := range 10_000 {
		l.fail(string(rune('a'+i%26)) + string(rune(i)))
	}
	total := 0
	for i := range l.shards {
		total += len(l.shards[i].buckets)
	}
	if total > len(l.shards)*l.maxAddr {
		t.Fatalf("%d addresses tracked", total)
	}
}

func TestNilLimiterIsOff(t *testing.T) {
	var l *failureLimiter
	l.fail("x")
	if _, blocked := l.retryAfter(httptest.NewRequest("GET", "/", nil)); blocked {
		t.Fatal("nil limiter blocks")
	}
}
