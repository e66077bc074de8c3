package pgstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/spkgate/spkgate/keystore"
)

// opError is what every Store method returns on failure: "pgstore: op:
// reason", matching the keystore sentinel it stands for (if any) and the
// context error that caused it (if any), and nothing from pgx.
type opError struct {
	op     string
	reason string
	errs   []error
}

func (e *opError) Error() string { return "pgstore: " + e.op + ": " + e.reason }

func (e *opError) Unwrap() []error { return e.errs }

// pooledStatementsHint explains a prepared statement that exists or
// vanishes unexpectedly.
const pooledStatementsHint = "this looks like a transaction-pooling proxy (PgBouncer pool_mode=transaction) " +
	"that does not keep prepared statements: add default_query_exec_mode=cache_describe to the connection string"

// parseError reports a connection string that pgx cannot use, without
// quoting it (it may hold a password): a TLS setting that cannot be
// applied (such as an sslrootcert file that cannot be read) is named.
func parseError(which string, err error) error {
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) && strings.Contains(pce.Error(), "failed to configure TLS") {
		if inner := pce.Unwrap(); inner != nil {
			return errors.New("pgstore: invalid TLS settings in the " + which + "postgres connection string: " + inner.Error())
		}
	}
	return errors.New("pgstore: invalid " + which + "postgres connection string")
}

// tlsDetail describes a TLS failure, with what to change, or returns "".
func tlsDetail(err error) string {
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return "the server's TLS certificate is not signed by a trusted CA (x509: unknown authority): " +
			"set sslrootcert to the file of the CA that signed it"
	}
	var he x509.HostnameError
	if errors.As(err, &he) {
		return "the server's TLS certificate is not valid for the host name in the connection string: " +
			"connect by a name the certificate lists (sslmode=verify-full checks it)"
	}
	var ie x509.CertificateInvalidError
	if errors.As(err, &ie) {
		return "the server's TLS certificate is not valid: " + ie.Error()
	}
	var ve *tls.CertificateVerificationError
	if errors.As(err, &ve) {
		return "the server's TLS certificate does not verify"
	}
	if strings.Contains(err.Error(), "server refused TLS connection") {
		return "the server does not accept TLS connections, which the connection string's sslmode requires: " +
			"enable ssl on the server, or change sslmode"
	}
	return ""
}

// invalid is a validation error: it matches no keystore sentinel.
func invalid(op, reason string) error { return &opError{op: op, reason: reason} }

// dataError reports a row the store cannot decode.
type dataError struct{ msg string }

func (e *dataError) Error() string { return e.msg }

func (s *Store) errorf(op string, err error) error {
	return translate(op, err, s.closed.Load())
}

// translate maps err from operation op to an *opError.
func translate(op string, err error, closed bool) error {
	unavailable := func(detail string, extra ...error) error {
		return &opError{op: op, reason: keystore.ErrUnavailable.Error() + ": " + detail,
			errs: append([]error{keystore.ErrUnavailable}, extra...)}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return &opError{op: op, reason: keystore.ErrNotFound.Error(), errs: []error{keystore.ErrNotFound}}
	}
	if closed {
		return unavailable("store closed")
	}
	// A context error may arrive alone or inside a pgconn timeout error.
	for _, ce := range []error{context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, ce) {
			return unavailable(ce.Error(), ce)
		}
	}
	var de *dataError
	if errors.As(err, &de) {
		return &opError{op: op, reason: de.msg}
	}
	var se pgx.ScanArgError
	if errors.As(err, &se) {
		return &opError{op: op, reason: "cannot decode column " + se.FieldName}
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return unavailable("cannot connect: " + detail(err))
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505": // unique_violation
			return &opError{op: op, reason: keystore.ErrConflict.Error(), errs: []error{keystore.ErrConflict}}
		case transient(pe.Code):
			return unavailable(detail(err))
		case pe.Code == "42P05" || pe.Code == "26000": // duplicate / invalid prepared statement
			return &opError{op: op, reason: pe.Message + " (SQLSTATE " + pe.Code + "): " + pooledStatementsHint}
		}
		// The message, not the detail: a detail can quote row values.
		return &opError{op: op, reason: pe.Message + " (SQLSTATE " + pe.Code + ")"}
	}
	// Anything else is the connection failing: network errors, a closed
	// pool or connection, a protocol error.
	return unavailable(detail(err))
}

// transient reports whether a SQLSTATE means the server cannot answer now
// (as opposed to rejecting the statement).
func transient(code string) bool {
	switch code[:2] {
	case "08", // connection exception
		"53", // insufficient resources (too many connections, disk full)
		"57", // operator intervention (shutdown, query canceled)
		"58", // system error
		"40", // transaction rollback (serialization failure, deadlock)
		"28", // invalid authorization
		"3D": // invalid catalog name (database does not exist)
		return true
	}
	return code == "55P03" // lock_not_available
}

// detail describes a connection failure without the connection string,
// host names or addresses.
func detail(err error) string {
	if msg := tlsDetail(err); msg != "" {
		return msg
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Message + " (SQLSTATE " + pe.Code + ")"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "cannot resolve the server's host name"
	}
	if pgconn.Timeout(err) {
		return "timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, pgconn.ErrConnClosed) {
		return "connection closed"
	}
	if strings.Contains(err.Error(), "closed pool") {
		return "store closed"
	}
	return "connection failed"
}

// closedErr is returned before touching a closed store's pool.
func (s *Store) closedErr(op string) error {
	if s.closed.Load() {
		return translate(op, nil, true)
	}
	return nil
}
