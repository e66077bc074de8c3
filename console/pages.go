package console

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"html/template"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/scope"
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

// keyView is a key as the pages show it.
type keyView struct {
	ID        string
	Name      string
	Prefix    string
	Scopes    []string
	Created   when
	LastUsed  when
	Expires   when
	Expired   bool
	RevokeURL string
	PageURL   string
	EditURL   string
	RollURL   string
	// Rolling is set for a key that was rolled: it works until Expires,
	// the end of its grace period.
	Rolling bool
	// AllowedIPs and RateLimit are its restrictions, as text ("" if none).
	AllowedIPs string
	RateLimit  string
}

func (h *Handler) view(k keystore.Key) keyView {
	now := h.cfg.Now()
	v := keyView{
		ID:        k.ID,
		Name:      k.Name,
		Prefix:    k.Prefix,
		Scopes:    k.Scopes,
		Created:   newWhen(&k.CreatedAt, now),
		LastUsed:  newWhen(k.LastUsedAt, now),
		Expires:   newWhen(k.ExpiresAt, now),
		RevokeURL: h.base + "/keys/" + url.PathEscape(k.ID) + "/revoke",
		PageURL:   h.base + "/keys/" + url.PathEscape(k.ID),
		EditURL:   h.base + "/keys/" + url.PathEscape(k.ID) + "/edit",
		RollURL:   h.base + "/keys/" + url.PathEscape(k.ID) + "/roll",
		Rolling:   k.ReplacedBy != "",
	}
	v.Expired = v.Expires.Set && v.Expires.Past
	var ips []string
	for _, p := range k.AllowedIPs {
		ips = append(ips, p.String())
	}
	v.AllowedIPs = strings.Join(ips, ", ")
	if k.RateLimit != nil {
		v.RateLimit = rateText(k.RateLimit)
	}
	return v
}

// keysPage is the console's home page.
type keysPage struct {
	Keys    []keyView
	Scopes  []scope.Info
	BaseURL string
	NewURL  string
	Revoked *keyView
	Updated *keyView
	Quota   *quotaView
}

func (h *Handler) keysPage(w http.ResponseWriter, r *http.Request, rq *request) {
	ks, err := h.cfg.Keys.List(r.Context(), rq.account)
	if err != nil {
		h.storeFailed(w, r, false, "list keys", err)
		return
	}
	p := keysPage{Scopes: scope.All, BaseURL: h.baseURL(r), NewURL: h.base + "/new"}
	for _, k := range ks {
		p.Keys = append(p.Keys, h.view(k))
	}
	// After a revocation the list says which key went, if it was this
	// account's and is revoked indeed (the id in the URL is not trusted).
	if id := r.URL.Query().Get("revoked"); id != "" && len(id) <= 100 {
		if k, err := h.cfg.Keys.Get(r.Context(), rq.account, id); err == nil && k.RevokedAt != nil {
			v := h.view(k)
			p.Revoked = &v
		}
	}
	if id := r.URL.Query().Get("updated"); id != "" && len(id) <= 100 {
		if k, err := h.cfg.Keys.Store.GetKey(r.Context(), rq.account, id); err == nil && k.RevokedAt == nil {
			v := h.view(k)
			p.Updated = &v
		}
	}
	p.Quota = h.quota(r, rq)
	h.render(w, r, rq, http.StatusOK, "keys", p)
}

// Expiry choices of the create form.
const (
	expiryNever = "never"
	expiry30    = "30d"
	expiry90    = "90d"
	expiryDate  = "date"
)

// newPage is the create form, empty or with what the user typed and what
// was wrong with it.
type newPage struct {
	Action     string
	Cancel     string
	FormID     string
	Name       string
	Scopes     []scopeOption
	Expiry     string
	ExpiryDate string
	MinDate    string
	MaxNameLen int
	Errors     map[string]string
	FirstError string // the field to focus
	// Routes are the API's routes, marked with what the checked scopes
	// open (all of them when none is checked: full access).
	Routes     []routeView
	OpenCount  int
	AnyChecked bool
	Presets    []presetView
}

type scopeOption struct {
	scope.Info
	ID      string
	Checked bool
}

func (h *Handler) newForm() newPage {
	p := newPage{
		Action:     h.base + "/new",
		Cancel:     h.home,
		FormID:     newFormID(),
		Expiry:     expiryNever,
		MinDate:    h.cfg.Now().UTC().Format(time.DateOnly),
		MaxNameLen: keys.MaxNameLen,
	}
	for _, s := range scope.All {
		p.Scopes = append(p.Scopes, scopeOption{Info: s, ID: "scope-" + strings.ReplaceAll(s.Name, ":", "-")})
	}
	p.Presets = h.presetViews("new")
	p.markRoutes(h)
	return p
}

// newFormFor is the empty create form with the boxes of a preset
// (?preset=read-only) or of a list (?scopes=a&scopes=b, from the
// explorer's filter) checked.
func (h *Handler) newFormFor(q url.Values) newPage {
	p := h.newForm()
	picked := q["scopes"]
	if pr, ok := findPreset(q.Get("preset")); ok {
		picked = pr.Scopes
	}
	if _, known := filterSet(picked); len(known) > 0 {
		for i := range p.Scopes {
			p.Scopes[i].Checked = slices.Contains(known, p.Scopes[i].Name)
		}
		p.markRoutes(h)
	}
	return p
}

// markRoutes marks the routes that the checked scopes open.
func (p *newPage) markRoutes(h *Handler) {
	var names []string
	for _, s := range p.Scopes {
		if s.Checked {
			names = append(names, s.Name)
		}
	}
	set, known := filterSet(names)
	p.AnyChecked = len(known) > 0
	p.Routes, p.OpenCount = nil, 0
	for i, r := range h.routes() {
		v := routeView{Index: i, Methods: r.Methods, Path: r.Path, Scope: r.Scope, FullOnly: r.Scope == scope.FullAccess, Description: r.Description, Open: set.Allows(r.Req())}
		if v.Open {
			p.OpenCount++
		}
		p.Routes = append(p.Routes, v)
	}
}

// newFormID identifies one rendering of the create form.
func newFormID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func validFormID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for _, c := range []byte(id) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// createdPage shows a new key's secret, the only time it is shown.
type createdPage struct {
	Key     keyView
	Secret  string
	BaseURL string
	Done    string
	// Rolled is set when the key replaces a rolled one; OldKeyEnds is
	// when the old key stops working (unset: it already has).
	Rolled     bool
	OldKeyEnds when
}

// readForm parses a URL-encoded form body of bounded size.
func readForm(w http.ResponseWriter, r *http.Request) *failure {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != "application/x-www-form-urlencoded" {
		return &failure{status: http.StatusUnsupportedMediaType, title: "Unsupported form", message: "Submit the form from the API Console page."}
	}
	r.Body = http.MaxBytesReader(w, r.Body, keys.MaxBodyBytes)
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &failure{status: http.StatusRequestEntityTooLarge, title: "Form too large", message: "The form sent more data than a key needs."}
		}
		return &failure{status: http.StatusBadRequest, title: "Bad form", message: "The form could not be read. Please try again."}
	}
	return nil
}

func (h *Handler) createFromForm(w http.ResponseWriter, r *http.Request, rq *request) {
	if f := readForm(w, r); f != nil {
		h.fail(w, r, false, *f)
		return
	}
	form := h.newForm()
	form.Name = r.PostForm.Get("name")
	form.Expiry = r.PostForm.Get("expires")
	form.ExpiryDate = strings.TrimSpace(r.PostForm.Get("expires_date"))
	if id := r.PostForm.Get("form_id"); validFormID(id) {
		form.FormID = id
	}
	picked := r.PostForm["scopes"]
	for i := range form.Scopes {
		for _, s := range picked {
			if s == form.Scopes[i].Name {
				form.Scopes[i].Checked = true
			}
		}
	}
	form.markRoutes(h)

	req := keys.CreateRequest{Name: form.Name, Scopes: picked}
	form.Errors = map[string]string{}
	exp, msg := parseExpiry(form.Expiry, form.ExpiryDate, h.cfg.Now())
	if msg != "" {
		form.Errors["expires_at"] = msg
	}
	req.ExpiresAt = exp
	// Each field is checked on its own, so that every mistake shows at once.
	for _, probe := range []keys.CreateRequest{{Name: req.Name}, {Name: "x", Scopes: req.Scopes}, {Name: "x", ExpiresAt: req.ExpiresAt}} {
		var fe *keys.FieldError
		if err := h.cfg.Keys.Validate(&probe); errors.As(err, &fe) {
			if _, ok := form.Errors[fe.Field]; !ok {
				form.Errors[fe.Field] = sentence(fe.Message)
			}
		}
	}
	if len(form.Errors) > 0 {
		h.renderFormErrors(w, r, rq, form)
		return
	}

	// The one-time page cannot be reached by a redirect (the key would be
	// in a URL), so reloading it posts the form again: the form id makes
	// sure that does not create a second key.
	formID := r.PostForm.Get("form_id")
	claimed := validFormID(formID)
	if claimed && !h.forms.claim(rq.account, formID, h.cfg.Now()) {
		h.render(w, r, rq, http.StatusConflict, "error", errorPage{
			Heading: "This key was already created",
			Message: "This form was submitted before, and the key it created was shown once. If you did not copy it, revoke that key and create a new one.",
			Back:    true,
		})
		return
	}
	created, err := h.cfg.Keys.Create(r.Context(), rq.actor, rq.account, req)
	if err != nil {
		if claimed {
			h.forms.release(rq.account, formID)
		}
		var fe *keys.FieldError
		if errors.As(err, &fe) {
			form.Errors[fe.Field] = sentence(fe.Message)
			h.renderFormErrors(w, r, rq, form)
			return
		}
		h.storeFailed(w, r, false, "create key", err)
		return
	}
	// The secret is in this response body only: never in a URL or a log.
	h.render(w, r, rq, http.StatusOK, "created", createdPage{
		Key: h.view(created.Key), Secret: created.Secret, BaseURL: h.baseURL(r), Done: h.home,
	})
}

func (h *Handler) renderFormErrors(w http.ResponseWriter, r *http.Request, rq *request, form newPage) {
	for _, f := range []string{"name", "scopes", "expires_at"} {
		if _, ok := form.Errors[f]; ok {
			form.FirstError = f
			break
		}
	}
	h.render(w, r, rq, http.StatusBadRequest, "new", form)
}

// parseExpiry reads the form's expiry choice. A date means the end of that
// day in UTC.
func parseExpiry(choice, date string, now time.Time) (*time.Time, string) {
	var t time.Time
	switch choice {
	case "", expiryNever:
		return nil, ""
	case expiry30:
		t = now.Add(30 * 24 * time.Hour)
	case expiry90:
		t = now.Add(90 * 24 * time.Hour)
	case expiryDate:
		if date == "" {
			return nil, "Pick the date on which the key should stop working."
		}
		d, err := time.Parse(time.DateOnly, date)
		if err != nil {
			return nil, "Enter the date as YYYY-MM-DD."
		}
		t = d.Add(24 * time.Hour)
		if !t.After(now) {
			return nil, "The expiry date must be today or later."
		}
	default:
		return nil, "Choose when the key expires."
	}
	return &t, ""
}

// sentence turns a validation message into one for the page: "name is
// required" → "Name is required."
func sentence(s string) string {
	if s == "" {
		return s
	}
	r, n := utf8.DecodeRuneInString(s)
	s = string(unicode.ToUpper(r)) + s[n:]
	if !strings.HasSuffix(s, ".") && !strings.HasSuffix(s, ")") {
		s += "."
	}
	return s
}

// revokePage asks to confirm a revocation.
type revokePage struct {
	Key    keyView
	Action string
	Cancel string
}

func (h *Handler) revokePage(w http.ResponseWriter, r *http.Request, rq *request, id string) {
	k, err := h.cfg.Keys.Get(r.Context(), rq.account, id)
	if errors.Is(err, keystore.ErrNotFound) || err == nil && k.RevokedAt != nil {
		h.keyGone(w, r, rq)
		return
	}
	if err != nil {
		h.storeFailed(w, r, false, "get key", err)
		return
	}
	h.render(w, r, rq, http.StatusOK, "revoke", revokePage{
		Key:    h.view(k),
		Action: h.base + "/keys/" + url.PathEscape(k.ID) + "/revoke",
		Cancel: h.home,
	})
}

func (h *Handler) revokeFromForm(w http.ResponseWriter, r *http.Request, rq *request, id string) {
	if f := readForm(w, r); f != nil {
		h.fail(w, r, false, *f)
		return
	}
	k, err := h.cfg.Keys.Revoke(r.Context(), rq.actor, rq.account, id)
	if errors.Is(err, keystore.ErrNotFound) {
		h.keyGone(w, r, rq)
		return
	}
	if err != nil {
		h.storeFailed(w, r, false, "revoke key", err)
		return
	}
	http.Redirect(w, r, h.home+"?revoked="+url.QueryEscape(k.ID), http.StatusSeeOther)
}

func (h *Handler) keyGone(w http.ResponseWriter, r *http.Request, rq *request) {
	h.render(w, r, rq, http.StatusNotFound, "error", errorPage{
		Heading: "Key not found",
		Message: "This key does not exist or has already been revoked.",
		Back:    true,
	})
}

// errorPage is any page that says something went wrong.
type errorPage struct {
	Heading string
	Message string
	Back    bool
}
