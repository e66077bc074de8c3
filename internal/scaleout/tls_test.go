package scaleout

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spkgate/spkgate/internal/pgtest"
)

// withQuery returns the URL connection string dsn with the given query
// parameters set.
func withQuery(t *testing.T, dsn string, kv ...string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	for i := 0; i < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// refused waits for the gateway to give up at start and returns its output.
func (in *instance) refused(within time.Duration) string {
	in.t.Helper()
	select {
	case <-in.proc.Exited:
		return in.proc.Logs.String()
	case <-time.After(within):
		in.t.Fatalf("%s still runs %v after its start, want it refused", in.name, within)
	}
	return ""
}

// TestScaleOutOverTLS: two gateways on a PostgreSQL that has a certificate
// of a CA made up for the test, each connecting with sslmode=verify-full
// and that CA as sslrootcert: every connection of theirs (pool and
// listener) uses TLS, and revocations on one reach the other within a
// second. A third gateway, given another CA, is refused at start with the
// reason and the fix, and without its connection string.
func TestScaleOutOverTLS(t *testing.T) {
	srv := pgtest.NewServer(t)
	ca := pgtest.NewCA(t, "spkgate test CA")
	cert, key := ca.Issue(t, "127.0.0.1", "localhost")
	srv.UseTLS(t, cert, key)
	plain := srv.DSN(t)
	dsn := withQuery(t, plain, "sslmode", "verify-full", "sslrootcert", ca.CertFile())
	up := startUpstream(t)
	a := start(t, "A", dsn, up, "")
	b := start(t, "B", dsn, up, "")
	a.ready(time.Minute)
	b.ready(time.Minute)
	conn := connect(t, plain)
	waitListeners(t, conn, 2)
	var all, encrypted int
	if err := conn.QueryRow(context.Background(), `SELECT count(*), count(*) FILTER (WHERE s.ssl)
		FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
		WHERE a.datname = current_database() AND a.application_name LIKE 'spkgate%'`).Scan(&all, &encrypted); err != nil {
		t.Fatal(err)
	}
	if all == 0 || encrypted != all {
		t.Errorf("%d of the gateways' %d connections use TLS, want all", encrypted, all)
	}

	a.setPlan("acct_tls", "pro")
	var revocations []time.Duration
	for range 10 {
		k := a.createKey("acct_tls")
		if st, body := b.get(k.Secret); st != 200 {
			t.Fatalf("B: warm: %d %s", st, body)
		}
		if st := a.call("DELETE", "/spk/keys/"+k.ID, nil, nil); st != 204 {
			t.Fatalf("revoke: %d", st)
		}
		revoked := time.Now()
		d, err := b.until(k.Secret, 401, revoked, 200)
		if err != nil {
			t.Fatal(err)
		}
		revocations = append(revocations, d)
	}
	report(t, "revocation A -> B over TLS (verify-full)", revocations)

	other := pgtest.NewCA(t, "someone else's CA")
	bad := withQuery(t, plain, "sslmode", "verify-full", "sslrootcert", other.CertFile())
	out := start(t, "C", bad, up, "").refused(time.Minute)
	if !strings.Contains(out, "not signed by a trusted CA") || !strings.Contains(out, "set sslrootcert") {
		t.Errorf("C's output does not name the untrusted certificate and the fix:\n%s", out)
	}
	if strings.Contains(out, bad) {
		t.Errorf("C's output names its connection string")
	}
}
