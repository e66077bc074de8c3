package caddymodule

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestDropMethodParams(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"page=2", "page=2"},
		{"_method=DELETE", ""},
		{"_method=DELETE&page=2", "page=2"},
		{"page=2&_method=DELETE", "page=2"},
		{"a=1&_method=DELETE&b=2", "a=1&b=2"},
		{"a=1;_method=DELETE;b=2", "a=1;b=2"},
		{"a=1;_method=DELETE&b=2", "a=1&b=2"},
		{"_METHOD=PUT&%5Fmethod=PUT&_%6Dethod=PUT&_method[]=PUT&.method=PUT&+_method=PUT&%20_method=PUT&_method", ""},
		{"_method=a&x=1&_method=b&y=2", "x=1&y=2"},
		{"methodical=1&_methods=2&method=3&x_method=4", "methodical=1&_methods=2&method=3&x_method=4"},
		{"q=a%26_method%3DDELETE", "q=a%26_method%3DDELETE"},
		{"a=1&&b=2&", "a=1&&b=2&"},
		{"&_method=x&", "&"},
	} {
		got, changed := dropMethodParams(tc.in)
		if got != tc.want || changed != (tc.in != tc.want) {
			t.Errorf("dropMethodParams(%q) = %q, %v; want %q", tc.in, got, changed, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { dropMethodParams("page=2&sort=name&q=%41") }); n != 0 {
		t.Errorf("%v allocations for a query without _method", n)
	}
}

// FuzzDropMethodParams checks that no spelling of _method survives, that
// nothing else is lost or reordered, and that a second pass changes
// nothing.
func FuzzDropMethodParams(f *testing.F) {
	for _, s := range []string{"_method=DELETE&page=2", "a=1;_method=x", "%5Fmethod=1", "_method[]=1&b", "&&", "q=%zz&_method"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		out, changed := dropMethodParams(raw)
		if !changed && out != raw {
			t.Fatalf("unchanged but %q -> %q", raw, out)
		}
		var kept []string
		for p := range strings.FieldsFuncSeq(raw, func(r rune) bool { return r == '&' || r == ';' }) {
			if !isMethodParam(p) {
				kept = append(kept, p)
			}
		}
		var got []string
		for p := range strings.FieldsFuncSeq(out, func(r rune) bool { return r == '&' || r == ';' }) {
			if isMethodParam(p) {
				t.Fatalf("%q -> %q keeps %q", raw, out, p)
			}
			got = append(got, p)
		}
		if strings.Join(got, "\x00") != strings.Join(kept, "\x00") {
			t.Fatalf("%q -> %q: kept %q, want %q", raw, out, got, kept)
		}
		// What Go's own parser (and most frameworks) make of the result
		// has no _method.
		if q, err := url.ParseQuery(out); err == nil {
			for k := range q {
				if strings.EqualFold(strings.TrimLeft(k, " "), "_method") {
					t.Fatalf("%q -> %q parses with %q", raw, out, k)
				}
			}
		}
		if again, ch := dropMethodParams(out); ch || again != out {
			t.Fatalf("second pass: %q -> %q", out, again)
		}
	})
}

// FuzzCredential checks the credential parser on arbitrary header values:
// a key is returned only with credOK, it is exactly what one of the two
// headers carried, and a request with two different candidates is never
// credOK.
func FuzzCredential(f *testing.F) {
	f.Add("Bearer spk_x", "", 1, 0)
	f.Add("", "spk_x", 0, 1)
	f.Add("Bearer a", "b", 1, 1)
	f.Add("Basic dTpw", "spk_x", 1, 1)
	f.Add("bearer   spk_x", "spk_x", 2, 1)
	f.Fuzz(func(t *testing.T, authz, apiKey string, nAuthz, nAPIKey int) {
		hd := http.Header{}
		for range nAuthz % 3 {
			hd[hdrAuthorization] = append(hd[hdrAuthorization], authz)
		}
		for range nAPIKey % 3 {
			hd[hdrAPIKey] = append(hd[hdrAPIKey], apiKey)
		}
		key, st := credential(hd)
		if st != credOK {
			if key != "" {
				t.Fatalf("status %d with key %q", st, key)
			}
			return
		}
		if key == "" || len(hd[hdrAuthorization]) > 1 || len(hd[hdrAPIKey]) > 1 {
			t.Fatalf("credOK: %q from %v", key, hd)
		}
		fromAPIKey := len(hd[hdrAPIKey]) == 1 && key == apiKey
		fromBearer := len(hd[hdrAuthorization]) == 1 && len(authz) > 7 && strings.EqualFold(authz[:7], "bearer ") &&
			strings.TrimLeft(authz[7:], " ") == key
		if !fromAPIKey && !fromBearer {
			t.Fatalf("key %q is in neither header: %v", key, hd)
		}
		if len(hd[hdrAuthorization]) == 1 && len(hd[hdrAPIKey]) == 1 && !fromBearer {
			t.Fatalf("key %q accepted next to another authorization %q", key, authz)
		}
	})
}
