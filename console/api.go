package console

import (
	"errors"
	"net/http"
	"strings"

	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/scope"
)

// ScopesResponse is the body of GET <base>/api/scopes.
type ScopesResponse struct {
	Scopes []scope.Info `json:"scopes"`
}

// InfoResponse is the body of GET <base>/api/info.
type InfoResponse struct {
	// BaseURL is the API base URL, e.g. https://api.example.com/v1.
	BaseURL string `json:"base_url"`
	// Plan is the account's plan ("" if none is known).
	Plan string `json:"plan"`
	// APIAccess reports whether the plan includes API access.
	APIAccess bool `json:"api_access"`
	// UpgradeURL is where to upgrade, when the plan has no API access.
	UpgradeURL string `json:"upgrade_url,omitempty"`
}

// UpgradeResponse is the 403 body for a plan without API access: the same
// shape as spk_auth's.
type UpgradeResponse struct {
	Error      string `json:"error"`
	Message    string `json:"message"`
	UpgradeURL string `json:"upgrade_url"`
}

// serveAPI serves the JSON API; rel is the path below <base>/api.
//
//	GET    keys       → 200 {"keys":[...]}
//	POST   keys       {"name","scopes","expires_at"?} → 201 with "key", once
//	DELETE keys/{id}  → 204; 404 for another account's or an unknown id
//	PATCH keys/{id}, POST keys/{id}/roll, GET keys/{id}/usage: see apiKey
//	GET    usage      → 200 {"usage":[...],"quota"?} for the account
//	GET    events     ?limit=&before= → 200 {"events":[...]}, newest first
//	GET    scopes     → 200 {"scopes":[{"name","description"}...]}
//	GET    info       → 200 {"base_url","plan","api_access"}
//	GET    routes     → 200 {"routes":[{"methods","path","scope","description"}...]}
//	                    (?scopes=a,b: only the routes those scopes open)
func (h *Handler) serveAPI(w http.ResponseWriter, r *http.Request, rel string, rq *request) {
	get := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case rel == "/keys":
		switch {
		case get:
			if h.apiUpgradeFirst(w, rq) {
				return
			}
			ks, err := h.cfg.Keys.List(r.Context(), rq.account)
			if err != nil {
				h.storeFailed(w, r, true, "list keys", err)
				return
			}
			keys.WriteJSON(w, http.StatusOK, keys.ListResponse{Keys: ks})
		case r.Method == http.MethodPost:
			if h.apiUpgradeFirst(w, rq) {
				return
			}
			h.apiCreate(w, r, rq)
		default:
			h.methodNotAllowed(w, r, true, "GET, HEAD, POST")
		}
	case strings.HasPrefix(rel, "/keys/"):
		h.apiKey(w, r, rq, strings.TrimPrefix(rel, "/keys/"))
	case rel == "/events" || rel == "/usage":
		if !get {
			h.methodNotAllowed(w, r, true, "GET, HEAD")
			return
		}
		if h.apiUpgradeFirst(w, rq) {
			return
		}
		if rel == "/events" {
			h.apiEvents(w, r, rq)
			return
		}
		h.apiUsage(w, r, rq, "")
	case rel == "/scopes":
		if !get {
			h.methodNotAllowed(w, r, true, "GET, HEAD")
			return
		}
		keys.WriteJSON(w, http.StatusOK, ScopesResponse{Scopes: scope.All})
	case rel == "/routes":
		if !get {
			h.methodNotAllowed(w, r, true, "GET, HEAD")
			return
		}
		routes := h.routes()
		if set, known := filterSet(r.URL.Query()["scopes"]); len(known) > 0 {
			routes = nil
			for _, rt := range h.routes() {
				if set.Allows(rt.Req()) {
					routes = append(routes, rt)
				}
			}
		}
		if routes == nil {
			routes = []scope.Route{}
		}
		keys.WriteJSON(w, http.StatusOK, RoutesResponse{Routes: routes})
	case rel == "/info":
		if !get {
			h.methodNotAllowed(w, r, true, "GET, HEAD")
			return
		}
		info := InfoResponse{BaseURL: h.baseURL(r), Plan: rq.plan, APIAccess: rq.access}
		if !rq.access {
			info.UpgradeURL = h.cfg.UpgradeURL
		}
		keys.WriteJSON(w, http.StatusOK, info)
	default:
		h.notFound(w, r, true)
	}
}

// apiUpgradeFirst answers 403 plan_upgrade_required, and reports so, when
// the plan has no API access.
func (h *Handler) apiUpgradeFirst(w http.ResponseWriter, rq *request) bool {
	if rq.access {
		return false
	}
	keys.WriteJSON(w, http.StatusForbidden, UpgradeResponse{
		Error:      "plan_upgrade_required",
		Message:    "API access needs a Pro plan or above",
		UpgradeURL: h.cfg.UpgradeURL,
	})
	return true
}

func (h *Handler) apiCreate(w http.ResponseWriter, r *http.Request, rq *request) {
	// A JSON body cannot come from a plain HTML form of another site; this
	// backs up the cross-origin check for browsers that send neither
	// Sec-Fetch-Site nor Origin.
	if !keys.RequireJSON(w, r) {
		return
	}
	var req keys.CreateRequest
	if err := keys.DecodeJSON(w, r, &req); err != nil {
		keys.WriteError(w, err)
		return
	}
	created, err := h.cfg.Keys.Create(r.Context(), rq.actor, rq.account, req)
	if err != nil {
		var fe *keys.FieldError
		if errors.As(err, &fe) {
			keys.WriteError(w, err)
			return
		}
		h.storeFailed(w, r, true, "create key", err)
		return
	}
	keys.WriteJSON(w, http.StatusCreated, created)
}
