package keycache

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// ipNet is one allowed prefix in the form the request path compares
// fastest: the 16-byte address (IPv4 as IPv4-mapped IPv6) as two 64-bit
// halves, masked, with its mask. It holds no pointer (netip.Prefix does),
// so a cache of many restricted keys adds nothing for the collector to
// follow. v4 keeps the families apart: an IPv6 prefix such as ::/0 does
// not admit IPv4 clients.
type ipNet struct {
	hi, lo   uint64
	mhi, mlo uint64
	v4       bool
}

// newIPNet converts p. An IPv4-mapped IPv6 prefix of at least 96 bits is
// the IPv4 prefix it maps; an invalid prefix matches no address.
func newIPNet(p netip.Prefix) ipNet {
	if !p.IsValid() {
		// All-ones mask, all-zero network: no IPv4 address, whose
		// mapped form has 0xffff in its low half, is 0 under it.
		return ipNet{mhi: ^uint64(0), mlo: ^uint64(0), v4: true}
	}
	addr, bits := p.Addr(), p.Bits()
	if addr.Is4In6() && bits >= 96 {
		addr, bits = addr.Unmap(), bits-96
	}
	n := ipNet{v4: addr.Is4()}
	if n.v4 {
		bits += 96
	}
	n.mhi, n.mlo = mask128(bits)
	a := addr.As16()
	n.hi = binary.BigEndian.Uint64(a[:8]) & n.mhi
	n.lo = binary.BigEndian.Uint64(a[8:]) & n.mlo
	return n
}

// mask128 is the mask of a prefix of bits (0-128) as two halves.
func mask128(bits int) (hi, lo uint64) {
	switch {
	case bits <= 0:
		return 0, 0
	case bits < 64:
		return ^uint64(0) << (64 - bits), 0
	case bits == 64:
		return ^uint64(0), 0
	case bits < 128:
		return ^uint64(0), ^uint64(0) << (128 - bits)
	}
	return ^uint64(0), ^uint64(0)
}

// AllowsIP reports whether the key may be used from ip: always when the
// key has no allowed_ips, else when one of its prefixes contains ip. An
// IPv4-mapped IPv6 address is checked as the IPv4 address it maps; an
// invalid address is allowed only by an unrestricted key. It does not
// allocate.
func (e *Entry) AllowsIP(ip netip.Addr) bool {
	if len(e.ips) == 0 {
		return true
	}
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	v4 := ip.Is4()
	a := ip.As16()
	hi, lo := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
	for i := range e.ips {
		n := &e.ips[i]
		if n.v4 == v4 && hi&n.mhi == n.hi && lo&n.mlo == n.lo {
			return true
		}
	}
	return false
}

// IPRestricted reports whether the key has allowed_ips.
func (e *Entry) IPRestricted() bool { return len(e.ips) > 0 }

// RateLimit is the key's own rate limit: requests per window. requests is
// 0 when the key has none (its account's limit alone applies).
func (e *Entry) RateLimit() (requests int, window time.Duration) {
	return int(e.rateRequests), time.Duration(e.rateWindow)
}
