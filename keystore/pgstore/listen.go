package pgstore

import (
	"context"
	"crypto/rand"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

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

// Interface guard.
var _ keystore.Notifier = (*Store)(nil)

// Listen implements keystore.Notifier. It opens a connection of its own,
// outside the pool, runs LISTEN spk_changes on it and passes changes to l
// as their transactions commit.
//
// Every HeartbeatInterval the session sends a NOTIFY to a channel only it
// listens on and waits for it to come back. PostgreSQL delivers
// notifications in commit order, so when the heartbeat arrives every
// change committed before it was sent has arrived too: that is what
// l.Alive reports. A heartbeat that does not come back within
// HeartbeatTimeout (a connection that died silently) ends the session with
// an error matching keystore.ErrUnavailable, as does any connection error.
//
// Listen needs a direct or session-pooled connection: through a
// transaction-pooling proxy (PgBouncer's pool_mode=transaction) LISTEN
// delivers nothing, and the missing heartbeats end every session.
func (s *Store) Listen(ctx context.Context, l keystore.ChangeListener) error {
	const op = "listen"
	if err := s.closedErr(op); err != nil {
		return err
	}
	heartbeat := "spk_heartbeat_" + strings.ToLower(rand.Text()[:16])
	var (
		pending  bool      // a heartbeat is on its way
		payload  string    // the pending heartbeat's payload
		sentAt   time.Time // when it was sent
		sequence int
	)
	cfg := s.listenCfg.Copy()
	// Notifications are handled as they are read, on this goroutine, in
	// the order the server sends them, whichever call reads them.
	cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) {
		switch n.Channel {
		case changesChannel:
			l.Notified(parsePayload(n.Payload))
		case heartbeat:
			if pending && n.Payload == payload {
				pending = false
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
	l.Listening()

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
