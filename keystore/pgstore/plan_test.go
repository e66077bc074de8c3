package pgstore

import (
	"context"
	"strings"
	"testing"

	"github.com/spkgate/spkgate/internal/pgtest"
	"github.com/spkgate/spkgate/keystore/storetest"
)

// A cold key is one indexed query, however many keys are stored: with the
// table analyzed, the planner probes api_keys by its unique key_hash index
// and accounts by its primary key, and scans no table.
func TestLookupUsesTheIndex(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hashes := storetest.Seed(t, s, 5000)
	if _, err := s.pool.Exec(ctx, "ANALYZE api_keys; ANALYZE accounts"); err != nil {
		t.Fatal(err)
	}
	rows, err := s.pool.Query(ctx, "EXPLAIN "+lookupSQL, hashes[0][:])
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, strings.TrimSpace(line))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	all := strings.Join(plan, "\n")
	t.Logf("plan:\n%s", all)
	if strings.Contains(all, "Seq Scan") {
		t.Errorf("the lookup scans a table:\n%s", all)
	}
	if !strings.Contains(all, "Index Scan using api_keys_key_hash") {
		t.Errorf("api_keys is not probed by its key_hash index:\n%s", all)
	}
}
