package caddymodule

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/spkgate/spkgate/apikey"
)

type credStatus uint8

const (
	credOK credStatus = iota
	credMissing
	credBad
)

// credential reads the key from the two credential headers. A repeated
// header, two different keys, or an Authorization header that is not a
// bearer credential next to an X-API-Key is credBad; no key is credMissing.
func credential(hd http.Header) (string, credStatus) {
	authz, apiKey := hd[hdrAuthorization], hd[hdrAPIKey]
	if len(authz) > 1 || len(apiKey) > 1 {
		return "", credBad
	}
	var bearer string
	otherScheme := false
	if len(authz) == 1 {
		v := authz[0]
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			bearer = strings.TrimLeft(v[7:], " ")
			if bearer == "" {
				return "", credBad
			}
		} else if strings.EqualFold(strings.TrimSpace(v), "bearer") {
			return "", credBad
		} else {
			otherScheme = true
		}
	}
	switch {
	case len(apiKey) == 1 && (otherScheme || (bearer != "" && bearer != apiKey[0])):
		return "", credBad
	case len(apiKey) == 1:
		if apiKey[0] == "" {
			return "", credBad
		}
		return apiKey[0], credOK
	case bearer != "":
		return bearer, credOK
	}
	return "", credMissing
}

// urlHasKey reports whether the request's path or query holds a valid key
// (decoded or not). Access logs, proxies and browser histories keep URLs,
// so such a request is refused rather than forwarded: the gateway never
// hands a key on, whoever's it is.
func urlHasKey(u *url.URL) bool {
	if hasKey(u.Path) || hasKey(u.RawQuery) {
		return true
	}
	if strings.IndexByte(u.RawQuery, '%') >= 0 {
		if q, err := url.QueryUnescape(u.RawQuery); err == nil {
			return hasKey(q)
		}
	}
	return false
}

// hasKey reports whether s contains a valid key. It does not allocate.
func hasKey(s string) bool {
	for {
		i := strings.Index(s, apikey.Marker)
		if i < 0 || len(s)-i < apikey.Len {
			return false
		}
		if apikey.Check(s[i:i+apikey.Len]) == nil {
			return true
		}
		s = s[i+len(apikey.Marker):]
	}
}
