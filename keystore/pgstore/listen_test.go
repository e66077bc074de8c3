package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spkgate/spkgate/internal/pgtest"
	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/pgstore"
	"github.com/spkgate/spkgate/keystore/storetest"
)

// recorder is a keystore.ChangeListener that hands everything to the test.
type recorder struct {
	listening chan struct{}
	changes   chan keystore.Change
	alive     chan time.Time
}

func newRecorder() *recorder {
	return &recorder{
		listening: make(chan struct{}, 10),
		changes:   make(chan keystore.Change, 20_000),
		alive:     make(chan time.Time, 100),
	}
}

func (r *recorder) Listening()                  { r.listening <- struct{}{} }
func (r *recorder) Notified(ch keystore.Change) { r.changes <- ch }
func (r *recorder) Alive(t time.Time) {
	select {
	case r.alive <- t:
	default:
	}
}

// listen starts a session and waits until it listens. The returned channel
// yields Listen's result.
func listen(t *testing.T, s *pgstore.Store) (*recorder, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rec := newRecorder()
	errc, done := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(done)
		errc <- s.Listen(ctx, rec)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Listen did not return after its context ended")
		}
	})
	select {
	case <-rec.listening:
	case err := <-errc:
		t.Fatalf("Listen: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Listen did not start listening within 10s")
	}
	return rec, errc
}

func next(t *testing.T, rec *recorder, within time.Duration) keystore.Change {
	t.Helper()
	select {
	case ch := <-rec.changes:
		return ch
	case <-time.After(within):
		t.Fatalf("no notification within %v", within)
	}
	return keystore.Change{}
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// TestListenDeliversChangesInCommitOrder: every change reaches a listening
// session as it commits, in the log's order, with its seq, kind and account
// and nothing derived from the key; heartbeats report the session alive.
func TestListenDeliversChangesInCommitOrder(t *testing.T) {
	t.Parallel()
	s := open(t, pgtest.DSN(t))
	ctx := context.Background()
	began := time.Now()
	rec, _ := listen(t, s)

	nk := storetest.CreateKeyParams("acct_n")
	if _, err := s.CreateKey(ctx, nk); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPlan(ctx, "acct_n", "pro"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RevokeKey(ctx, "acct_n", nk.ID); err != nil {
		t.Fatal(err)
	}
	logged, err := s.Changes(ctx, 0, 10)
	if err != nil || len(logged) != 3 {
		t.Fatalf("Changes = %d, %v", len(logged), err)
	}
	for _, want := range logged {
		got := next(t, rec, 5*time.Second)
		if got.Seq != want.Seq || got.Kind != want.Kind || got.AccountID != want.AccountID {
			t.Errorf("notified {%d %s %q}, logged {%d %s %q}", got.Seq, got.Kind, got.AccountID, want.Seq, want.Kind, want.AccountID)
		}
		if got.Hash != (keystore.Hash{}) {
			t.Errorf("a notification carried the key's hash")
		}
	}
	select {
	case at := <-rec.alive:
		if at.Before(began) {
			t.Errorf("heartbeat sent at %v, before the session started", at)
		}
	case <-time.After(pgstore.HeartbeatInterval + pgstore.HeartbeatTimeout):
		t.Fatal("no heartbeat answered")
	}
}

// TestListenRolledBackChangeIsSilent: a revocation whose transaction rolls
// back notifies nobody and leaves the key valid; the sequence number it
// used stays unused, and the next change is still delivered.
func TestListenRolledBackChangeIsSilent(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	s := open(t, dsn)
	ctx := context.Background()
	nk := storetest.CreateKeyParams("acct_rb")
	if _, err := s.CreateKey(ctx, nk); err != nil {
		t.Fatal(err)
	}
	rec, _ := listen(t, s)

	conn := connect(t, dsn)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var unused int64
	if _, err := tx.Exec(ctx, `UPDATE api_keys SET revoked_at = now() WHERE id = $1`, nk.ID); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, `INSERT INTO changes (kind, account_id, key_hash, at)
		SELECT 'revoked', account_id, key_hash, now() FROM api_keys WHERE id = $1 RETURNING seq`, nk.ID).Scan(&unused); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case ch := <-rec.changes:
		t.Fatalf("a rolled-back revocation was notified: %+v", ch)
	case <-time.After(time.Second):
	}
	cred, err := s.LookupKey(ctx, nk.Hash)
	if err != nil || !cred.Usable(time.Now()) {
		t.Fatalf("after the rollback: %v, usable %v", err, cred.Usable(time.Now()))
	}

	if _, _, err := s.RevokeKey(ctx, "acct_rb", nk.ID); err != nil {
		t.Fatal(err)
	}
	got := next(t, rec, 5*time.Second)
	if got.Kind != keystore.ChangeRevoked || got.Seq <= unused {
		t.Fatalf("after the rollback: notified {%d %s}, want a revocation after seq %d", got.Seq, got.Kind, unused)
	}
}

// TestListenReconnectsWhenBackendTerminated: a session whose backend is
// killed (pg_terminate_backend, a pooler restarting) goes on: Listen
// reconnects without ending the session (no second Listening, no error for
// the caller to drop its cache over), replays from the change log what
// committed meanwhile, and hears heartbeats again.
func TestListenReconnectsWhenBackendTerminated(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	s := open(t, dsn)
	rec, errc := listen(t, s)

	admin := connect(t, dsn)
	var killed int
	if err := admin.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = 'spkgate'||$1`, pgstore.ListenerSuffix).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Fatalf("%d listening backends, want 1", killed)
	}
	nk := storetest.CreateKeyParams("acct_t")
	if _, err := s.CreateKey(context.Background(), nk); err != nil {
		t.Fatal(err)
	}
	ch := next(t, rec, 5*time.Second)
	if ch.Kind != keystore.ChangeCreated || ch.AccountID != "acct_t" {
		t.Errorf("change = %+v, want the key's creation", ch)
	}
	drainAlive(rec)
	select {
	case <-rec.alive:
	case err := <-errc:
		t.Fatalf("Listen ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no heartbeat answered after the reconnection")
	}
	select {
	case <-rec.listening:
		t.Error("Listening called again: the session was restarted, not continued")
	case err := <-errc:
		t.Errorf("Listen ended: %v", err)
	default:
	}
}

// drainAlive empties the heartbeats recorded so far.
func drainAlive(rec *recorder) {
	for {
		select {
		case <-rec.alive:
		default:
			return
		}
	}
}

// partitioned opens a store whose pool reaches the server directly and
// whose listening connection goes through a proxy the test can cut, and
// starts a session on it.
func partitioned(t *testing.T) (dsn string, s *pgstore.Store, proxy *pgtest.Proxy, logs *observer.ObservedLogs, rec *recorder, errc <-chan error) {
	t.Helper()
	srv := pgtest.Shared(t)
	dsn = srv.DSN(t)
	proxy = pgtest.NewProxy(t, srv.Addr())
	core, logs := observer.New(zap.DebugLevel)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := pgstore.OpenWith(ctx, dsn, pgstore.Options{ListenDSN: proxy.DSN(t, dsn), Logger: zap.New(core)})
	if err != nil {
		t.Fatalf("OpenWith: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	rec, errc = listen(t, s)
	select {
	case <-rec.alive:
	case <-time.After(5 * time.Second):
		t.Fatal("no heartbeat answered before the partition")
	}
	return dsn, s, proxy, logs, rec, errc
}

// waitLog waits until a message containing text is logged.
func waitLog(t *testing.T, logs *observer.ObservedLogs, text string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for logs.FilterMessageSnippet(text).Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no log %q within %v; logged: %v", text, within, logs.All())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestListenHeartbeatDetectsSilentPartition: when the network path to the
// server fails without a word (no reset, no FIN), the unanswered heartbeat
// gives the connection up within HeartbeatInterval+HeartbeatTimeout; once
// the path heals, the changes committed during the partition reach the
// listener from the change log, in order, and the session never ended.
func TestListenHeartbeatDetectsSilentPartition(t *testing.T) {
	t.Parallel()
	_, s, proxy, logs, rec, errc := partitioned(t)
	cut := time.Now()
	proxy.Blackhole()
	var seqs []int64
	for range 3 {
		if _, err := s.CreateKey(context.Background(), storetest.CreateKeyParams("acct_p")); err != nil {
			t.Fatal(err)
		}
		seq, err := s.LastChange(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	waitLog(t, logs, "listening connection lost", 15*time.Second)
	d := time.Since(cut)
	if limit := pgstore.HeartbeatInterval + pgstore.HeartbeatTimeout + time.Second; d > limit {
		t.Errorf("the partition was noticed after %v, want at most %v", d, limit)
	}
	t.Logf("partition noticed after %v", d.Round(time.Millisecond))
	proxy.Heal()
	for i := range seqs {
		ch := next(t, rec, 10*time.Second)
		if ch.Kind != keystore.ChangeCreated || ch.AccountID != "acct_p" || ch.Seq != seqs[i] || ch.Hash != (keystore.Hash{}) {
			t.Errorf("replayed change %d = %+v, want the creation of key %d (seq %d), as a notification carries it", i, ch, i, seqs[i])
		}
	}
	waitLog(t, logs, "listening connection restored", 10*time.Second)
	select {
	case err := <-errc:
		t.Errorf("Listen ended: %v", err)
	case <-rec.listening:
		t.Error("Listening called again")
	default:
	}
}

// TestListenEndsWhenChangesMayBeLost: when the change log no longer holds
// the last change the session passed on (pruned while the session was cut
// off), nothing can prove the replay complete: Listen ends with
// ErrUnavailable, so that the caller drops what it cached; the error names
// no connection string.
func TestListenEndsWhenChangesMayBeLost(t *testing.T) {
	t.Parallel()
	dsn, s, proxy, logs, rec, errc := partitioned(t)
	if _, err := s.CreateKey(context.Background(), storetest.CreateKeyParams("acct_g")); err != nil {
		t.Fatal(err)
	}
	next(t, rec, 5*time.Second)
	proxy.Blackhole()
	waitLog(t, logs, "listening connection lost", 15*time.Second)
	if _, err := connect(t, dsn).Exec(context.Background(), `DELETE FROM changes`); err != nil {
		t.Fatal(err)
	}
	proxy.Heal()
	select {
	case err := <-errc:
		if !errors.Is(err, keystore.ErrUnavailable) {
			t.Errorf("Listen = %v, want ErrUnavailable", err)
		}
		if strings.Contains(err.Error(), dsn) || strings.Contains(err.Error(), "127.0.0.1") {
			t.Errorf("error %q names the server", err)
		}
		t.Logf("Listen: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("Listen did not end although the log lost its last change")
	}
}

// seedKeys inserts n active keys of account in one COPY (far faster than
// n CreateKey transactions; no change rows, as for keys that existed before
// anyone listened).
func seedKeys(t *testing.T, dsn, account string, n int) []keystore.Hash {
	t.Helper()
	conn := connect(t, dsn)
	hashes := make([]keystore.Hash, n)
	rows := make([][]any, n)
	now := time.Now()
	for i := range rows {
		hashes[i] = storetest.NewHash()
		rows[i] = []any{fmt.Sprintf("key_seed%06d", i), account, "seeded", "spk_seed", hashes[i][:], []string{}, now}
	}
	copied, err := conn.CopyFrom(context.Background(), pgx.Identifier{"api_keys"},
		[]string{"id", "account_id", "name", "prefix", "key_hash", "scopes", "created_at"}, pgx.CopyFromRows(rows))
	if err != nil || copied != int64(n) {
		t.Fatalf("seeding %d keys: %d, %v", n, copied, err)
	}
	return hashes
}

// TestListenBulkRevocation: 10,000 keys of one account revoked in one
// transaction make one notification, with the last seq, within a second of
// the commit; the log holds all 10,000 changes.
func TestListenBulkRevocation(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	s := open(t, dsn)
	const n = 10_000
	seedKeys(t, dsn, "acct_bulk", n)
	rec, _ := listen(t, s)
	ctx := context.Background()
	before, err := s.LastChange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := s.RevokeAccountKeys(ctx, "acct_bulk")
	if err != nil || revoked != n {
		t.Fatalf("RevokeAccountKeys = %d, %v", revoked, err)
	}
	committed := time.Now()
	last, err := s.LastChange(ctx)
	if err != nil || last != before+n {
		t.Fatalf("LastChange = %d, %v; want %d", last, err, before+n)
	}
	ch := next(t, rec, 5*time.Second)
	took := time.Since(committed)
	if ch.Kind != keystore.ChangeRevoked || ch.AccountID != "acct_bulk" || ch.Seq != last {
		t.Fatalf("notified {%d %s %q}, want the account's revocations up to seq %d", ch.Seq, ch.Kind, ch.AccountID, last)
	}
	select {
	case ch := <-rec.changes:
		t.Fatalf("a second notification for one statement: %+v", ch)
	case <-time.After(300 * time.Millisecond):
	}
	t.Logf("%d keys revoked in one transaction: one notification, %v after the commit", n, took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("the notification came %v after the commit, want under 1s", took)
	}
}

// TestListenOneNotificationPerAccountAndKind: a statement recording
// changes of several accounts and kinds announces each (kind, account)
// once, with its highest seq, in seq order.
func TestListenOneNotificationPerAccountAndKind(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	s := open(t, dsn)
	rec, _ := listen(t, s)
	conn := connect(t, dsn)
	var seqs []int64
	rows, err := conn.Query(context.Background(), `INSERT INTO changes (kind, account_id, at)
		SELECT k, a, now() FROM (VALUES ('plan', 'a1'), ('plan', 'a2'), ('plan', 'a1'), ('created', 'a1')) AS v(k, a)
		RETURNING seq`)
	if err != nil {
		t.Fatal(err)
	}
	seqs, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil || len(seqs) != 4 {
		t.Fatalf("inserted %v, %v", seqs, err)
	}
	var got []string
	for range 3 {
		ch := next(t, rec, 5*time.Second)
		got = append(got, fmt.Sprintf("%d:%s:%s", ch.Seq-seqs[0], ch.Kind, ch.AccountID))
	}
	if want := "1:plan:a2 2:plan:a1 3:created:a1"; strings.Join(got, " ") != want {
		t.Errorf("notified %q, want %q", strings.Join(got, " "), want)
	}
}
