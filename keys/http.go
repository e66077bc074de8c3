package keys

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/spkgate/spkgate/keystore"
)

// The JSON shapes below are shared by the console API and Caddy's admin
// API, so that scripts can talk to either.

// ListResponse is the body of a key listing.
type ListResponse struct {
	// Keys are the account's active keys, newest first, never with a secret.
	Keys []keystore.Key `json:"keys"`
}

// RevokedResponse answers the revocation of all of an account's keys.
type RevokedResponse struct {
	// Revoked is how many keys were revoked.
	Revoked int `json:"revoked"`
}

// PlanRequest is the body that sets an account's plan.
type PlanRequest struct {
	// Plan is the plan's name, e.g. "pro".
	Plan string `json:"plan"`
}

// ErrorResponse is the body of every JSON error.
type ErrorResponse struct {
	// Error is a short machine-readable code, e.g. "invalid_request".
	Error string `json:"error"`
	// Message says what went wrong, for a person.
	Message string `json:"message,omitempty"`
	// Fields lists the request fields that were wrong.
	Fields []FieldError `json:"fields,omitempty"`
}

// MaxBodyBytes bounds a JSON request body.
const MaxBodyBytes = 64 << 10

// WriteJSON writes v as JSON with status. Responses are never cached and
// never sniffed.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v)
}

// WriteError writes err as a JSON error with the status it calls for:
// 400 for a FieldError or a bad body, 404 for keystore.ErrNotFound, 409 for
// keystore.ErrConflict and for a rolled key (keystore.ErrKeyRolled), 503 for keystore.ErrUnavailable, 500 otherwise (with
// a message that reveals nothing).
func WriteError(w http.ResponseWriter, err error) {
	var fe *FieldError
	var be *BodyError
	switch {
	case errors.As(err, &fe):
		WriteJSON(w, http.StatusBadRequest, ErrorResponse{Error: "invalid_request", Message: fe.Error(), Fields: []FieldError{*fe}})
	case errors.As(err, &be):
		WriteJSON(w, be.Status, ErrorResponse{Error: "invalid_request", Message: be.Message})
	case errors.Is(err, keystore.ErrKeyRolled):
		WriteJSON(w, http.StatusConflict, ErrorResponse{Error: "key_rolled", Message: "this key was rolled: edit or roll the key that replaced it"})
	case errors.Is(err, keystore.ErrNotFound):
		WriteJSON(w, http.StatusNotFound, ErrorResponse{Error: "not_found", Message: "no such key"})
	case errors.Is(err, keystore.ErrConflict):
		WriteJSON(w, http.StatusConflict, ErrorResponse{Error: "conflict", Message: "already exists"})
	case errors.Is(err, keystore.ErrUnavailable):
		w.Header().Set("Retry-After", "5")
		WriteJSON(w, http.StatusServiceUnavailable, ErrorResponse{Error: "unavailable", Message: "the key store cannot answer; try again"})
	default:
		WriteJSON(w, http.StatusInternalServerError, ErrorResponse{Error: "internal", Message: "internal error"})
	}
}

// BodyError is a request body that could not be read as the JSON expected.
type BodyError struct {
	// Status is the HTTP status to answer with (400, 413).
	Status int
	// Message says what was wrong with the body.
	Message string
}

// Error returns the message.
func (e *BodyError) Error() string { return e.Message }

// RequireJSON is a guard for handlers that read a JSON body: it reports
// whether the request declares its body as application/json, and answers
// 415 when it does not (the handler then returns). A JSON body cannot come
// from a plain HTML form of another site (that would need a CORS
// preflight), so requiring it keeps state-changing endpoints safe from
// cross-site form posts even where no Origin check runs.
func RequireJSON(w http.ResponseWriter, r *http.Request) bool {
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/json" {
		return true
	}
	WriteJSON(w, http.StatusUnsupportedMediaType, ErrorResponse{
		Error: "unsupported_media_type", Message: "send the body as application/json",
	})
	return false
}

// DecodeJSON reads a JSON body of at most MaxBodyBytes into v, refusing
// unknown fields and trailing data.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var (
			mbe *http.MaxBytesError
			fe  *FieldError
			ute *json.UnmarshalTypeError
		)
		if errors.As(err, &fe) {
			return fe
		}
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			if n, err := strconv.Unquote(name); err == nil {
				name = n
			}
			return &FieldError{Field: name, Message: "unknown field"}
		}
		if errors.As(err, &ute) && ute.Field != "" {
			return &FieldError{Field: ute.Field, Message: "must be a JSON " + jsonKind(ute.Type.Kind().String())}
		}
		if errors.As(err, &mbe) {
			return &BodyError{http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d bytes", MaxBodyBytes)}
		}
		return &BodyError{http.StatusBadRequest, "the body is not the JSON expected: " + err.Error()}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &BodyError{http.StatusBadRequest, "the body has data after the JSON object"}
	}
	return nil
}

// jsonKind names the JSON type of a Go kind, for a field error.
func jsonKind(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "slice", "array":
		return "array"
	case "struct", "map":
		return "object"
	case "bool":
		return "boolean"
	}
	return "number"
}
