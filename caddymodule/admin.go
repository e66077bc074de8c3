package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"

	"github.com/spkgate/spkgate/keys"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI adds key management to Caddy's admin endpoint:
//
//	POST   /spk/accounts/{account}/keys   {"name","scopes","expires_at"?} → 201, the key once
//	GET    /spk/accounts/{account}/keys   → {"keys":[...]}
//	DELETE /spk/accounts/{account}/keys   → {"revoked":n}, every key of the account in one transaction
//	DELETE /spk/keys/{id}                 → 204
//	PUT    /spk/accounts/{account}/plan   {"plan":"pro"} → 204
//	GET    /spk/accounts/{account}/plan   → {"plan":"pro"}
//	GET    /spk/keys/{id}/usage, GET /spk/accounts/{account}/usage (see UsageResponse)
//	PATCH  /spk/keys/{id}                 edit; POST /spk/keys/{id}/roll; GET /spk/accounts/{account}/events
//	                                      (see addLifecycleRoutes)
//
// Bodies must be sent as application/json (a browser cannot send that
// cross-site without a CORS preflight, which the admin endpoint refuses).
// It acts on the store of the running spk app. The admin endpoint is for
// operators and billing systems: it is not scoped to one account.
type adminAPI struct {
	mux *http.ServeMux
}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.spk",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Provision builds the routes.
func (a *adminAPI) Provision(caddy.Context) error {
	a.mux = http.NewServeMux()
	a.mux.HandleFunc("POST /spk/accounts/{account}/keys", withManager(func(m *keys.Manager, w http.ResponseWriter, r *http.Request) {
		if !keys.RequireJSON(w, r) {
			return
		}
		var req keys.CreateRequest
		if err := keys.DecodeJSON(w, r, &req); err != nil {
			keys.WriteError(w, err)
			return
		}
		k, err := m.Create(r.Context(), adminActor(r), r.PathValue("account"), req)
		if err != nil {
			keys.WriteError(w, err)
			return
		}
		keys.WriteJSON(w, http.StatusCreated, k)
	}))
	a.mux.HandleFunc("GET /spk/accounts/{account}/keys", withManager(func(m *keys.Manager, w http.ResponseWriter, r *http.Request) {
		ks, err := m.List(r.Context(), r.PathValue("account"))
		if err != nil {
			keys.WriteError(w, err)
			return
		}
		keys.WriteJSON(w, http.StatusOK, keys.ListResponse{Keys: ks})
	}))
	a.mux.HandleFunc("DELETE /spk/accounts/{account}/keys", withManager(func(m *keys.Manager, w http.ResponseWriter, r *http.Request) {
		n, err := m.RevokeAccount(r.Context(), adminActor(r), r.PathValue("account"))
		if err != nil {
			keys.WriteError(w, err)
			return
		}
		keys.WriteJSON(w, http.StatusOK, keys.RevokedResponse{Revoked: n})
	}))
	a.mux.HandleFunc("DELETE /spk/keys/{id}", withManager(func(m *keys.Manager, w http.ResponseWriter, r *http.Request) {
		if _, err := m.Revoke(r.Context(), adminActor(r), "", r.PathValue("id")); err != nil {
			keys.WriteError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	a.mux.HandleFunc("PUT /spk/accounts/{account}/plan", withManager(func(m *keys.Manager, w http.ResponseWriter, r *http.Request) {
		if !keys.RequireJSON(w, r) {
			return
		}
		var req keys.PlanRequest
		if err := keys.DecodeJSON(w, r, &req); err != nil {
			keys.WriteError(w, err)
			return
		}
		if err := m.SetPlan(r.Context(), adminActor(r), r.PathValue("account"), req.Plan); err != nil {
			keys.WriteError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	a.mux.HandleFunc("GET /spk/accounts/{account}/plan", withManager(func(m *keys.Manager, w http.ResponseWriter, r *http.Request) {
		plan, err := m.Plan(r.Context(), r.PathValue("account"))
		if err != nil {
			keys.WriteError(w, err)
			return
		}
		keys.WriteJSON(w, http.StatusOK, keys.PlanRequest{Plan: plan})
	}))
	a.usageRoutes() // admin_usage.go
	a.addLifecycleRoutes()
	return nil
}

func withManager(f func(*keys.Manager, http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		app := running.Load()
		if app == nil {
			keys.WriteJSON(w, http.StatusServiceUnavailable, keys.ErrorResponse{Error: "unavailable", Message: "the spk app is not running: add the spk global option or an spk_auth handler to the config"})
			return
		}
		f(app.Keys(), w, r)
	}
}

// Routes returns the admin routes.
func (a *adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: "/spk/",
		Handler: caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			a.mux.ServeHTTP(w, r)
			return nil
		}),
	}}
}

// Interface guards
var (
	_ caddy.AdminRouter = (*adminAPI)(nil)
	_ caddy.Provisioner = (*adminAPI)(nil)
)
