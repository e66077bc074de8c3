package caddymodule

import (
	"net/http"
	"os"
	"os/user"

	"github.com/spkgate/spkgate/keys"
)

// adminActor is the actor of a change made through Caddy's admin API:
// "admin", with the address the request came from (the admin endpoint
// has no trusted proxies).
func adminActor(r *http.Request) keys.Actor {
	return keys.RequestActor(r, "admin", keys.SourceAdminAPI, "")
}

// cliActor is the actor of a change made by `caddy spk`: the OS user.
func cliActor() keys.Actor {
	name := ""
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if name == "" {
		name = os.Getenv("USER")
	}
	if name == "" {
		name = "unknown"
	}
	return keys.Actor{Name: name, Source: keys.SourceCLI}
}

// addLifecycleRoutes adds the key lifecycle to the admin API:
//
//	PATCH /spk/keys/{id}                   any of {"name","scopes","expires_at","allowed_ips","rate_limit"} → 200, the key
//	POST  /spk/keys/{id}/roll              {"grace":"24h"} (0 to 7 days) → 201, the new key once
//	GET   /spk/accounts/{account}/events   ?limit=&before= → {"events":[...]}, newest first
//
// Changes are recorded with the actor "admin" and the source admin_api.
func (a *adminAPI) addLifecycleRoutes() {
	a.mux.HandleFunc("PATCH /spk/keys/{id}", withManager(func(m *keys.Manager, w http.ResponseWriter, r *http.Request) {
		if !keys.RequireJSON(w, r) {
			return
		}
		var req keys.UpdateRequest
		if err := keys.DecodeJSON(w, r, &req); err != nil {
			keys.WriteError(w, err)
			return
		}
		k, err := m.Update(r.Context(), adminActor(r), "", r.PathValue("id"), req)
		if err != nil {
			keys.WriteError(w, err)
			return
		}
		keys.WriteJSON(w, http.StatusOK, k)
	}))
	a.mux.HandleFunc("POST /spk/keys/{id}/roll", withManager(func(m *keys.Manager, w http.ResponseWriter, r *http.Request) {
		if !keys.RequireJSON(w, r) {
			return
		}
		var req keys.RollRequest
		if err := keys.DecodeJSON(w, r, &req); err != nil {
			keys.WriteError(w, err)
			return
		}
		rolled, err := m.Roll(r.Context(), adminActor(r), "", r.PathValue("id"), req)
		if err != nil {
			keys.WriteError(w, err)
			return
		}
		keys.WriteJSON(w, http.StatusCreated, rolled)
	}))
	a.mux.HandleFunc("GET /spk/accounts/{account}/events", withManager(func(m *keys.Manager, w http.ResponseWriter, r *http.Request) {
		q, err := keys.ParseEventQuery(r)
		if err != nil {
			keys.WriteError(w, err)
			return
		}
		evs, err := m.Events(r.Context(), r.PathValue("account"), q)
		if err != nil {
			keys.WriteError(w, err)
			return
		}
		keys.WriteJSON(w, http.StatusOK, keys.EventsResponse{Events: evs})
	}))
}
