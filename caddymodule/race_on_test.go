//go:build race

package caddymodule_test

// raceDetector reports whether the tests run with -race, which slows
// instrumented Go code (the pure-Go SQLite included) several times more
// than system calls and so changes the relative cost of code paths.
const raceDetector = true
