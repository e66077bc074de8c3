// Package storetest is the conformance suite that every keystore.Store
// backend must pass. Each backend's tests call Run with a function that
// opens a fresh, empty store; the suite then checks the behaviour that the
// gateway, the console and the admin API rely on, identically for every
// backend.
//
// The suite is split by topic, one file each (keys.go, lookup.go,
// revoke.go, plans.go, changes.go, touch.go, concurrency.go,
// unavailable.go, lifecycle.go, usage.go), as river's riverdrivertest is: a file
// declares its topic's tests in a []test, and Run lists the topics. A new
// topic is a new file and one line in Run; helpers shared by several topics
// are in helpers.go.
//
// The package imports only the standard library and keystore, so that a
// backend's tests pull in no other backend's driver.
package storetest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"testing"
	"time"

	"github.com/spkgate/spkgate/keystore"
)

// test is one conformance test: it gets a fresh, empty store of its own.
type test struct {
	name string
	fn   func(t *testing.T, s keystore.Store)
}

// Run runs the conformance suite against the backend that open creates.
// open is called once per test and must return a new, empty store; it
// should register the store's Close with t.Cleanup (closing twice must be
// harmless, as one test closes its store itself). Topics and the tests in
// them run in parallel; a test's name is Topic/Test (e.g. Revoke/Revoke).
func Run(t *testing.T, open func(t *testing.T) keystore.Store) {
	topics := []struct {
		name  string
		tests []test
	}{
		{"Keys", keysTests},
		{"Lookup", lookupTests},
		{"Revoke", revokeTests},
		{"Plans", plansTests},
		{"Changes", changesTests},
		{"Touch", touchTests},
		{"Concurrency", concurrencyTests},
		{"Unavailable", unavailableTests},
		{"Lifecycle", lifecycleTests},
		{"Usage", usageTests},
	}
	for _, topic := range topics {
		t.Run(topic.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range topic.tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					s := open(t)
					tc.fn(t, s)
				})
			}
		})
	}
}

// NewHash returns the SHA-256 of random bytes, as a stand-in for the hash of
// a freshly generated key.
func NewHash() keystore.Hash {
	return sha256.Sum256([]byte(rand.Text()))
}

// NewID returns a random key id of the form "key_...".
func NewID() string {
	return "key_" + rand.Text()
}

// CreateKeyParams returns valid keystore.CreateKeyParams for account with a
// random id and hash, the given scopes, and a creation time of now.
func CreateKeyParams(account string, scopes ...string) keystore.CreateKeyParams {
	h := NewHash()
	return keystore.CreateKeyParams{
		ID:        NewID(),
		AccountID: account,
		Name:      "test key",
		Prefix:    "spk_" + base64.RawURLEncoding.EncodeToString(h[:3]),
		Hash:      h,
		Scopes:    scopes,
		CreatedAt: time.Now(),
	}
}
