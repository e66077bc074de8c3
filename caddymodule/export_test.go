package caddymodule

import "time"

// SetLimitsClock makes f the clock of the limiters created from now on and
// the time of every request they see (nil: the real clock), for tests.
func SetLimitsClock(f func() time.Time) { testLimitsClock = f }

// SetKeysClock makes f the clock of the key caches and keys services
// created from now on (nil: the real clock), for tests.
func SetKeysClock(f func() time.Time) { testKeysClock = f }
