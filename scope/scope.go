// Package scope holds spkgate's scopes, the route policy that maps a request
// to the scope it needs, and the canonical form of the path that is checked.
//
// Scopes are a small fixed set, so a key's scopes are a bit set (Set) and a
// route's requirement is one bit (Req): deciding a request is a few integer
// operations once its route is found.
package scope

import (
	"fmt"
	"sort"
	"strings"
)

// Info describes one scope, for the console and the JSON API.
type Info struct {
	// Name is the scope as keys and rules spell it, e.g. "monitors:write".
	Name string `json:"name"`
	// Description says what it grants.
	Description string `json:"description"`
}

// All lists every scope, in the order the product documentation shows them.
var All = []Info{
	{"status_pages:read", "Read your status pages and their monitors"},
	{"monitors:read", "Read monitors and availability metrics"},
	{"monitors:write", "Create, update, and delete monitors"},
	{"incidents:read", "Read incidents and their updates"},
	{"incidents:write", "Create, update, and delete incidents"},
	{"maintenances:read", "Read maintenance windows"},
	{"maintenances:write", "Create, update, and delete maintenance windows"},
	{"analytics:read", "Read analytics and uptime data"},
}

// Resources are the resources of the built-in statuspage policy, in order.
var Resources = []string{"status_pages", "monitors", "incidents", "maintenances", "analytics"}

// FullAccess is how a full-access requirement or key is written.
const FullAccess = "*"

// Set is a key's scopes as a bit set: bit i is All[i]. The zero Set grants
// nothing; Full grants everything.
type Set uint16

// Full is the Set of a key with no scopes: access to every endpoint.
const Full Set = 1 << 15

// Req is what a route needs: 0 means only a full-access key passes, i+1
// means scope All[i].
type Req uint8

// Only is the requirement of routes that no scope covers.
const Only Req = 0

var (
	index      = map[string]int{}
	impliesBit [len16]Set // impliesBit[i]: bits granted by holding All[i]
)

const len16 = 16

func init() {
	for i, s := range All {
		index[s.Name] = i
	}
	for i, s := range All {
		impliesBit[i] = 1 << i
		if res, ok := strings.CutSuffix(s.Name, ":write"); ok {
			if r, ok := index[res+":read"]; ok {
				impliesBit[i] |= 1 << r
			}
		}
	}
}

// Known reports whether name is a scope.
func Known(name string) bool {
	_, ok := index[name]
	return ok
}

// Parse turns a key's scope names into a Set. No names means Full. Unknown
// names are an error that names them. Duplicates are allowed.
func Parse(names []string) (Set, error) {
	if len(names) == 0 {
		return Full, nil
	}
	var s Set
	var unknown []string
	for _, n := range names {
		i, ok := index[n]
		if !ok {
			unknown = append(unknown, n)
			continue
		}
		s |= impliesBit[i]
	}
	if len(unknown) > 0 {
		return 0, fmt.Errorf("unknown scope %s (known: %s)", strings.Join(quoteAll(unknown), ", "), strings.Join(Names(), ", "))
	}
	return s, nil
}

// Normalize validates names and returns them sorted in the order of All,
// without duplicates. Nil or empty means full access and returns nil.
func Normalize(names []string) ([]string, error) {
	if _, err := Parse(names); err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, nil
	}
	seen := map[string]bool{}
	var out []string
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	sort.Slice(out, func(a, b int) bool { return index[out[a]] < index[out[b]] })
	return out, nil
}

// Names returns every scope name, in order.
func Names() []string {
	out := make([]string, len(All))
	for i, s := range All {
		out[i] = s.Name
	}
	return out
}

// Allows reports whether a key with Set s may pass a route that needs r.
func (s Set) Allows(r Req) bool {
	if s&Full != 0 {
		return true
	}
	return r != Only && s&(1<<(r-1)) != 0
}

// Header returns the value of the X-Spk-Scopes header for names: "*" for full
// access, otherwise the names joined by commas.
func Header(names []string) string {
	if len(names) == 0 {
		return FullAccess
	}
	return strings.Join(names, ",")
}

// String returns the scope name, or "*" for Only.
func (r Req) String() string {
	if r == Only || int(r) > len(All) {
		return FullAccess
	}
	return All[r-1].Name
}

// ParseReq parses a rule's scope: a scope name or "*".
func ParseReq(name string) (Req, error) {
	if name == FullAccess {
		return Only, nil
	}
	i, ok := index[name]
	if !ok {
		return 0, fmt.Errorf("unknown scope %q (known: %s, or * for full access only)", name, strings.Join(Names(), ", "))
	}
	return Req(i + 1), nil
}

func quoteAll(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}
