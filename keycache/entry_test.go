package keycache

import (
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/spkgate/spkgate/keystore"
)

// An entry lives in memory the collector does not scan, so none of its
// fields may point to memory of its own: only the strings and the slice
// that newEntry points into the entry's tail (or at interned strings) may
// hold pointers. A new field with a pointer must not be added (see Entry).
func TestEntryHoldsNoOutsidePointers(t *testing.T) {
	allowed := map[string]bool{"KeyID": true, "AccountID": true, "Plan": true, "ScopesHeader": true, "ips": true}
	typ := reflect.TypeFor[Entry]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if hasPointers(f.Type) && !allowed[f.Name] {
			t.Errorf("Entry.%s (%s) holds a pointer: entries are pointer-free (see the Entry doc)", f.Name, f.Type)
		}
	}
}

func hasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.UnsafePointer, reflect.Map, reflect.Func, reflect.Chan,
		reflect.Interface, reflect.Slice, reflect.String:
		return true
	case reflect.Array:
		return t.Len() > 0 && hasPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				return true
			}
		}
	}
	return false
}

// The key's own strings and prefixes live inside the entry's allocation
// and survive collections and heavy allocation unchanged, the shared ones
// come from the intern table.
func TestEntryStringsLiveInTheEntry(t *testing.T) {
	exp := time.Now().Add(time.Hour)
	cred := keystore.Credential{Key: keystore.Key{
		ID: "key_0123456789abcdefghij", AccountID: "acct_" + strings.Repeat("x", 200),
		Scopes: []string{"monitors:write", "incidents:read"}, ExpiresAt: &exp,
		RateLimit: &keystore.RateLimit{Requests: 7, Window: time.Minute},
	}, Plan: "enterprise"}
	var entries []*Entry
	for i := range 1000 {
		e := newEntry(keystore.Hash{byte(i), byte(i >> 8)}, 1, &cred)
		entries = append(entries, e)
	}
	for range 3 {
		runtime.GC()
		junk := make([][]byte, 0, 10_000)
		for range 10_000 {
			junk = append(junk, make([]byte, 64))
		}
		runtime.KeepAlive(junk)
	}
	inside := func(e *Entry, s string) bool {
		p, base := uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(unsafe.Pointer(e))
		return p >= base && p < base+entrySize+uintptr(len(cred.Key.AccountID)+len(cred.Key.ID))
	}
	for i, e := range entries {
		if e.AccountID != cred.Key.AccountID || e.KeyID != cred.Key.ID || e.Plan != "enterprise" || e.ScopesHeader != "monitors:write,incidents:read" {
			t.Fatalf("entry %d changed: %q %q %q %q", i, e.AccountID, e.KeyID, e.Plan, e.ScopesHeader)
		}
		if !inside(e, e.AccountID) || !inside(e, e.KeyID) {
			t.Fatalf("entry %d: the key's strings are not in the entry's own memory", i)
		}
		if n, w := e.RateLimit(); n != 7 || w != time.Minute || e.expiresAt != exp.UnixNano() {
			t.Fatalf("entry %d: rate %d/%s, expiry %d", i, n, w, e.expiresAt)
		}
	}
	if p, _ := intern("enterprise"); unsafe.StringData(p) != unsafe.StringData(entries[0].Plan) {
		t.Error("the plan is not the interned copy")
	}
}
