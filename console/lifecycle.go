package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/scope"
)

// This file is a key's own pages: its usage (the key page), edit (a form,
// then a confirmation page) and roll (a confirmation page with the grace
// choice). Every step is a plain form POST, so all of it works without
// JavaScript.

// Grace choices of the roll page, in the order shown.
var graceChoices = []struct{ Value, Label, Hint string }{
	{"0s", "Now", "The old key stops working at once."},
	{"1h", "In 1 hour", "Time to swap the key in one place."},
	{"24h", "In 24 hours", "Time to deploy the new key everywhere."},
	{"168h", "In 7 days", "The longest grace period."},
}

const defaultGrace = "24h"

// Rate windows offered for a key's own rate limit.
var rateWindows = []struct{ Value, Label string }{{"1s", "per second"}, {"1m", "per minute"}, {"1h", "per hour"}}

// expiryKeep is the edit form's choice that leaves the expiry as it is.
const expiryKeep = "keep"

// serveKeyPages serves <base>/keys/{id} (the key and its usage),
// <base>/keys/{id}/edit and <base>/keys/{id}/roll.
func (h *Handler) serveKeyPages(w http.ResponseWriter, r *http.Request, rq *request, rel string) {
	id, action, _ := strings.Cut(strings.TrimPrefix(rel, "/keys/"), "/")
	if id == "" || strings.Contains(action, "/") || len(id) > 100 {
		h.notFound(w, r, false)
		return
	}
	get := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch action {
	case "":
		if !get {
			h.methodNotAllowed(w, r, false, "GET, HEAD")
			return
		}
	case "edit", "roll":
		if !get && r.Method != http.MethodPost {
			h.methodNotAllowed(w, r, false, "GET, HEAD, POST")
			return
		}
	default:
		h.notFound(w, r, false)
		return
	}
	if h.upgradeFirst(w, r, rq) {
		return
	}
	k, err := h.cfg.Keys.Store.GetKey(r.Context(), rq.account, id)
	if errors.Is(err, keystore.ErrNotFound) || err == nil && (k.RevokedAt != nil || h.expired(k)) {
		h.keyGone(w, r, rq)
		return
	}
	if err != nil {
		h.storeFailed(w, r, false, "get key", err)
		return
	}
	switch {
	case action == "":
		h.keyPage(w, r, rq, k)
	case k.ReplacedBy != "":
		h.render(w, r, rq, http.StatusConflict, "error", errorPage{
			Heading: "This key was rolled",
			Message: "A new key replaced it; the old one only works until its grace period ends. Edit or roll the new key instead.",
			Back:    true,
		})
	case action == "edit" && get:
		form := h.editForm(k, nil)
		form.withPreset(h, r.URL.Query())
		h.render(w, r, rq, http.StatusOK, "edit", form)
	case action == "edit":
		h.editFromForm(w, r, rq, k)
	case get:
		h.render(w, r, rq, http.StatusOK, "roll", h.rollForm(k, defaultGrace, ""))
	default:
		h.rollFromForm(w, r, rq, k)
	}
}

func (h *Handler) expired(k keystore.Key) bool {
	return k.ExpiresAt != nil && !h.cfg.Now().Before(*k.ExpiresAt)
}

// editPage is the edit form: the create form's fields, prefilled, plus the
// key's restrictions.
type editPage struct {
	newPage
	Key          keyView
	AllowedIPs   string
	RateRequests string
	RateWindow   string
	RateWindows  []struct{ Value, Label string }
	Notice       string
}

// editForm is the form for k, or (values not nil) the form as posted.
func (h *Handler) editForm(k keystore.Key, values url.Values) editPage {
	p := editPage{newPage: h.newForm(), Key: h.view(k), RateWindows: rateWindows}
	p.Action = h.base + "/keys/" + url.PathEscape(k.ID) + "/edit"
	p.Errors = map[string]string{}
	if values == nil {
		p.Name = k.Name
		p.Expiry = expiryKeep
		for i := range p.Scopes {
			p.Scopes[i].Checked = slices.Contains(k.Scopes, p.Scopes[i].Name)
		}
		var ips []string
		for _, ip := range k.AllowedIPs {
			ips = append(ips, ip.String())
		}
		p.AllowedIPs = strings.Join(ips, "\n")
		p.RateWindow = "1s"
		if k.RateLimit != nil {
			p.RateRequests = strconv.Itoa(k.RateLimit.Requests)
			p.RateWindow = windowValue(k.RateLimit.Window)
		}
	} else {
		p.Name = values.Get("name")
		p.Expiry = values.Get("expires")
		p.ExpiryDate = strings.TrimSpace(values.Get("expires_date"))
		for i := range p.Scopes {
			p.Scopes[i].Checked = slices.Contains(values["scopes"], p.Scopes[i].Name)
		}
		p.AllowedIPs = values.Get("allowed_ips")
		p.RateRequests = strings.TrimSpace(values.Get("rate_requests"))
		p.RateWindow = values.Get("rate_window")
	}
	p.Presets = nil
	for _, pr := range Presets {
		p.Presets = append(p.Presets, presetView{Label: pr.Label, Scopes: strings.Join(pr.Scopes, " "),
			URL: p.Action + "?preset=" + url.QueryEscape(pr.ID) + "#scopes"})
	}
	p.markRoutes(h)
	return p
}

// withPreset checks the boxes of the preset that ?preset= names, if any.
func (p *editPage) withPreset(h *Handler, q url.Values) {
	pr, ok := findPreset(q.Get("preset"))
	if !ok {
		return
	}
	for i := range p.Scopes {
		p.Scopes[i].Checked = slices.Contains(pr.Scopes, p.Scopes[i].Name)
	}
	p.markRoutes(h)
}

// windowValue is a rate window as the form's select names it, or the Go
// duration when it is another.
func windowValue(d time.Duration) string {
	switch d {
	case time.Second:
		return "1s"
	case time.Minute:
		return "1m"
	case time.Hour:
		return "1h"
	}
	return d.String()
}

// change is one line of the edit confirmation: a field, its value now and
// after the edit.
type change struct {
	Field, From, To string
}

// editConfirmPage asks to confirm an edit. The form carries the posted
// values again, so nothing is kept on the server between the steps.
type editConfirmPage struct {
	Key     keyView
	Action  string
	Cancel  string
	Changes []change
	Hidden  []hiddenField
}

type hiddenField struct{ Name, Value string }

// parseEdit reads an edit form into an UpdateRequest, with the mistakes
// by field (every field checked on its own, so all show at once).
func (h *Handler) parseEdit(values url.Values, k keystore.Key) (keys.UpdateRequest, map[string]string) {
	var req keys.UpdateRequest
	errs := map[string]string{}
	name := values.Get("name")
	req.Name = keys.Some(name)
	picked := values["scopes"]
	req.Scopes = keys.Some(picked)
	var exp *time.Time
	switch choice := values.Get("expires"); choice {
	case expiryKeep, "":
	case expiryNever:
		req.ExpiresAt = keys.Clear[time.Time]()
	default:
		t, msg := parseExpiry(choice, strings.TrimSpace(values.Get("expires_date")), h.cfg.Now())
		if msg != "" {
			errs["expires_at"] = msg
		} else if t != nil {
			exp = t
			req.ExpiresAt = keys.Some(*t)
		}
	}
	for _, probe := range []keys.CreateRequest{{Name: name}, {Name: "x", Scopes: picked}, {Name: "x", ExpiresAt: exp}} {
		var fe *keys.FieldError
		if err := h.cfg.Keys.Validate(&probe); errors.As(err, &fe) {
			if _, ok := errs[fe.Field]; !ok {
				errs[fe.Field] = sentence(fe.Message)
			}
		}
	}
	var ips []string
	for line := range strings.SplitSeq(values.Get("allowed_ips"), "\n") {
		for f := range strings.FieldsSeq(strings.ReplaceAll(line, ",", " ")) {
			ips = append(ips, f)
		}
	}
	if _, err := keys.ParseAllowedIPs(ips); err != nil {
		errs["allowed_ips"] = fieldMessage(err)
	} else if len(ips) > 0 {
		req.AllowedIPs = keys.Some(ips)
	} else if len(k.AllowedIPs) > 0 {
		req.AllowedIPs = keys.Clear[[]string]()
	}
	if n := strings.TrimSpace(values.Get("rate_requests")); n != "" {
		requests, err := strconv.Atoi(n)
		spec := keys.RateLimitSpec{Requests: requests, Window: values.Get("rate_window")}
		if err != nil {
			errs["rate_limit"] = "Enter the number of requests as a whole number, or leave it empty for no limit of the key's own."
		} else if _, err := keys.ParseRateLimit(spec); err != nil {
			errs["rate_limit"] = fieldMessage(err)
		} else {
			req.RateLimit = keys.Some(spec)
		}
	} else if k.RateLimit != nil {
		req.RateLimit = keys.Clear[keys.RateLimitSpec]()
	}
	return req, errs
}

func fieldMessage(err error) string {
	var fe *keys.FieldError
	if errors.As(err, &fe) {
		return sentence(fe.Message)
	}
	return sentence(err.Error())
}

// changes lists what req changes on k, for the confirmation page.
func (h *Handler) changes(k keystore.Key, req keys.UpdateRequest) []change {
	var out []change
	if req.Name.Set && req.Name.Value != k.Name {
		out = append(out, change{"Name", k.Name, req.Name.Value})
	}
	if req.Scopes.Set {
		now, _ := scope.Normalize(k.Scopes)
		after, _ := scope.Normalize(req.Scopes.Value)
		if !slices.Equal(now, after) {
			out = append(out, change{"Scopes", scopesText(now), scopesText(after)})
		}
	}
	if req.ExpiresAt.Set {
		from := "Never"
		if k.ExpiresAt != nil {
			from = newWhen(k.ExpiresAt, h.cfg.Now()).Exact
		}
		to := "Never"
		if !req.ExpiresAt.Null {
			t := req.ExpiresAt.Value
			to = newWhen(&t, h.cfg.Now()).Exact
		}
		if from != to {
			out = append(out, change{"Expires", from, to})
		}
	}
	if req.AllowedIPs.Set {
		var now []string
		for _, p := range k.AllowedIPs {
			now = append(now, p.String())
		}
		after, _ := keys.ParseAllowedIPs(req.AllowedIPs.Value)
		var to []string
		for _, p := range after {
			to = append(to, p.String())
		}
		if !slices.Equal(now, to) {
			out = append(out, change{"Allowed IPs", ipsText(now), ipsText(to)})
		}
	}
	if req.RateLimit.Set {
		from, to := rateText(k.RateLimit), "None of its own"
		if !req.RateLimit.Null {
			rl, _ := keys.ParseRateLimit(req.RateLimit.Value)
			to = rateText(&rl)
		}
		if from != to {
			out = append(out, change{"Own rate limit", from, to})
		}
	}
	return out
}

func scopesText(s []string) string {
	if len(s) == 0 {
		return "Full access"
	}
	return strings.Join(s, ", ")
}

func ipsText(s []string) string {
	if len(s) == 0 {
		return "Any address"
	}
	return strings.Join(s, ", ")
}

func rateText(r *keystore.RateLimit) string {
	if r == nil {
		return "None of its own"
	}
	for _, w := range rateWindows {
		if windowValue(r.Window) == w.Value {
			return fmt.Sprintf("%d requests %s", r.Requests, w.Label)
		}
	}
	return fmt.Sprintf("%d requests per %v", r.Requests, r.Window)
}

func (h *Handler) editFromForm(w http.ResponseWriter, r *http.Request, rq *request, k keystore.Key) {
	if f := readForm(w, r); f != nil {
		h.fail(w, r, false, *f)
		return
	}
	values := r.PostForm
	form := h.editForm(k, values)
	req, errs := h.parseEdit(values, k)
	if len(errs) > 0 || values.Get("confirm") == "back" {
		form.Errors = errs
		status := http.StatusOK
		if len(errs) > 0 {
			status = http.StatusBadRequest
			for _, f := range []string{"name", "scopes", "expires_at", "allowed_ips", "rate_limit"} {
				if _, ok := errs[f]; ok {
					form.FirstError = f
					break
				}
			}
		}
		h.render(w, r, rq, status, "edit", form)
		return
	}
	changes := h.changes(k, req)
	if len(changes) == 0 {
		form.Notice = "Nothing changed: the key is as it was."
		h.render(w, r, rq, http.StatusOK, "edit", form)
		return
	}
	if values.Get("confirm") != "yes" {
		p := editConfirmPage{Key: h.view(k), Action: form.Action, Cancel: h.home, Changes: changes}
		for _, name := range []string{"name", "expires", "expires_date", "allowed_ips", "rate_requests", "rate_window"} {
			p.Hidden = append(p.Hidden, hiddenField{name, values.Get(name)})
		}
		for _, s := range values["scopes"] {
			p.Hidden = append(p.Hidden, hiddenField{"scopes", s})
		}
		h.render(w, r, rq, http.StatusOK, "editconfirm", p)
		return
	}
	if _, err := h.cfg.Keys.Update(r.Context(), rq.actor, rq.account, k.ID, req); err != nil {
		var fe *keys.FieldError
		switch {
		case errors.As(err, &fe):
			form.Errors = map[string]string{fe.Field: sentence(fe.Message)}
			form.FirstError = fe.Field
			h.render(w, r, rq, http.StatusBadRequest, "edit", form)
		case errors.Is(err, keys.ErrRolled), errors.Is(err, keystore.ErrNotFound):
			h.keyGone(w, r, rq)
		default:
			h.storeFailed(w, r, false, "edit key", err)
		}
		return
	}
	http.Redirect(w, r, h.home+"?updated="+url.QueryEscape(k.ID), http.StatusSeeOther)
}

// rollPage asks to confirm a roll, with the grace period to choose.
type rollPage struct {
	Key     keyView
	Action  string
	Cancel  string
	FormID  string
	Grace   string
	Choices []graceOption
	Error   string
}

type graceOption struct {
	ID, Value, Label, Hint string
	Checked                bool
}

func (h *Handler) rollForm(k keystore.Key, grace, msg string) rollPage {
	p := rollPage{
		Key: h.view(k), Action: h.base + "/keys/" + url.PathEscape(k.ID) + "/roll", Cancel: h.home,
		FormID: newFormID(), Grace: grace, Error: msg,
	}
	for i, c := range graceChoices {
		p.Choices = append(p.Choices, graceOption{ID: "grace-" + strconv.Itoa(i), Value: c.Value, Label: c.Label, Hint: c.Hint, Checked: c.Value == grace})
	}
	return p
}

func (h *Handler) rollFromForm(w http.ResponseWriter, r *http.Request, rq *request, k keystore.Key) {
	if f := readForm(w, r); f != nil {
		h.fail(w, r, false, *f)
		return
	}
	grace := r.PostForm.Get("grace")
	if !slices.ContainsFunc(graceChoices, func(c struct{ Value, Label, Hint string }) bool { return c.Value == grace }) {
		h.render(w, r, rq, http.StatusBadRequest, "roll", h.rollForm(k, defaultGrace, "Choose when the old key stops working."))
		return
	}
	// As for a new key, reloading the one-time page posts the form again:
	// the form id keeps that from rolling twice.
	formID := r.PostForm.Get("form_id")
	claimed := validFormID(formID)
	if claimed && !h.forms.claim(rq.account, formID, h.cfg.Now()) {
		h.render(w, r, rq, http.StatusConflict, "error", errorPage{
			Heading: "This key was already rolled",
			Message: "This form was submitted before, and the new key was shown once. If you did not copy it, roll the new key again.",
			Back:    true,
		})
		return
	}
	rolled, err := h.cfg.Keys.Roll(r.Context(), rq.actor, rq.account, k.ID, keys.RollRequest{Grace: grace})
	if err != nil {
		if claimed {
			h.forms.release(rq.account, formID)
		}
		var fe *keys.FieldError
		switch {
		case errors.As(err, &fe):
			h.render(w, r, rq, http.StatusBadRequest, "roll", h.rollForm(k, grace, sentence(fe.Message)))
		case errors.Is(err, keys.ErrRolled), errors.Is(err, keystore.ErrNotFound):
			h.keyGone(w, r, rq)
		default:
			h.storeFailed(w, r, false, "roll key", err)
		}
		return
	}
	p := createdPage{Key: h.view(rolled.Key), Secret: rolled.Secret, BaseURL: h.baseURL(r), Done: h.home, Rolled: true}
	end := rolled.OldKeyExpiresAt
	if !end.IsZero() && end.After(h.cfg.Now()) {
		p.OldKeyEnds = newWhen(&end, h.cfg.Now())
	}
	h.render(w, r, rq, http.StatusOK, "created", p)
}
