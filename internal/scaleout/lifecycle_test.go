package scaleout

import (
	"testing"
	"time"

	"github.com/spkgate/spkgate/internal/pgtest"
	"github.com/spkgate/spkgate/keys"
	"github.com/spkgate/spkgate/keystore"
)

// TestScaleOutEditAndRoll: three gateway processes on one PostgreSQL. An
// edit (narrowed scopes, widened again, an IP restriction) or a roll made
// through one instance's admin API reaches the other two within a second,
// as a revocation does; the test log prints the measured p50/p99. Keys are
// hot in every cache before each change.
func TestScaleOutEditAndRoll(t *testing.T) {
	srv := pgtest.NewServer(t)
	dsn := srv.DSN(t)
	ins := startAll(t, 3, dsn, startUpstream(t))
	waitListeners(t, connect(t, dsn), 3)
	a, others := ins[0], ins[1:]
	a.setPlan("acct_lc", "pro")
	const trials = 20

	patch := func(id string, body map[string]any) time.Time {
		t.Helper()
		var k keystore.Key
		if st := a.call("PATCH", "/spk/keys/"+id, body, &k); st != 200 {
			t.Fatalf("edit %v: %d", body, st)
		}
		return time.Now()
	}
	warm := func(key string, want int) {
		t.Helper()
		for _, in := range ins {
			for range 2 {
				if st, body := in.get(key); st != want {
					t.Fatalf("%s: warm: %d %s, want %d", in.name, st, body, want)
				}
			}
		}
	}

	var narrowed, widened, restricted, rolledOld, rolledNew []time.Duration
	for range trials {
		k := a.createKey("acct_lc")
		warm(k.Secret, 200)

		since := patch(k.ID, map[string]any{"scopes": []string{"incidents:read"}})
		if st, _ := a.get(k.Secret); st != 403 {
			t.Fatalf("A after narrowing: %d", st)
		}
		narrowed = append(narrowed, propagate(t, others, k.Secret, 403, since, 200)...)

		since = patch(k.ID, map[string]any{"scopes": nil})
		widened = append(widened, propagate(t, ins, k.Secret, 200, since, 403)...)

		since = patch(k.ID, map[string]any{"allowed_ips": []string{"192.0.2.0/24", "2001:db8::/32"}})
		restricted = append(restricted, propagate(t, ins, k.Secret, 403, since, 200)...)
		since = patch(k.ID, map[string]any{"allowed_ips": nil})
		restricted = append(restricted, propagate(t, ins, k.Secret, 200, since, 403)...)

		// Roll without grace: the old key stops and the new one works
		// everywhere, within a second.
		warm(k.Secret, 200)
		var r keys.Rolled
		if st := a.call("POST", "/spk/keys/"+k.ID+"/roll", keys.RollRequest{Grace: "0s"}, &r); st != 201 {
			t.Fatalf("roll: %d", st)
		}
		since = time.Now()
		rolledOld = append(rolledOld, propagate(t, ins, k.Secret, 401, since, 200)...)
		rolledNew = append(rolledNew, propagate(t, ins, r.Secret, 200, since)...)

		// Roll with grace: both keys keep working everywhere.
		warm(r.Secret, 200)
		var r2 keys.Rolled
		if st := a.call("POST", "/spk/keys/"+r.ID+"/roll", keys.RollRequest{Grace: "1h"}, &r2); st != 201 {
			t.Fatalf("roll with grace: %d", st)
		}
		warm(r.Secret, 200)
		warm(r2.Secret, 200)
	}

	t.Logf("propagation of lifecycle changes from one instance to the others (3 gateway processes, loopback):")
	report(t, "edit: scopes narrowed (403 at once)", narrowed)
	report(t, "edit: scopes widened again", widened)
	report(t, "edit: allowed_ips set and cleared", restricted)
	report(t, "roll without grace: old key refused", rolledOld)
	report(t, "roll without grace: new key accepted", rolledNew)
}
