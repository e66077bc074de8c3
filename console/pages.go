package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets/*
var assetFS embed.FS

// pageNames are the templates under templates/, each rendered inside
// layout.html.
var pageNames = []string{"keys", "new", "created", "revoke", "upgrade", "error", "explore", "edit", "editconfirm", "roll", "key", "activity"}

// pageSet is the parsed templates and the embedded assets.
type pageSet struct {
	tmpl   map[string]*template.Template
	assets map[string]asset
	css    string // versioned asset paths, relative to the base path
	js     string
}

type asset struct {
	body  []byte
	ctype string
	etag  string
}

// loadPages parses the embedded templates once per process.
var loadPages = sync.OnceValues(func() (*pageSet, error) {
	ps := &pageSet{tmpl: map[string]*template.Template{}, assets: map[string]asset{}}
	for _, n := range pageNames {
		t, err := template.ParseFS(templateFS, "templates/layout.html", "templates/"+n+".html")
		if err != nil {
			return nil, err
		}
		ps.tmpl[n] = t
	}
	entries, err := assetFS.ReadDir("assets")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		b, err := assetFS.ReadFile("assets/" + e.Name())
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		v := hex.EncodeToString(sum[:6])
		ps.assets[e.Name()] = asset{body: b, ctype: mime.TypeByExtension(path.Ext(e.Name())), etag: `"` + v + `"`}
		switch e.Name() {
		case "console.css":
			ps.css = "/assets/console.css?v=" + v
		case "console.js":
			ps.js = "/assets/console.js?v=" + v
		}
	}
	return ps, nil
})

// layout is what every page's frame shows.
type layout struct {
	Title      string
	Home       string
	CSS        string
	JS         string
	Account    string
	PlanName   string
	SignedIn   bool
	Page       any
	StatusCode int
	// Tabs, when set, are the console's sections, Tab the current one.
	Tabs []tab
}

// tab is one of the console's sections in the navigation.
type tab struct {
	Label   string
	URL     string
	Current bool
}

// render executes the page template name with page inside the layout and
// writes it with status. Pages show an account's data, so they are never
// stored by a cache.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, rq *request, status int, name string, page any) {
	v := layout{
		Title:      titles[name],
		Home:       h.home,
		CSS:        h.base + h.pages.css,
		JS:         h.base + h.pages.js,
		Page:       page,
		StatusCode: status,
	}
	if rq != nil {
		v.SignedIn, v.Account, v.PlanName = true, rq.account, planName(rq.plan)
		if rq.access && name != "created" {
			v.Tabs = h.tabs(name)
		}
	}
	if ep, ok := page.(errorPage); ok {
		v.Title = ep.Heading
	}
	var buf bytes.Buffer
	if err := h.pages.tmpl[name].ExecuteTemplate(&buf, "layout", v); err != nil {
		h.onError("render "+name, err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

// tabs are the console's sections; the page name picks the current one.
func (h *Handler) tabs(page string) []tab {
	return []tab{
		{Label: "API keys", URL: h.home, Current: page == "keys" || page == "new" || page == "revoke" || page == "edit" || page == "editconfirm" || page == "roll" || page == "key"},
		{Label: "Explore the API", URL: h.base + "/explore", Current: page == "explore"},
		{Label: "Activity", URL: h.base + "/activity", Current: page == "activity"},
	}
}

var titles = map[string]string{
	"keys":        "API Console",
	"new":         "Create API key",
	"created":     "Your new API key",
	"revoke":      "Revoke API key",
	"upgrade":     "Upgrade to use the API",
	"explore":     "Explore the API",
	"edit":        "Edit API key",
	"editconfirm": "Confirm changes",
	"roll":        "Roll API key",
	"key":         "API key usage",
	"activity":    "Activity",
}

// planName is a plan as a page shows it: "pro" → "Pro".
func planName(plan string) string {
	if plan == "" {
		return ""
	}
	r, n := utf8.DecodeRuneInString(plan)
	return string(unicode.ToUpper(r)) + plan[n:]
}

func (h *Handler) serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	a, ok := h.pages.assets[name]
	if !ok {
		h.notFound(w, r, false)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.methodNotAllowed(w, r, false, "GET, HEAD")
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.ctype)
	hd.Set("ETag", a.etag)
	// The page links a versioned URL, so a changed asset has a new URL.
	hd.Set("Cache-Control", "private, max-age=86400")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// servePage serves the HTML pages: the key list (home), the create form,
// and the revoke confirmation.
func (h *Handler) servePage(w http.ResponseWriter, r *http.Request, rel string, rq *request) {
	get := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case rel == "":
		if !get {
			h.methodNotAllowed(w, r, false, "GET, HEAD")
			return
		}
		if h.upgradeFirst(w, r, rq) {
			return
		}
		h.keysPage(w, r, rq)
	case rel == "/new":
		if !get && r.Method != http.MethodPost {
			h.methodNotAllowed(w, r, false, "GET, HEAD, POST")
			return
		}
		if h.upgradeFirst(w, r, rq) {
			return
		}
		if get {
			h.render(w, r, rq, http.StatusOK, "new", h.newFormFor(r.URL.Query()))
			return
		}
		h.createFromForm(w, r, rq)
	case rel == "/explore":
		if !get {
			h.methodNotAllowed(w, r, false, "GET, HEAD")
			return
		}
		if h.upgradeFirst(w, r, rq) {
			return
		}
		h.explorePage(w, r, rq)
	case strings.HasPrefix(rel, "/keys/") && strings.HasSuffix(rel, "/revoke"):
		id := strings.TrimSuffix(strings.TrimPrefix(rel, "/keys/"), "/revoke")
		if id == "" || strings.Contains(id, "/") {
			h.notFound(w, r, false)
			return
		}
		if !get && r.Method != http.MethodPost {
			h.methodNotAllowed(w, r, false, "GET, HEAD, POST")
			return
		}
		if h.upgradeFirst(w, r, rq) {
			return
		}
		if get {
			h.revokePage(w, r, rq, id)
			return
		}
		h.revokeFromForm(w, r, rq, id)
	case strings.HasPrefix(rel, "/keys/"):
		h.serveKeyPages(w, r, rq, rel)
	case rel == "/activity":
		if !get {
			h.methodNotAllowed(w, r, false, "GET, HEAD")
			return
		}
		if h.upgradeFirst(w, r, rq) {
			return
		}
		h.activityPage(w, r, rq)
	default:
		h.notFound(w, r, false)
	}
}

// upgradePage is the prompt that a plan without API access sees.
type upgradePage struct {
	PlanName   string
	UpgradeURL string
}

// upgradeFirst shows the upgrade prompt, and reports so, when the plan has
// no API access.
func (h *Handler) upgradeFirst(w http.ResponseWriter, r *http.Request, rq *request) bool {
	if rq.access {
		return false
	}
	h.render(w, r, rq, http.StatusForbidden, "upgrade", upgradePage{PlanName: planName(rq.plan), UpgradeURL: h.cfg.UpgradeURL})
	return true
}

// errorPage is any page that says something went wrong.
type errorPage struct {
	Heading string
	Message string
	Back    bool
}
