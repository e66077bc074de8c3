package sqlitestore

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spkgate/spkgate/keystore/storetest"
)

// A cold key is one indexed query, however many keys are stored: the
// lookup searches api_keys by its key_hash index and accounts by its
// primary key, and scans no table.
func TestLookupUsesTheIndex(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "spk.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hashes := storetest.Seed(t, s, 2000)
	if _, err := s.wdb.ExecContext(ctx, "ANALYZE"); err != nil {
		t.Fatal(err)
	}
	rows, err := s.rdb.QueryContext(ctx, "EXPLAIN QUERY PLAN "+lookupSQL, hashes[0][:])
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("plan: %q", plan)
	if len(plan) != 2 {
		t.Fatalf("plan has %d steps, want 2 (api_keys, accounts): %q", len(plan), plan)
	}
	if !strings.HasPrefix(plan[0], "SEARCH k USING INDEX") || !strings.Contains(plan[0], "key_hash=?") {
		t.Errorf("api_keys is not searched by its key_hash index: %q", plan[0])
	}
	if !strings.HasPrefix(plan[1], "SEARCH a USING") {
		t.Errorf("accounts is not searched by its key: %q", plan[1])
	}
}
