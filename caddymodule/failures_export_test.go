package caddymodule

import (
	"sync/atomic"
	"testing"
	"time"
)

// FakeClock is the wall clock moved forward by Advance.
type FakeClock struct{ offset atomic.Int64 }

// Now returns the wall clock plus every Advance so far.
func (c *FakeClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Advance moves the clock forward by d.
func (c *FakeClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// UseFailureClock makes the failed-authentication limiters provisioned
// during the test read a FakeClock. Call it before the gateway starts: the
// clock is restored after the test's later cleanups (Caddy's stop) ran.
func UseFailureClock(t testing.TB) *FakeClock {
	c := new(FakeClock)
	failureClock = c.Now
	t.Cleanup(func() { failureClock = time.Now })
	return c
}
