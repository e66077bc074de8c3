package limits

import (
	"strconv"
	"strings"
	"time"
)

// The RateLimit and RateLimit-Policy fields follow
// draft-ietf-httpapi-ratelimit-headers-10 (September 2025): both are
// Structured Field Lists whose items name a policy. Policies:
//
//	"account"  the account's rate (all its keys together)
//	"key"      the key's own rate
//	"quota"    the account's quota for the UTC day or month
//
// RateLimit-Policy gives each one's quota (q) and window in seconds (w;
// omitted for a calendar month, whose length varies); RateLimit gives
// what remains (r) and the seconds until it is whole again (t).
const (
	// HeaderPolicy is the RateLimit-Policy field name.
	HeaderPolicy = "RateLimit-Policy"
	// HeaderRateLimit is the RateLimit field name.
	HeaderRateLimit = "RateLimit"
	// DraftVersion names the draft the fields follow.
	DraftVersion = "draft-ietf-httpapi-ratelimit-headers-10"
)

// ratePolicy writes one rate policy item. A window that is not a whole
// number of seconds is widened to the next whole second, with the quota
// scaled down to the requests that window admits.
func ratePolicy(b *strings.Builder, name string, r *Rate) {
	w := secondsUp(int64(r.Window))
	q := r.Requests * w * int64(time.Second) / int64(r.Window)
	if b.Len() > 0 {
		b.WriteString(", ")
	}
	b.WriteString(`"` + name + `";q=` + strconv.FormatInt(q, 10) + ";w=" + strconv.FormatInt(w, 10))
}

func accountPolicy(c *acctConfig) string {
	var b strings.Builder
	if c.rate != nil {
		ratePolicy(&b, "account", c.rate)
	}
	if c.quota != nil {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(`"quota";q=` + strconv.FormatInt(c.quota.Requests, 10))
		if c.quota.Period == Day {
			b.WriteString(";w=86400")
		}
	}
	return b.String()
}

func keyPolicy(c *keyConfig) string {
	if c.rate == nil {
		return c.acct.policy
	}
	var b strings.Builder
	ratePolicy(&b, "key", c.rate)
	if c.acct.policy != "" {
		b.WriteString(", " + c.acct.policy)
	}
	return b.String()
}

// Policy is the request's RateLimit-Policy value ("" if no limit applies).
// It is built once per configuration, so it costs nothing per request.
func (r Request) Policy() string { return r.kc.policy }

// AppendRateLimit appends the request's RateLimit value, as it stands
// after the request was counted, to dst.
func (r Request) AppendRateLimit(dst []byte) []byte {
	kc := r.kc
	start := len(dst)
	item := func(name string, rem, t int64) {
		if len(dst) > start {
			dst = append(dst, ", "...)
		}
		dst = append(dst, '"')
		dst = append(dst, name...)
		dst = append(dst, `";r=`...)
		dst = strconv.AppendInt(dst, rem, 10)
		dst = append(dst, ";t="...)
		dst = strconv.AppendInt(dst, t, 10)
	}
	if kc.rate != nil {
		rem, full := r.k.rate.state(kc.rate, r.now)
		item("key", rem, secondsUp(full))
	}
	if ar := kc.acct.rate; ar != nil {
		rem, full := r.k.acct.rate.state(ar, r.now)
		item("account", rem, secondsUp(full))
	}
	if q := kc.acct.quota; q != nil {
		qs := &r.k.acct.quota
		if r.now >= qs.end.Load() {
			r.k.acct.roll(r.l, q.Period, r.now)
		}
		rem := max(q.Requests-qs.base.Load()-qs.local.Load(), 0)
		item("quota", rem, secondsUp(qs.end.Load()-r.now))
	}
	return dst
}
