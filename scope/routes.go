package scope

import (
	"slices"
	"strings"
)

// Route is one entry of the API's route list, as the console's explorer and
// its GET <base>/api/routes show it: the methods and path pattern of a rule,
// the scope a key needs for them ("*": full-access keys only) and what the
// requests do.
type Route struct {
	// Methods are the HTTP methods, upper case; ["*"] means every method.
	Methods []string `json:"methods"`
	// Path is the rule's path pattern (see Rule.Path).
	Path string `json:"path"`
	// Scope is the scope a key needs, or "*" when only a full-access key
	// may call the route.
	Scope string `json:"scope"`
	// Description says in one line what the requests do ("" if the rule
	// has none).
	Description string `json:"description"`
}

// Routes lists the policy's rules as routes, in the order they were given.
// It is derived from the very rules that Required decides with, so a list
// shown to users cannot disagree with what is enforced. Methods that a
// later rule with the same path pattern takes over are left out of the
// earlier rule's route (and a route with no method left is dropped), so
// each method and pattern appears once, with the scope that applies. A
// later rule with a narrower pattern (e.g. "/v1/status_pages/*/uptime"
// below "/v1/status_pages/*") is listed as a route of its own; for the
// paths it matches it decides, as in Required.
func (p *Policy) Routes() []Route {
	out := make([]Route, 0, len(p.src))
	for i, r := range p.src {
		methods := r.Methods
		if len(methods) == 0 || slices.Contains(methods, "*") {
			methods = []string{"*"}
		}
		var kept []string
		for _, m := range methods {
			if !p.takenOver(i, m) {
				kept = append(kept, m)
			}
		}
		if len(kept) == 0 {
			continue
		}
		out = append(out, Route{Methods: kept, Path: r.Path, Scope: r.Scope, Description: r.Description})
	}
	return out
}

// takenOver reports whether a rule after rule i has the same path pattern
// and covers method m.
func (p *Policy) takenOver(i int, m string) bool {
	for _, later := range p.src[i+1:] {
		if later.Path != p.src[i].Path {
			continue
		}
		if len(later.Methods) == 0 || slices.Contains(later.Methods, "*") {
			return true
		}
		if m != "*" && slices.Contains(later.Methods, m) {
			return true
		}
	}
	return false
}

// Req returns what the route needs. A route from Routes always parses;
// anything else is treated as full access only.
func (r Route) Req() Req {
	q, err := ParseReq(r.Scope)
	if err != nil {
		return Only
	}
	return q
}

// nouns are the built-in resources as the descriptions name them: plural
// and singular.
var nouns = map[string][2]string{
	"status_pages": {"status pages", "status page"},
	"monitors":     {"monitors", "monitor"},
	"incidents":    {"incidents", "incident"},
	"maintenances": {"maintenance windows", "maintenance window"},
	"analytics":    {"analytics", "analytics report"},
}

// describe returns the built-in policy's descriptions of the read and the
// change rules of a resource's collection (item false) or of one item and
// everything below it (item true).
func describe(resource string, item bool) (read, change string) {
	n, ok := nouns[resource]
	if !ok {
		n = [2]string{strings.ReplaceAll(resource, "_", " "), strings.ReplaceAll(resource, "_", " ")}
	}
	if resource == "analytics" {
		if item {
			return "Read one analytics report and anything below it", "Change analytics data (no scope covers it)"
		}
		return "Read analytics and uptime data", "Change analytics data (no scope covers it)"
	}
	if item {
		return "Read one " + n[1] + " and anything below it", "Update or delete one " + n[1] + " and anything below it"
	}
	article := "a "
	if strings.ContainsRune("aeiou", rune(n[1][0])) {
		article = "an "
	}
	return "List " + n[0], "Create " + article + n[1]
}
