package caddymodule

import (
	"errors"
	"net/http"

	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/limits"
)

// UsageResponse is the body of the usage endpoints:
//
//	GET /spk/keys/{id}/usage            ?from=&to= (RFC 3339) &granularity=hour|day
//	GET /spk/accounts/{account}/usage   the same, for all the account's keys
//
// Rows are per key per period, oldest first; periods without requests are
// absent. Counts reach the store at the usage flush interval (5 s by
// default), so the last seconds may be missing.
type UsageResponse struct {
	Usage []keystore.UsageCount `json:"usage"`
	// Quota is the account's quota and its use in the current period, when
	// the account's plan has one (account form only).
	Quota *limits.QuotaStatus `json:"quota,omitempty"`
}

// usageRoutes adds the usage endpoints to the admin API's mux.
func (a *adminAPI) usageRoutes() {
	a.mux.HandleFunc("GET /spk/keys/{id}/usage", withApp(func(app *App, w http.ResponseWriter, r *http.Request) {
		rng, ok := usageRange(w, r, app)
		if !ok {
			return
		}
		if _, err := app.shared.store.GetKey(r.Context(), "", r.PathValue("id")); err != nil {
			keys.WriteError(w, err)
			return
		}
		rows, err := limits.Usage(r.Context(), app.limits.st, keystore.UsageQuery{KeyID: r.PathValue("id")}, rng)
		if err != nil {
			keys.WriteError(w, err)
			return
		}
		keys.WriteJSON(w, http.StatusOK, UsageResponse{Usage: rows})
	}))
	a.mux.HandleFunc("GET /spk/accounts/{account}/usage", withApp(func(app *App, w http.ResponseWriter, r *http.Request) {
		account := r.PathValue("account")
		if err := keys.ValidateAccount(account); err != nil {
			keys.WriteError(w, err)
			return
		}
		rng, ok := usageRange(w, r, app)
		if !ok {
			return
		}
		resp, err := accountUsage(r, app, account, rng)
		if err != nil {
			keys.WriteError(w, err)
			return
		}
		keys.WriteJSON(w, http.StatusOK, resp)
	}))
}

// accountUsage is the account's usage over rng and, if its plan has one,
// its quota.
func accountUsage(r *http.Request, app *App, account string, rng limits.UsageRange) (UsageResponse, error) {
	rows, err := limits.Usage(r.Context(), app.limits.st, keystore.UsageQuery{AccountID: account}, rng)
	if err != nil {
		return UsageResponse{}, err
	}
	resp := UsageResponse{Usage: rows}
	plan, err := app.shared.store.GetPlan(r.Context(), account)
	if err != nil && !errors.Is(err, keystore.ErrNotFound) {
		return UsageResponse{}, err
	}
	q, ok, err := app.limits.lim.QuotaStatus(r.Context(), app.limits.st, account, plan)
	if err != nil {
		return UsageResponse{}, err
	}
	if ok {
		resp.Quota = &q
	}
	return resp, nil
}

// usageRange reads the query's range, or answers 400 with the field.
func usageRange(w http.ResponseWriter, r *http.Request, app *App) (limits.UsageRange, bool) {
	q := r.URL.Query()
	rng, err := limits.ParseUsageParams(limits.UsageParams{From: q.Get("from"), To: q.Get("to"), Granularity: q.Get("granularity")}, app.limits.lim.Now())
	if err != nil {
		var pe *limits.ParamError
		if errors.As(err, &pe) {
			err = &keys.FieldError{Field: pe.Field, Message: pe.Message}
		}
		keys.WriteError(w, err)
		return limits.UsageRange{}, false
	}
	return rng, true
}

// withApp hands the running app to f, or answers 503 when there is none.
func withApp(f func(*App, http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return withManager(func(_ *keys.Manager, w http.ResponseWriter, r *http.Request) {
		if app := running.Load(); app != nil {
			f(app, w, r)
			return
		}
		keys.WriteJSON(w, http.StatusServiceUnavailable, keys.ErrorResponse{Error: "unavailable"})
	})
}
