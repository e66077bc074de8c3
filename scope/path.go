package scope

import (
	"errors"
	"strings"
)

// ErrBadPath is returned by Canonical for a path that could be read
// differently by the gateway and by an upstream. Its message is safe to show
// to the client.
var ErrBadPath = errors.New("path is not canonical: dot segments (also with ;parameters), encoded slashes or backslashes, control bytes and percent signs after decoding are refused")

// Canonical returns the path that is both checked and forwarded.
//
// path is the decoded request path (url.URL.Path) and rawPath the encoding
// the client used when it differs from the default (url.URL.RawPath). The
// path is refused (ErrBadPath) when an upstream could resolve it to another
// resource than the one checked: "." or ".." segments in any encoding or
// followed by ";" path parameters ("..;" is ".." to a servlet container), an
// encoded slash (%2F) or any backslash, NUL and other control bytes, and a
// "%" left after decoding (double encoding such as %252e). Runs of slashes
// are collapsed into one. Everything else is forwarded in its default
// encoding, so the upstream decodes exactly the string that was checked.
//
// changed reports whether the caller must replace the request's Path and
// clear its RawPath. Canonical does not allocate for a path that needs no
// change.
func Canonical(path, rawPath string) (canon string, changed bool, err error) {
	if path == "" || path[0] != '/' {
		return "", false, ErrBadPath
	}
	if rawPath != "" {
		// The client chose a non-default encoding. An encoded slash changes
		// the segments an upstream sees; refuse it. Other encodings decode
		// to the same path, which we forward in the default encoding.
		if containsFold(rawPath, "%2f") {
			return "", false, ErrBadPath
		}
		changed = true
	}
	doubleSlash := false
	segStart := 1
	for i := 1; i <= len(path); i++ {
		if i < len(path) {
			c := path[i]
			switch {
			case c < 0x20 || c == 0x7f || c == '\\' || c == '%':
				return "", false, ErrBadPath
			case c != '/':
				continue
			}
		}
		// A ";" starts path parameters, which servlet containers and
		// others strip before they resolve dot segments: "..;x" is "..".
		seg := path[segStart:i]
		if dot, _, _ := strings.Cut(seg, ";"); dot == "." || dot == ".." {
			return "", false, ErrBadPath
		}
		if seg == "" && i < len(path) {
			doubleSlash = true
		}
		segStart = i + 1
	}
	if !doubleSlash {
		return path, changed, nil
	}
	var b strings.Builder
	b.Grow(len(path))
	prev := byte(0)
	for i := 0; i < len(path); i++ {
		if path[i] == '/' && prev == '/' {
			continue
		}
		prev = path[i]
		b.WriteByte(path[i])
	}
	return b.String(), true, nil
}

// containsFold reports whether s contains the lower-case ASCII substr in
// any letter case, without allocating.
func containsFold(s, substr string) bool {
	for i := 0; i+len(substr) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(substr)], substr) {
			return true
		}
	}
	return false
}
