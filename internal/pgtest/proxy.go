package pgtest

import (
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// Proxy relays TCP connections to a server, and can stop doing so the way
// a failing network does: silently. A test puts one in front of PostgreSQL
// to cut one client (one gateway instance) off the database while other
// clients still reach it.
type Proxy struct {
	ln     net.Listener
	target string

	mu        sync.Mutex
	blackhole bool
	conns     map[net.Conn]struct{} // both ends of every open relay
	closed    bool
	wg        sync.WaitGroup
}

// NewProxy starts a proxy on 127.0.0.1 that relays to target (host:port).
// It stops, closing every connection, when the test ends.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("pgtest: proxy: %v", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.close)
	return p
}

// Addr returns the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// DSN returns dsn with its host and port replaced by the proxy's.
func (p *Proxy) DSN(tb testing.TB, dsn string) string {
	tb.Helper()
	host, port, _ := net.SplitHostPort(p.Addr())
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			tb.Fatalf("pgtest: cannot parse the connection string")
		}
		u.Host = p.Addr()
		return u.String()
	}
	return dsn + " host=" + host + " port=" + port
}

// Blackhole makes the network path fail silently: from now on nothing
// passes in either direction and nobody is told. Open connections stay
// open, their bytes dropped; new connections are accepted and go nowhere.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	p.blackhole = true
	p.mu.Unlock()
}

// Heal ends a blackhole. The connections that were open during it are
// closed, as a real network's would be once their timeouts ran out (their
// streams lost bytes); new connections are relayed again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackhole = false
	for c := range p.conns {
		c.Close()
	}
}

func (p *Proxy) dropping() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blackhole
}

// track registers c; it reports false once the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(client) {
			return
		}
		p.wg.Add(1)
		go p.serve(client)
	}
}

// serve relays one client connection, or holds it while the path is a
// blackhole.
func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	if p.dropping() {
		io.Copy(io.Discard, client) // until Heal or close
		return
	}
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	done := make(chan struct{}, 2)
	go func() { p.pipe(server, client); done <- struct{}{} }()
	go func() { p.pipe(client, server); done <- struct{}{} }()
	<-done
	// One direction ended: end both.
	client.Close()
	server.Close()
	<-done
}

// pipe copies src to dst, dropping what it reads while the path is a
// blackhole.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.dropping() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}
