package console

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
)

// UsageResponse is the body of GET <base>/api/keys/{id}/usage and
// GET <base>/api/usage: the admin API's shape. Quota is set (account
// usage only) where a quota applies.
type UsageResponse struct {
	Usage []keystore.UsageCount `json:"usage"`
	Quota *QuotaStatus          `json:"quota,omitempty"`
}

// apiKey serves <base>/api/keys/{id} and below; rest is the path after
// "/keys/".
//
//	DELETE keys/{id}        → 204
//	PATCH  keys/{id}        {"name"?,"scopes"?,"expires_at"?,"allowed_ips"?,"rate_limit"?} → 200 with the key
//	POST   keys/{id}/roll   {"grace":"24h"} → 201 with the new key, "key" shown once
//	GET    keys/{id}/usage  ?from=&to=&granularity=hour|day → 200 {"usage":[...]}
func (h *Handler) apiKey(w http.ResponseWriter, r *http.Request, rq *request, rest string) {
	id, sub, _ := strings.Cut(rest, "/")
	if id == "" || strings.Contains(sub, "/") {
		h.notFound(w, r, true)
		return
	}
	var allow string
	switch sub {
	case "":
		allow = "DELETE, PATCH"
		if r.Method != http.MethodDelete && r.Method != http.MethodPatch {
			h.methodNotAllowed(w, r, true, allow)
			return
		}
	case "roll":
		if r.Method != http.MethodPost {
			h.methodNotAllowed(w, r, true, "POST")
			return
		}
	case "usage":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.methodNotAllowed(w, r, true, "GET, HEAD")
			return
		}
	default:
		h.notFound(w, r, true)
		return
	}
	if h.apiUpgradeFirst(w, rq) {
		return
	}
	switch {
	case r.Method == http.MethodDelete:
		if _, err := h.cfg.Keys.Revoke(r.Context(), rq.actor, rq.account, id); err != nil {
			h.apiFailed(w, r, "revoke key", err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPatch:
		if !keys.RequireJSON(w, r) {
			return
		}
		var req keys.UpdateRequest
		if err := keys.DecodeJSON(w, r, &req); err != nil {
			keys.WriteError(w, err)
			return
		}
		k, err := h.cfg.Keys.Update(r.Context(), rq.actor, rq.account, id, req)
		if err != nil {
			h.apiFailed(w, r, "edit key", err)
			return
		}
		keys.WriteJSON(w, http.StatusOK, k)
	case sub == "roll":
		if !keys.RequireJSON(w, r) {
			return
		}
		var req keys.RollRequest
		if err := keys.DecodeJSON(w, r, &req); err != nil {
			keys.WriteError(w, err)
			return
		}
		rolled, err := h.cfg.Keys.Roll(r.Context(), rq.actor, rq.account, id, req)
		if err != nil {
			h.apiFailed(w, r, "roll key", err)
			return
		}
		keys.WriteJSON(w, http.StatusCreated, rolled)
	default:
		if _, err := h.cfg.Keys.Store.GetKey(r.Context(), rq.account, id); err != nil {
			h.apiFailed(w, r, "get key", err)
			return
		}
		h.apiUsage(w, r, rq, id)
	}
}

// apiFailed answers for an error of the keys service: field errors,
// not found and rolled keys as the admin API does, store failures as
// storeFailed.
func (h *Handler) apiFailed(w http.ResponseWriter, r *http.Request, op string, err error) {
	var fe *keys.FieldError
	if errors.As(err, &fe) || errors.Is(err, keystore.ErrNotFound) || errors.Is(err, keys.ErrRolled) {
		keys.WriteError(w, err)
		return
	}
	h.storeFailed(w, r, true, op, err)
}

// apiUsage answers the usage of one key (keyID) or of the account ("").
func (h *Handler) apiUsage(w http.ResponseWriter, r *http.Request, rq *request, keyID string) {
	us, ok := h.usageStore()
	if !ok {
		keys.WriteJSON(w, http.StatusNotImplemented, keys.ErrorResponse{Error: "not_implemented", Message: "this key store does not record usage"})
		return
	}
	qs := r.URL.Query()
	now := h.cfg.Now().UTC()
	to := now.Truncate(time.Hour).Add(time.Hour)
	from := to.AddDate(0, 0, -usageDays)
	for name, dst := range map[string]*time.Time{"from": &from, "to": &to} {
		if s := qs.Get(name); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				keys.WriteError(w, &keys.FieldError{Field: name, Message: name + " must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"})
				return
			}
			*dst = t.UTC()
		}
	}
	if !from.Before(to) || to.Sub(from) > keystore.UsageRetention {
		keys.WriteError(w, &keys.FieldError{Field: "from", Message: "from must be before to, at most 400 days apart"})
		return
	}
	gran := qs.Get("granularity")
	if gran != "" && gran != "hour" && gran != "day" {
		keys.WriteError(w, &keys.FieldError{Field: "granularity", Message: "granularity must be hour or day"})
		return
	}
	rows, err := us.Usage(r.Context(), keystore.UsageQuery{AccountID: rq.account, KeyID: keyID, From: from, To: to})
	if err != nil {
		h.storeFailed(w, r, true, "read usage", err)
		return
	}
	if gran == "day" {
		rows = byDay(rows)
	}
	if rows == nil {
		rows = []keystore.UsageCount{}
	}
	resp := UsageResponse{Usage: rows}
	if keyID == "" {
		if q := h.quota(r, rq); q != nil {
			resp.Quota = &q.QuotaStatus
		}
	}
	keys.WriteJSON(w, http.StatusOK, resp)
}

// byDay adds hourly rows (oldest first, then by key) into UTC days.
func byDay(rows []keystore.UsageCount) []keystore.UsageCount {
	var out []keystore.UsageCount
	idx := map[string]int{}
	for _, r := range rows {
		r.Hour = r.Hour.UTC().Truncate(24 * time.Hour)
		k := r.Hour.Format(time.DateOnly) + "\x00" + r.KeyID
		if i, ok := idx[k]; ok {
			out[i].Allowed += r.Allowed
			out[i].Forbidden += r.Forbidden
			out[i].Limited += r.Limited
			continue
		}
		idx[k] = len(out)
		out = append(out, r)
	}
	return out
}
