package sqlitestore_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/spkgate/spkgate/keystore/sqlitestore"
	"github.com/spkgate/spkgate/keystore/storetest"
)

// helperEnv makes the test binary act as a second process writing to the
// database (see TestSecondProcess).
const helperEnv = "SPK_SQLITESTORE_HELPER_DB"

func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		os.Exit(helperProcess(path))
	}
	os.Exit(m.Run())
}

func helperProcess(path string) int {
	n, _ := strconv.Atoi(os.Getenv(helperEnv + "_N"))
	ctx := context.Background()
	s, err := sqlitestore.Open(ctx, path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 1
	}
	defer s.Close()
	for i := range n {
		nk := storetest.CreateKeyParams("acct")
		if _, err := s.CreateKey(ctx, nk); err != nil {
			fmt.Fprintln(os.Stderr, "create:", err)
			return 1
		}
		if _, _, err := s.RevokeKey(ctx, "acct", nk.ID); err != nil {
			fmt.Fprintln(os.Stderr, "revoke:", err)
			return 1
		}
		if _, err := s.SetPlan(ctx, "acct", fmt.Sprintf("plan%d", i%2)); err != nil {
			fmt.Fprintln(os.Stderr, "set plan:", err)
			return 1
		}
	}
	return 0
}
