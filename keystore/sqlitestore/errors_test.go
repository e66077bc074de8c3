package sqlitestore_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/storetest"
)

type prefixWriter struct{ t *testing.T }

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.t.Logf("helper: %s", p)
	return len(p), nil
}

func TestErrorsCarryNoHash(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "spk.db"))
	nk := storetest.CreateKeyParams("acct")
	ctx := context.Background()
	if _, err := s.CreateKey(ctx, nk); err != nil {
		t.Fatal(err)
	}
	dup := storetest.CreateKeyParams("acct")
	dup.Hash = nk.Hash
	_, err := s.CreateKey(ctx, dup)
	if !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	msg := strings.ToLower(err.Error())
	for _, enc := range []string{fmt.Sprintf("%x", nk.Hash[:]), string(nk.Hash[:])} {
		if strings.Contains(msg, enc) {
			t.Errorf("error message contains the key hash: %q", err)
		}
	}
}
