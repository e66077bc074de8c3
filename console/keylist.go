package console

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/scope"
)

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
