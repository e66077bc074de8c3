package sqlitestore

import (
	"context"
	"database/sql"
	"errors"

	"modernc.org/sqlite"

	"github.com/spkgate/spkgate/keystore"
)

// SQLite primary result codes (the low byte of an extended code).
const (
	sqliteBusy       = 5
	sqliteLocked     = 6
	sqliteNoMem      = 7
	sqliteReadOnly   = 8
	sqliteInterrupt  = 9
	sqliteIOErr      = 10
	sqliteCorrupt    = 11
	sqliteFull       = 13
	sqliteCantOpen   = 14
	sqliteProtocol   = 15
	sqliteConstraint = 19
	sqliteNotADB     = 26

	sqliteConstraintPrimaryKey = 1555
	sqliteConstraintUnique     = 2067
)

// opError is what every Store method returns on failure: "sqlitestore: op:
// reason", matching the keystore sentinel it wraps (if any) and the
// context error that caused it (if any).
type opError struct {
	op     string
	reason string
	errs   []error
}

func (e *opError) Error() string { return "sqlitestore: " + e.op + ": " + e.reason }

func (e *opError) Unwrap() []error { return e.errs }

// errorf translates err, from operation op, into an *opError.
func (s *Store) errorf(op string, err error) error {
	c := classify(err, s.closed.Load())
	return &opError{op: op, reason: c.msg, errs: c.errs}
}

// invalid is a validation error: it matches no keystore sentinel.
func invalid(op, reason string) error {
	return &opError{op: op, reason: reason}
}

// classified is an error reduced to a safe message and the errors it matches.
type classified struct {
	msg  string
	errs []error
}

func (c *classified) Error() string { return c.msg }

func (c *classified) Unwrap() []error { return c.errs }

// classify maps a driver or database/sql error to the keystore sentinels.
func classify(err error, closed bool) *classified {
	unavailable := func(detail string, extra ...error) *classified {
		return &classified{msg: keystore.ErrUnavailable.Error() + ": " + detail, errs: append([]error{keystore.ErrUnavailable}, extra...)}
	}
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return &classified{msg: keystore.ErrNotFound.Error(), errs: []error{keystore.ErrNotFound}}
	case errors.Is(err, context.Canceled):
		return unavailable(context.Canceled.Error(), context.Canceled)
	case errors.Is(err, context.DeadlineExceeded):
		return unavailable(context.DeadlineExceeded.Error(), context.DeadlineExceeded)
	case closed || errors.Is(err, sql.ErrConnDone):
		return unavailable("store closed")
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		code := se.Code()
		switch code & 0xff {
		case sqliteConstraint:
			if code == sqliteConstraintUnique || code == sqliteConstraintPrimaryKey {
				return &classified{msg: keystore.ErrConflict.Error(), errs: []error{keystore.ErrConflict}}
			}
		case sqliteBusy, sqliteLocked:
			return unavailable("database is locked")
		case sqliteInterrupt:
			return unavailable("interrupted")
		case sqliteNoMem, sqliteReadOnly, sqliteIOErr, sqliteCorrupt, sqliteFull, sqliteCantOpen, sqliteProtocol, sqliteNotADB:
			return unavailable(se.Error())
		}
		return &classified{msg: se.Error(), errs: []error{err}}
	}
	if err.Error() == "sql: database is closed" {
		return unavailable("store closed")
	}
	return &classified{msg: err.Error(), errs: []error{err}}
}

// closedErr is returned before touching a closed store's pools.
func (s *Store) closedErr(op string) error {
	if s.closed.Load() {
		return s.errorf(op, sql.ErrConnDone)
	}
	return nil
}
