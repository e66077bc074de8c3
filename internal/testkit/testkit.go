// Package testkit holds what the tests that drive a real Caddy share: free
// loopback ports, a loopback HTTP server standing in for an upstream, and a
// buffer a child process can write to while the test reads it.
package testkit

import (
	"bytes"
	"net"
	"net/http"
	"sync"
	"testing"
)

// Port returns a TCP port on 127.0.0.1 that was free a moment ago. Another
// process may take it before the caller binds it; on a test machine that is
// rare enough.
func Port() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// FreePort is Port for a test: it fails the test if no port is free.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := Port()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Serve runs h on a fresh 127.0.0.1 port until the test ends and returns
// its address (host:port).
func Serve(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// SyncBuffer collects a process's output while the test reads it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
