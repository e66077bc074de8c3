package pgstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"go.uber.org/zap"

	"github.com/spkgate/spkgate/keystore"
)

// changesChannel is where the changes table's trigger announces changes
// (migration 0002): payload "<seq>:<kind>:<account id>", once per kind and
// account of each statement.
const changesChannel = "spk_changes"

// Settings of a listening session (Listen).
const (
	// HeartbeatInterval is how often a listening session proves that its
	// connection still delivers notifications.
	HeartbeatInterval = time.Second
	// HeartbeatTimeout is how long a heartbeat may go unanswered before
	// the session gives up its connection as dead.
	HeartbeatTimeout = 3 * time.Second
	// ListenerSuffix is appended to the connection's application_name
	// ("spkgate" unless the DSN sets one) for the listening connection, so
	// that operators can tell it apart in pg_stat_activity.
	ListenerSuffix = "-listener"
)

// Reconnection of a listening session: the first retry comes after
// minRetry, each further one waits twice as long up to maxRetry,
// randomised by up to half; after a connection that answered heartbeats
// for stableAfter the next retry is back at minRetry. A connection that
// cannot stay up is so retried ever more rarely, and never costs the
// caller its cache: what committed while none listened is replayed from
// the change log.
const (
	minRetry    = 100 * time.Millisecond
	maxRetry    = 30 * time.Second
	stableAfter = 10 * time.Second
)

// PollInterval is how often Listen reads the change log when the store
// cannot listen (see Options.ListenDSN): a change made elsewhere arrives
// within it, plus one query.
const PollInterval = 250 * time.Millisecond

// errGap ends a listening session whose replay cannot be proven complete.
var errGap = errors.New("changes may have been missed")

// Interface guard.
var _ keystore.Notifier = (*Store)(nil)

// Listen implements keystore.Notifier. It opens a connection of its own,
// outside the pool (Options.ListenDSN, or the main connection string),
// runs LISTEN spk_changes on it and passes changes to l as their
// transactions commit.
//
// Every HeartbeatInterval the session sends a NOTIFY to a channel only it
// listens on and waits for it to come back. PostgreSQL delivers
// notifications in commit order, so when the heartbeat arrives every
// change committed before it was sent has arrived too: that is what
// l.Alive reports. A heartbeat that does not come back within
// HeartbeatTimeout (a connection that died silently) gives the connection
// up, as does any connection error.
//
// A connection given up is replaced, with backoff (minRetry to maxRetry),
// and the session goes on: once the new connection listens, the changes
// committed since the last one passed to l are read from the change log
// and passed to l in order, before any heartbeat vouches again. Listen
// returns (an error matching keystore.ErrUnavailable) only when the log
// cannot prove that replay complete: the last change passed to l is no
// longer in the log (pruned), or the log is behind it (the database was
// replaced by one that lost commits). The caller then starts a new
// session, treating it as having missed changes.
//
// A connection that never hears its own heartbeat (a proxy that does not
// deliver notifications) is reported once on the store's logger; the
// caller keeps following the change log meanwhile.
//
// Listen needs a direct or session-pooled connection: through a
// transaction-pooling proxy (PgBouncer's pool_mode=transaction) LISTEN
// delivers nothing. When the store has no such connection (see
// Options.ListenDSN), Listen says so once on the store's logger and polls
// instead: it reads the change log every PollInterval, passes what it finds
// to l and reports l.Alive after each read, so that changes still arrive
// well within a second and the caller's cache stays trusted.
func (s *Store) Listen(ctx context.Context, l keystore.ChangeListener) error {
	const op = "listen"
	if err := s.closedErr(op); err != nil {
		return err
	}
	ls := &listenSession{s: s, l: l}
	if s.listenCfg == nil {
		s.deafOnce.Do(func() {
			s.logger.Warn("the postgres connection string leads through a transaction-pooling proxy, where LISTEN " +
				"cannot work: changes made by other instances are read from the change log every " + PollInterval.String() +
				" instead of arriving within milliseconds; to be notified at once, give the storage a " +
				"listen connection string that reaches PostgreSQL directly or through a session pool")
		})
		return ls.poll(ctx)
	}
	retry := minRetry
	for {
		err := ls.connection(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errGap) {
			return unavailableErr(op, err.Error())
		}
		if s.closed.Load() {
			return s.listenErr(ctx, op, err)
		}
		ls.lost(err)
		if ls.stable {
			retry = minRetry
		}
		pause := retry/2 + mrand.N(retry/2+1)
		retry = min(2*retry, maxRetry)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

// listenSession is the state of one Listen call across its connections.
type listenSession struct {
	s *Store
	l keystore.ChangeListener

	// listening: l.Listening has been called; from then on every change
	// committed is passed to l, notified or replayed.
	listening bool
	// last is the newest change passed to l (or, before any, the head of
	// the log when the session began listening): replay starts after it.
	// known: Kind and AccountID of last are known, and checked on replay.
	last  keystore.Change
	known bool
	// stable: the last connection answered heartbeats for stableAfter.
	stable bool
	// failing: connections are failing since the last answered
	// heartbeat; deaf counts the connections in a row that listened but
	// never heard a heartbeat; warnedDeaf: that was reported.
	failing    bool
	deaf       int
	warnedDeaf bool
}

// deafWarnAfter is how many connections in a row must listen without
// hearing a heartbeat before that is reported as a setup problem.
const deafWarnAfter = 3

// notify passes a change to l, keeping track of the newest. A change read
// from the log is passed as a notification would carry it: Seq, Kind and
// AccountID (keystore.ChangeListener.Notified).
func (ls *listenSession) notify(ch keystore.Change) {
	if ch.Seq > 0 && ch.Seq <= ls.last.Seq {
		return // replayed already
	}
	ch = keystore.Change{Seq: ch.Seq, Kind: ch.Kind, AccountID: ch.AccountID}
	ls.l.Notified(ch)
	if ch.Seq > ls.last.Seq {
		ls.last = ch
		ls.known = true
	}
}

// lost records a connection given up, telling the logger at the first
// failure since the session last heard a heartbeat.
func (ls *listenSession) lost(err error) {
	log := ls.s.logger
	if ls.deaf >= deafWarnAfter && !ls.warnedDeaf {
		ls.warnedDeaf = true
		log.Warn("the postgres listening connection does not hear its own notifications " +
			"(a transaction-pooling proxy?): changes made by other instances are read from the change log every " +
			"change_poll_interval instead; give the storage a listen connection string that reaches " +
			"PostgreSQL directly or through a session pool")
		return
	}
	if !ls.failing {
		ls.failing = true
		log.Warn("postgres listening connection lost; reconnecting, and replaying missed changes from the change log",
			zap.Error(err))
		return
	}
	log.Debug("postgres listening connection failed again", zap.Error(err))
}

// connection runs one connection of the session until it fails.
func (ls *listenSession) connection(ctx context.Context) error {
	const op = "listen"
	s, l := ls.s, ls.l
	heartbeat := "spk_heartbeat_" + strings.ToLower(rand.Text()[:16])
	var (
		pending   bool      // a heartbeat is on its way
		payload   string    // the pending heartbeat's payload
		sentAt    time.Time // when it was sent
		sequence  int
		ready     bool              // changes may be passed on
		held      []keystore.Change // notified before ready
		heard     bool              // a heartbeat came back
		heardFrom time.Time         // the first that did
	)
	ls.stable = false
	cfg := s.listenCfg.Copy()
	// Notifications are handled as they are read, on this goroutine, in
	// the order the server sends them, whichever call reads them.
	cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) {
		switch n.Channel {
		case changesChannel:
			ch := parsePayload(n.Payload)
			if !ready {
				held = append(held, ch)
				return
			}
			ls.notify(ch)
		case heartbeat:
			if pending && n.Payload == payload {
				pending = false
				if !heard {
					heard, heardFrom = true, time.Now()
					ls.deaf = 0
					if ls.failing || ls.warnedDeaf {
						ls.failing, ls.warnedDeaf = false, false
						s.logger.Info("postgres listening connection restored")
					}
				}
				l.Alive(sentAt)
			}
		}
	}
	// A wait that times out must leave the connection usable: interrupt
	// it with a read deadline, not a cancel request.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return s.errorf(op, err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+changesChannel+"; LISTEN "+heartbeat).ReadAll(); err != nil {
		return s.listenErr(ctx, op, err)
	}
	// Every change that commits from now on is notified on conn; those
	// that committed before are in the log.
	if !ls.listening {
		head, err := ls.head(ctx, conn)
		if err != nil {
			return s.listenErr(ctx, op, err)
		}
		ls.last, ls.known = keystore.Change{Seq: head}, false
		ls.listening = true
		l.Listening()
	} else if err := ls.replay(ctx); err != nil {
		return err
	}
	ready = true
	for _, ch := range held {
		ls.notify(ch)
	}
	held = nil
	defer func() {
		if !heard {
			ls.deaf++
		}
	}()

	next := time.Now().Add(HeartbeatInterval)
	for {
		deadline := next
		if pending {
			deadline = sentAt.Add(HeartbeatTimeout)
		}
		wctx, cancel := context.WithDeadline(ctx, deadline)
		err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil && !pgconn.Timeout(err) || ctx.Err() != nil {
			return s.listenErr(ctx, op, err)
		}
		now := time.Now()
		ls.stable = heard && now.Sub(heardFrom) >= stableAfter
		if pending {
			if now.Sub(sentAt) >= HeartbeatTimeout {
				return unavailableErr(op, "heartbeat unanswered for "+HeartbeatTimeout.String())
			}
			continue
		}
		if now.Before(next) {
			continue
		}
		sequence++
		pending, payload, sentAt = true, strconv.Itoa(sequence), now
		next = now.Add(HeartbeatInterval)
		ectx, cancel := context.WithTimeout(ctx, HeartbeatTimeout)
		_, err = conn.Exec(ectx, "NOTIFY "+heartbeat+", '"+payload+"'").ReadAll()
		cancel()
		if err != nil && ctx.Err() == nil && pgconn.Timeout(err) {
			return unavailableErr(op, "heartbeat unanswered for "+HeartbeatTimeout.String())
		}
		if err != nil {
			return s.listenErr(ctx, op, err)
		}
	}
}

// head reads the highest sequence number of the log on conn.
func (ls *listenSession) head(ctx context.Context, conn *pgconn.PgConn) (int64, error) {
	ctx, cancel := withTimeout(ctx, QueryTimeout)
	defer cancel()
	res, err := conn.Exec(ctx, `SELECT coalesce(max(seq), 0) FROM changes`).ReadAll()
	if err != nil {
		return 0, err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return 0, &dataError{"unexpected answer to the change log's head"}
	}
	return strconv.ParseInt(string(res[0].Rows[0][0]), 10, 64)
}

// replay passes to l what committed after ls.last while no connection
// listened, once the log proves that it still holds all of it: ls.last is
// still there (nothing after it was pruned) and the log has not gone back.
// The first query reads ls.last itself along with what follows it.
func (ls *listenSession) replay(ctx context.Context) error {
	s := ls.s
	after, verify := ls.last.Seq, ls.last.Seq > 0
	for {
		from, limit := after, replayBatch
		if verify {
			from, limit = after-1, replayBatch+1
		}
		changes, err := s.Changes(ctx, from, limit)
		if err != nil {
			return err
		}
		if verify {
			if err := ls.check(ctx, changes); err != nil {
				return err
			}
			changes, verify = changes[1:], false
			limit--
		}
		for _, ch := range changes {
			ls.notify(ch)
		}
		if len(changes) < limit {
			return nil
		}
		after = changes[len(changes)-1].Seq
	}
}

// check verifies that changes, read from just before ls.last, begin with it.
func (ls *listenSession) check(ctx context.Context, changes []keystore.Change) error {
	after := ls.last.Seq
	if len(changes) == 0 || changes[0].Seq != after {
		head, err := ls.s.LastChange(ctx)
		if err != nil {
			return err
		}
		if head < after {
			return fmt.Errorf("%w: the change log ends at %d, before %d, the last change this instance heard of", errGap, head, after)
		}
		return fmt.Errorf("%w: change %d is no longer in the change log", errGap, after)
	}
	if ls.known && (changes[0].Kind != ls.last.Kind || ls.last.AccountID != "" && changes[0].AccountID != ls.last.AccountID) {
		return fmt.Errorf("%w: change %d in the change log is not the one this instance heard of", errGap, after)
	}
	return nil
}

// poll is Listen for a store that cannot listen: it reads the change log
// every PollInterval. The session begins (l.Listening) once the head of
// the log is known; after each read that succeeds, every change committed
// before the read began has been passed to l (l.Alive). Reads that fail
// are retried at the next tick; the session ends only as a listening one
// does, when the log cannot prove that nothing was missed.
func (ls *listenSession) poll(ctx context.Context) error {
	const op = "listen"
	s := ls.s
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	for {
		start := time.Now()
		var err error
		if !ls.listening {
			var head int64
			if head, err = s.LastChange(ctx); err == nil {
				ls.last, ls.known, ls.listening = keystore.Change{Seq: head}, false, true
				ls.l.Listening()
			}
		} else {
			err = ls.replay(ctx)
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, errGap):
			return unavailableErr(op, err.Error())
		case err != nil && s.closed.Load():
			return s.listenErr(ctx, op, err)
		case err != nil:
			if !ls.failing {
				ls.failing = true
				s.logger.Warn("reading the postgres change log failed; retrying every "+PollInterval.String(), zap.Error(err))
			}
		default:
			if ls.failing {
				ls.failing = false
				s.logger.Info("reading the postgres change log works again")
			}
			ls.l.Alive(start)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// replayBatch is how many changes one query of a replay reads at most.
const replayBatch = 1000

// listenErr is ctx's error once ctx has ended, else err translated.
func (s *Store) listenErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return s.errorf(op, err)
}

// unavailableErr is an error matching keystore.ErrUnavailable.
func unavailableErr(op, detail string) error {
	return &opError{op: op, reason: keystore.ErrUnavailable.Error() + ": " + detail, errs: []error{keystore.ErrUnavailable}}
}

// parsePayload decodes "<seq>:<kind>[:<account id>]". A payload it cannot
// read gives a Change with Seq 0, which tells the listener to read the log.
func parsePayload(p string) keystore.Change {
	seqText, rest, ok := strings.Cut(p, ":")
	seq, err := strconv.ParseInt(seqText, 10, 64)
	if !ok || err != nil || seq <= 0 {
		return keystore.Change{}
	}
	kind, account, _ := strings.Cut(rest, ":")
	if kind == "" {
		return keystore.Change{}
	}
	return keystore.Change{Seq: seq, Kind: keystore.ChangeKind(kind), AccountID: account}
}
