package pgstore

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestPreparedStatementErrorsNameTheProxy: the errors a transaction-pooling
// proxy causes for named prepared statements say what is wrong and how to
// fix it (Open detects such a proxy and avoids them; this is for the setups
// the detection misses).
func TestPreparedStatementErrorsNameTheProxy(t *testing.T) {
	for _, code := range []string{"42P05", "26000"} {
		err := translate("lookup", &pgconn.PgError{Code: code, Message: `prepared statement "stmtcache_1" already exists`}, false)
		for _, want := range []string{"transaction-pooling proxy", "default_query_exec_mode=cache_describe", code} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q lacks %q", code, err, want)
			}
		}
	}
}
