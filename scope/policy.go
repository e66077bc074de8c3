package scope

import (
	"fmt"
	"strings"
)

// Rule maps requests to the scope they need.
type Rule struct {
	// Scope is the scope a key needs for the matched requests, or "*" when
	// only a full-access key may pass.
	Scope string `json:"scope"`
	// Methods are the HTTP methods the rule applies to, upper case as sent
	// on the wire (methods are case-sensitive). Empty or "*" means every method.
	Methods []string `json:"methods,omitempty"`
	// Path is the path pattern: an exact path ("/v1/monitors"), a "*" segment
	// that matches exactly one non-empty segment ("/v1/pages/*/monitors"), or
	// a trailing "/*" that matches everything below the path, including its
	// bare trailing slash ("/v1/monitors/*" matches "/v1/monitors/" and
	// "/v1/monitors/7/checks" but not "/v1/monitors").
	Path string `json:"path"`
	// Description says in one line what the matched requests do, for the
	// console's API explorer (e.g. "List monitors"). It does not change
	// what the rule enforces. Default: none.
	Description string `json:"description,omitempty"`
}

// StatusPage returns the built-in rules for the status-page API under base
// (e.g. "/v1"): for each resource R, GET and HEAD on base/R and below need
// R:read; POST, PUT, PATCH and DELETE need R:write where it exists and a
// full-access key otherwise.
func StatusPage(base string) []Rule {
	base = strings.TrimSuffix(base, "/")
	var rules []Rule
	for _, r := range Resources {
		write := r + ":write"
		if !Known(write) {
			write = FullAccess
		}
		for i, p := range []string{base + "/" + r, base + "/" + r + "/*"} {
			read, change := describe(r, i == 1)
			rules = append(rules,
				Rule{Scope: r + ":read", Methods: []string{"GET", "HEAD"}, Path: p, Description: read},
				Rule{Scope: write, Methods: []string{"POST", "PUT", "PATCH", "DELETE"}, Path: p, Description: change},
			)
		}
	}
	return rules
}

// methodBit returns the bit of an HTTP method; every method outside the
// list (lower-case spellings included) shares the last bit.
func methodBit(m string) uint16 {
	switch m {
	case "GET":
		return 1 << 0
	case "HEAD":
		return 1 << 1
	case "POST":
		return 1 << 2
	case "PUT":
		return 1 << 3
	case "PATCH":
		return 1 << 4
	case "DELETE":
		return 1 << 5
	case "OPTIONS":
		return 1 << 6
	case "TRACE":
		return 1 << 7
	case "CONNECT":
		return 1 << 8
	}
	return 1 << 15
}

const allMethods = ^uint16(0)

type compiled struct {
	methods uint16
	req     Req
	// exact is set for patterns without wildcards.
	exact string
	// under is set for literal patterns ending in "/*": the path must start
	// with under (which ends in "/").
	under string
	// segs is set for patterns with a "*" segment; prefix says the pattern
	// ended in "/*".
	segs   []string
	prefix bool
}

// Policy is a compiled, ordered list of rules. The last rule that matches a
// request decides, so later rules refine earlier ones. A Policy is immutable
// and safe for concurrent use.
type Policy struct {
	rules []compiled
	src   []Rule // the rules as given, for Routes
}

// Compile checks and compiles rules. Errors name the rule and the problem.
func Compile(rules []Rule) (*Policy, error) {
	p := &Policy{rules: make([]compiled, 0, len(rules)), src: append([]Rule(nil), rules...)}
	for i, r := range rules {
		c, err := compile(r)
		if err != nil {
			return nil, fmt.Errorf("rule %d (%s %s %s): %v", i+1, r.Scope, strings.Join(r.Methods, ","), r.Path, err)
		}
		p.rules = append(p.rules, c)
	}
	return p, nil
}

func compile(r Rule) (compiled, error) {
	var c compiled
	req, err := ParseReq(r.Scope)
	if err != nil {
		return c, err
	}
	c.req = req
	for _, m := range r.Methods {
		if m == "*" {
			c.methods = allMethods
			continue
		}
		if m == "" || strings.ToUpper(m) != m || strings.ContainsAny(m, " \t/,") {
			return c, fmt.Errorf("method %q must be an upper-case HTTP method or *", m)
		}
		bit := methodBit(m)
		if bit == 1<<15 {
			return c, fmt.Errorf("unsupported method %q (use GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE, CONNECT or *)", m)
		}
		c.methods |= bit
	}
	if len(r.Methods) == 0 {
		c.methods = allMethods
	}
	if err := checkPattern(r.Path); err != nil {
		return c, err
	}
	body, prefix := strings.CutSuffix(r.Path, "/*")
	if !strings.Contains(body, "*") {
		if prefix {
			c.under = body + "/"
		} else {
			c.exact = body
		}
		return c, nil
	}
	c.segs = strings.Split(body[1:], "/")
	c.prefix = prefix
	return c, nil
}

func checkPattern(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("path pattern %q must start with /", p)
	}
	if p == "/*" {
		return nil
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		switch {
		case seg == "" && p != "/":
			return fmt.Errorf("path pattern %q has an empty segment", p)
		case seg == "." || seg == "..":
			return fmt.Errorf("path pattern %q has a dot segment", p)
		case seg != "*" && strings.Contains(seg, "*"):
			return fmt.Errorf("path pattern %q: * must be a whole segment", p)
		case strings.ContainsAny(seg, "%\\?#"):
			return fmt.Errorf("path pattern %q: write the decoded path, without %%, \\, ? or #", p)
		}
	}
	return nil
}

func (c *compiled) match(path string) bool {
	switch {
	case c.exact != "":
		return path == c.exact
	case c.under != "":
		return strings.HasPrefix(path, c.under)
	}
	rest := path
	for _, seg := range c.segs {
		if len(rest) == 0 || rest[0] != '/' {
			return false
		}
		rest = rest[1:]
		s := rest
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			s, rest = rest[:i], rest[i:]
		} else {
			rest = ""
		}
		if seg == "*" {
			if s == "" {
				return false
			}
		} else if seg != s {
			return false
		}
	}
	if c.prefix {
		return len(rest) > 0 && rest[0] == '/'
	}
	return rest == ""
}

// Required returns what a request with method and canonical path needs.
// A request that no rule maps needs a full-access key (Only). It does not
// allocate.
func (p *Policy) Required(method, path string) Req {
	bit := methodBit(method)
	for i := len(p.rules) - 1; i >= 0; i-- {
		c := &p.rules[i]
		if c.methods&bit != 0 && c.match(path) {
			return c.req
		}
	}
	return Only
}

// Len returns the number of rules.
func (p *Policy) Len() int { return len(p.rules) }
