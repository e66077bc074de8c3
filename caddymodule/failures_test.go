package caddymodule

import (
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

func TestFailureLimiter(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newFailureLimiter(3, 30*time.Second, nil) // one try back every 10s
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
	l := newFailureLimiter(2, time.Minute, nil)
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

func TestFailureLimiterKeysIPv6By64(t *testing.T) {
	l := newFailureLimiter(2, time.Minute, nil)
	l.fail("2001:db8:1:2::1")
	l.fail("2001:db8:1:2:ffff::9")
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "[2001:db8:1:2:abcd::7]:443"
	if _, blocked := l.retryAfter(r); !blocked {
		t.Fatal("rotating addresses inside one /64 dodged the limit")
	}
	r.RemoteAddr = "[2001:db8:1:3::1]:443"
	if _, blocked := l.retryAfter(r); blocked {
		t.Fatal("the next /64 is blocked too")
	}
	if limitKey("192.0.2.7") != "192.0.2.7" || limitKey("::ffff:192.0.2.7") != "::ffff:192.0.2.7" {
		t.Fatal("IPv4 addresses must keep their own budget")
	}
}

func TestFailureLimiterEvictsBoundedWork(t *testing.T) {
	l := newFailureLimiter(1, time.Hour, nil)
	l.maxAddr = 100
	// Fill every shard with blocked addresses, then keep adding: the shard
	// stays bounded and the blocked count stays consistent.
	for i := range 20_000 {
		l.fail("198.51." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256))
	}
	blocked := 0
	for i := range l.shards {
		if n := len(l.shards[i].buckets); n > l.maxAddr {
			t.Fatalf("shard holds %d addresses", n)
		}
		for _, b := range l.shards[i].buckets {
			if b.blocked {
				blocked++
			}
		}
	}
	if int64(blocked) != l.blocked.Load() {
		t.Fatalf("blocked count %d, buckets say %d", l.blocked.Load(), blocked)
	}
}
