package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
)

// This file is the account's activity: its audit events, newest first,
// a page at a time.

// activityPageSize is how many events one page of the activity shows.
const activityPageSize = 25

// eventView is an audit event as the activity page shows it.
type eventView struct {
	At      when
	Action  string
	Key     string // name
	Prefix  string
	Details []string
	Actor   string
	Source  string
	IP      string
}

type activityPage struct {
	Events   []eventView
	OlderURL string
	NewerURL string
	First    bool
}

var actionText = map[keystore.Action]string{
	keystore.ActionKeyCreated:         "Created key",
	keystore.ActionKeyUpdated:         "Edited key",
	keystore.ActionKeyRolled:          "Rolled key",
	keystore.ActionKeyRevoked:         "Revoked key",
	keystore.ActionAccountKeysRevoked: "Revoked all keys",
	keystore.ActionAccountPlanChanged: "Plan changed",
}

var sourceText = map[string]string{
	keystore.SourceConsole:  "API Console",
	keystore.SourceAdminAPI: "admin API",
	keystore.SourceCLI:      "command line",
}

var fieldText = map[string]string{
	"name": "name", "scopes": "scopes", "expires_at": "expiry", "allowed_ips": "allowed IPs", "rate_limit": "own rate limit",
}

func (h *Handler) eventView(e keystore.Event) eventView {
	v := eventView{
		At: newWhen(&e.At, h.cfg.Now()), Action: actionText[e.Action], Key: e.KeyName, Prefix: e.KeyPrefix,
		Actor: e.Actor, Source: sourceText[e.Source], IP: e.IP,
	}
	if v.Action == "" {
		v.Action = string(e.Action)
	}
	if v.Source == "" {
		v.Source = e.Source
	}
	var d map[string]json.RawMessage
	_ = json.Unmarshal(e.Details, &d)
	switch e.Action {
	case keystore.ActionKeyUpdated:
		var fields []string
		for f := range d {
			if t, ok := fieldText[f]; ok {
				fields = append(fields, t)
			} else {
				fields = append(fields, f)
			}
		}
		slices.Sort(fields)
		if len(fields) > 0 {
			v.Details = append(v.Details, "Changed "+strings.Join(fields, ", "))
		}
	case keystore.ActionKeyRolled:
		var rd keystore.RollDetails
		if json.Unmarshal(e.Details, &rd) == nil && rd.NewKeyPrefix != "" {
			v.Details = append(v.Details, fmt.Sprintf("Replaced by %s…; the old key works until %s",
				rd.NewKeyPrefix, newWhen(&rd.OldKeyEndsAt, h.cfg.Now()).Exact))
		}
	case keystore.ActionAccountPlanChanged:
		var ft keystore.FromTo
		if json.Unmarshal(e.Details, &ft) == nil {
			v.Details = append(v.Details, fmt.Sprintf("From %q to %q", fmt.Sprint(ft.From), fmt.Sprint(ft.To)))
		}
	case keystore.ActionAccountKeysRevoked:
		var rd keystore.RevokedDetails
		if json.Unmarshal(e.Details, &rd) == nil {
			v.Details = append(v.Details, fmt.Sprintf("%d keys", rd.Revoked))
		}
	}
	return v
}

func (h *Handler) activityPage(w http.ResponseWriter, r *http.Request, rq *request) {
	q := keystore.EventQuery{Limit: activityPageSize + 1}
	if s := r.URL.Query().Get("before"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			h.fail(w, r, false, failure{status: http.StatusBadRequest, title: "Bad page", message: "That page of the activity does not exist."})
			return
		}
		q.Before = n
	}
	evs, err := h.cfg.Keys.Events(r.Context(), rq.account, q)
	if err != nil {
		h.storeFailed(w, r, false, "read events", err)
		return
	}
	p := activityPage{First: q.Before == 0}
	if len(evs) > activityPageSize {
		evs = evs[:activityPageSize]
		p.OlderURL = h.base + "/activity?before=" + url.QueryEscape(strconv.FormatInt(evs[len(evs)-1].ID, 10))
	}
	if !p.First {
		p.NewerURL = h.base + "/activity"
	}
	for _, e := range evs {
		p.Events = append(p.Events, h.eventView(e))
	}
	h.render(w, r, rq, http.StatusOK, "activity", p)
}

// apiEvents answers GET <base>/api/events?limit=&before= with the admin
// API's shape.
func (h *Handler) apiEvents(w http.ResponseWriter, r *http.Request, rq *request) {
	q, err := keys.ParseEventQuery(r)
	if err != nil {
		keys.WriteError(w, err)
		return
	}
	evs, err := h.cfg.Keys.Events(r.Context(), rq.account, q)
	if err != nil {
		var fe *keys.FieldError
		if errors.As(err, &fe) {
			keys.WriteError(w, err)
			return
		}
		h.storeFailed(w, r, true, "read events", err)
		return
	}
	if evs == nil {
		evs = []keystore.Event{}
	}
	keys.WriteJSON(w, http.StatusOK, keys.EventsResponse{Events: evs})
}
