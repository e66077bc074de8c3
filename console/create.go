package console

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/scope"
)

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
