package caddymodule

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/spkgate/spkgate/scope"
)

// response is a refusal, built once at start-up: the same bytes for every
// request that gets it, whatever the reason behind it.
type response struct {
	status  int
	reason  string // for debug logs only
	body    []byte
	wwwAuth []string
	length  []string
	extra   [][2]string
}

// Header values shared by every refusal. Each slice has len == cap, so a
// later Header.Add copies instead of writing into the shared array.
var (
	valJSON    = []string{"application/json"}
	valNoStore = []string{"no-store"}
	valNosniff = []string{"nosniff"}
)

func newResponse(status int, reason, wwwAuth string, body any, extra ...[2]string) response {
	b, err := json.Marshal(body)
	if err != nil {
		panic(err)
	}
	resp := response{status: status, reason: reason, body: b, length: []string{strconv.Itoa(len(b))}, extra: extra}
	if wwwAuth != "" {
		resp.wwwAuth = []string{wwwAuth}
	}
	return resp
}

func (resp *response) write(w http.ResponseWriter) error {
	hd := w.Header()
	hd["Content-Type"] = valJSON
	hd["Content-Length"] = resp.length
	hd["Cache-Control"] = valNoStore
	hd["X-Content-Type-Options"] = valNosniff
	if resp.wwwAuth != nil {
		hd["Www-Authenticate"] = resp.wwwAuth
	}
	for _, kv := range resp.extra {
		hd.Set(kv[0], kv[1])
	}
	w.WriteHeader(resp.status)
	_, err := w.Write(resp.body)
	return err
}

type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message,omitempty"`
}

var (
	respMissing = newResponse(http.StatusUnauthorized, "missing key", `Bearer realm="spk"`,
		errorBody{"unauthorized", "an API key is required: send Authorization: Bearer spk_... or X-API-Key: spk_..."})
	respInvalid = newResponse(http.StatusUnauthorized, "invalid key", `Bearer realm="spk", error="invalid_token"`,
		errorBody{"unauthorized", "the API key is invalid, expired or revoked"})
	respKeyInURL = newResponse(http.StatusBadRequest, "api key in the url", "",
		errorBody{"bad_request", "an API key must not appear in the URL, where logs keep it: send it in the Authorization or X-API-Key header"})
	respBadPath = newResponse(http.StatusBadRequest, "bad path", "",
		errorBody{"bad_request", scope.ErrBadPath.Error()})
	respUnavailable = newResponse(http.StatusServiceUnavailable, "store unavailable", "",
		errorBody{Error: "unavailable"}, [2]string{"Retry-After", "5"})
	respIPNotAllowed = newResponse(http.StatusForbidden, "client address not allowed", "",
		errorBody{"ip_not_allowed", "this API key cannot be used from your address"})
	respTooMany = newResponse(http.StatusTooManyRequests, "too many failed authentications", "",
		errorBody{"too_many_requests", "too many failed authentications from this address; retry after the time in Retry-After"})
	respScope = func() []response {
		r := make([]response, len(scope.All)+1)
		for i := range r {
			need := scope.Req(i).String()
			r[i] = newResponse(http.StatusForbidden, "insufficient scope",
				`Bearer realm="spk", error="insufficient_scope", scope="`+need+`"`,
				struct {
					Error         string `json:"error"`
					RequiredScope string `json:"required_scope"`
				}{"insufficient_scope", need})
		}
		return r
	}()
)

// planResponse is the 403 for an account whose plan has no API access,
// pointing to upgradeURL.
func planResponse(upgradeURL string) response {
	return newResponse(http.StatusForbidden, "plan without api access", "",
		struct {
			Error      string `json:"error"`
			Message    string `json:"message"`
			UpgradeURL string `json:"upgrade_url"`
		}{"plan_upgrade_required", "your plan does not include API access; upgrade to use the API", upgradeURL})
}

// DefaultUpgradeURL is where plan_upgrade_required points.
const DefaultUpgradeURL = "/billing/upgrade"

func insufficientScope(need scope.Req) *response { return &respScope[need] }
