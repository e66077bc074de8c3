package console

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spkgate/spkgate/scope"
)

// This file is the API explorer: the routes of the gateway's policy,
// grouped by resource, filtered by a set of scopes, and the try-it panel.
// The same route views show, on the create form, which endpoints the
// checked scopes open.

// Preset is a named set of scopes that the create form and the explorer
// offer as a shortcut. A preset only checks boxes; the user can still
// change them.
type Preset struct {
	// ID names the preset in URLs (?preset=read-only).
	ID string
	// Label is what the link says.
	Label string
	// Scopes are the scopes it checks.
	Scopes []string
}

// Presets are the scope presets, in the order the pages show them.
var Presets = func() []Preset {
	var read []string
	for _, s := range scope.All {
		if strings.HasSuffix(s.Name, ":read") {
			read = append(read, s.Name)
		}
	}
	return []Preset{
		{ID: "read-only", Label: "Read only", Scopes: read},
		{ID: "incident-responder", Label: "Incident responder", Scopes: []string{"status_pages:read", "incidents:write"}},
	}
}()

func findPreset(id string) (Preset, bool) {
	for _, p := range Presets {
		if p.ID == id {
			return p, true
		}
	}
	return Preset{}, false
}

// presetView is a preset as a page links it.
type presetView struct {
	Label  string
	URL    string // works without JavaScript
	Scopes string // space-separated, for the script
}

func (h *Handler) presetViews(page string) []presetView {
	var out []presetView
	for _, p := range Presets {
		v := presetView{Label: p.Label, Scopes: strings.Join(p.Scopes, " ")}
		switch page {
		case "new":
			v.URL = h.base + "/new?preset=" + url.QueryEscape(p.ID) + "#scopes"
		default:
			q := url.Values{"scopes": p.Scopes}
			v.URL = h.base + "/explore?" + q.Encode() + "#filter"
		}
		out = append(out, v)
	}
	return out
}

// RoutesResponse is the body of GET <base>/api/routes.
type RoutesResponse struct {
	Routes []scope.Route `json:"routes"`
}

// routes returns the routes of the policy the console explores.
func (h *Handler) routes() []scope.Route { return h.routeList }

// filterSet turns the scopes of a filter into a Set; unknown names are
// ignored, and no known name means no filter (Full).
func filterSet(names []string) (scope.Set, []string) {
	var known []string
	for _, n := range names {
		for part := range strings.SplitSeq(n, ",") {
			if part = strings.TrimSpace(part); scope.Known(part) && !slices.Contains(known, part) {
				known = append(known, part)
			}
		}
	}
	set, _ := scope.Parse(known)
	return set, known
}

// routeView is a route as the explorer and the create form show it.
type routeView struct {
	Index       int
	Methods     []string
	Path        string
	Scope       string // "*" for full access only
	FullOnly    bool
	Description string
	Open        bool // the filter's scopes open it
}

// routeGroup is the routes of one resource.
type routeGroup struct {
	Name   string
	ID     string
	Routes []routeView
	Open   int
}

// apiBasePath is the path of the API base URL ("/v1"), under which the
// routes of each resource are grouped.
func (h *Handler) apiBasePath() string {
	if h.cfg.BaseURL == "" {
		return "/v1"
	}
	u, err := url.Parse(h.cfg.BaseURL)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(u.Path, "/")
}

// groupRoutes groups the routes by their first path segment below the API
// base path, in the order the groups first appear, and marks the routes
// that set opens.
func (h *Handler) groupRoutes(set scope.Set) (groups []routeGroup, open, total int) {
	base := h.apiBasePath()
	idx := map[string]int{}
	for i, r := range h.routes() {
		rest := r.Path
		if base != "" && strings.HasPrefix(rest, base+"/") {
			rest = rest[len(base):]
		}
		seg, _, _ := strings.Cut(strings.TrimPrefix(rest, "/"), "/")
		if seg == "*" || seg == "" {
			seg = "other"
		}
		g, ok := idx[seg]
		if !ok {
			g = len(groups)
			idx[seg] = g
			groups = append(groups, routeGroup{Name: groupName(seg), ID: "routes-" + idSafe(seg)})
		}
		v := routeView{
			Index: i, Methods: r.Methods, Path: r.Path, Scope: r.Scope,
			FullOnly: r.Scope == scope.FullAccess, Description: r.Description,
			Open: set.Allows(r.Req()),
		}
		groups[g].Routes = append(groups[g].Routes, v)
		total++
		if v.Open {
			groups[g].Open++
			open++
		}
	}
	return groups, open, total
}

// groupName is a path segment as a heading: "status_pages" → "Status pages".
func groupName(seg string) string {
	if seg == "other" {
		return "Other routes"
	}
	s := strings.ReplaceAll(seg, "_", " ")
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}

// idSafe keeps the characters an id attribute and a URL fragment can
// carry as they are.
func idSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_') {
			return r
		}
		return '-'
	}, s)
}

// explorePage is the API explorer.
type explorePage struct {
	BaseURL    string
	Action     string
	Scopes     []scopeOption
	Filtered   bool
	Picked     []string
	Groups     []routeGroup
	Open       int
	Total      int
	Presets    []presetView
	Try        tryPanel
	ClearURL   string
	NewKeyURL  string
	NewKeyBase string
}

func (h *Handler) explorePage(w http.ResponseWriter, r *http.Request, rq *request) {
	q := r.URL.Query()
	set, picked := filterSet(q["scopes"])
	groups, open, total := h.groupRoutes(set)
	p := explorePage{
		BaseURL:   h.baseURL(r),
		Action:    h.base + "/explore",
		Filtered:  len(picked) > 0,
		Picked:    picked,
		Groups:    groups,
		Open:      open,
		Total:     total,
		Presets:   h.presetViews("explore"),
		ClearURL:  h.base + "/explore#filter",
		NewKeyURL: h.base + "/new",
	}
	p.NewKeyBase = p.NewKeyURL
	for _, s := range scope.All {
		p.Scopes = append(p.Scopes, scopeOption{Info: s, ID: "filter-" + strings.ReplaceAll(s.Name, ":", "-"), Checked: slices.Contains(picked, s.Name)})
	}
	if len(picked) > 0 {
		q := url.Values{"scopes": picked}
		p.NewKeyURL += "?" + q.Encode() + "#scopes"
	}
	p.Try = h.tryPanel(r, q)
	h.render(w, r, rq, http.StatusOK, "explore", p)
}

// tryPanel is the try-it form: the route and method picked, the values of
// its path parameters, and (for the page without JavaScript) the request
// as a curl command. The key is never part of it: the page's script sends
// the request from the browser.
type tryPanel struct {
	Options []tryOption
	Picked  bool
	Method  string
	Params  []tryParam
	Body    string
	HasBody bool
	URL     string
	Curl    string
	// Origin is the API's scheme and host, where the page's script sends
	// the request ("" for the console's own origin).
	Origin string
}

type tryOption struct {
	Value    string // "<route index>:<METHOD>"
	Label    string
	Method   string
	Path     string
	Selected bool
}

type tryParam struct {
	ID    string
	Name  string
	Label string
	Hint  string
	Value string
}

// tryMethods are the methods the panel offers for a route; "*" offers
// the common ones.
func tryMethods(methods []string) []string {
	if slices.Contains(methods, "*") {
		return []string{"GET", "POST", "PUT", "PATCH", "DELETE"}
	}
	var out []string
	for _, m := range methods {
		if m != "HEAD" && m != "OPTIONS" && m != "TRACE" && m != "CONNECT" {
			out = append(out, m)
		}
	}
	return out
}

func (h *Handler) tryPanel(r *http.Request, q url.Values) tryPanel {
	var t tryPanel
	picked := q.Get("route")
	var pickedPath string
	for i, rt := range h.routes() {
		for _, m := range tryMethods(rt.Methods) {
			v := strconv.Itoa(i) + ":" + m
			o := tryOption{Value: v, Label: m + " " + rt.Path, Method: m, Path: rt.Path}
			if rt.Description != "" {
				o.Label += " · " + rt.Description
			}
			if v == picked {
				o.Selected, t.Picked, t.Method, pickedPath = true, true, m, rt.Path
			}
			t.Options = append(t.Options, o)
		}
	}
	if !t.Picked && len(t.Options) > 0 {
		t.Options[0].Selected = true
		t.Method, pickedPath = t.Options[0].Method, t.Options[0].Path
	}
	t.HasBody = t.Method == "POST" || t.Method == "PUT" || t.Method == "PATCH"
	t.Body = q.Get("body")
	if len(t.Body) > 64<<10 {
		t.Body = t.Body[:64<<10]
	}
	t.Params = pathParams(pickedPath)
	for i := range t.Params {
		t.Params[i].Value = q.Get(t.Params[i].Name)
	}
	path := fillPath(pickedPath, t.Params)
	t.Origin = h.apiOrigin(r)
	t.URL = t.Origin + path
	if t.Picked {
		t.Curl = curlCommand(t.Method, t.URL, t.HasBody, t.Body)
	}
	return t
}

// pathParams names the wildcards of a path pattern: a "*" segment is "p<i>",
// labelled after the segment before it; a trailing "/*" is "rest".
func pathParams(pattern string) []tryParam {
	var out []tryParam
	segs := strings.Split(strings.TrimPrefix(pattern, "/"), "/")
	for i, s := range segs {
		if s != "*" {
			continue
		}
		if i == len(segs)-1 {
			out = append(out, tryParam{ID: "try-rest", Name: "rest", Label: "Rest of the path", Hint: "e.g. 42 or 42/updates; may be empty"})
			continue
		}
		label := "Id"
		if i > 0 {
			label = segs[i-1] + " id"
		}
		n := "p" + strconv.Itoa(i)
		out = append(out, tryParam{ID: "try-" + n, Name: n, Label: label, Hint: "one path segment"})
	}
	return out
}

// fillPath puts the parameters into the pattern, each segment escaped.
func fillPath(pattern string, params []tryParam) string {
	segs := strings.Split(strings.TrimPrefix(pattern, "/"), "/")
	k := 0
	for i, s := range segs {
		if s != "*" || k >= len(params) {
			continue
		}
		v := params[k].Value
		k++
		if i == len(segs)-1 {
			parts := strings.Split(v, "/")
			for j := range parts {
				parts[j] = url.PathEscape(parts[j])
			}
			segs[i] = strings.Join(parts, "/")
			continue
		}
		if v == "" {
			segs[i] = "{" + params[k-1].Label + "}"
			continue
		}
		segs[i] = url.PathEscape(v)
	}
	return "/" + strings.Join(segs, "/")
}

// apiOrigin is the scheme and host of the API base URL ("" when the base
// URL is a path on the console's own host).
func (h *Handler) apiOrigin(r *http.Request) string {
	u, err := url.Parse(h.baseURL(r))
	if err != nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// curlCommand is the request as a shell command, with the key left to an
// environment variable.
func curlCommand(method, u string, hasBody bool, body string) string {
	var b strings.Builder
	b.WriteString("curl -i")
	if method != "GET" {
		b.WriteString(" -X " + method)
	}
	b.WriteString(` -H "Authorization: Bearer $SPK_API_KEY"`)
	if hasBody {
		b.WriteString(` -H "Content-Type: application/json"`)
		if body == "" {
			body = "{}"
		}
		b.WriteString(" --data-raw " + shellQuote(body))
	}
	b.WriteString(" " + shellQuote(u))
	return b.String()
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
