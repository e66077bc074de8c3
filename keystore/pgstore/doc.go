// Package pgstore is the PostgreSQL keystore.Store, through pgx and a
// pgxpool connection pool. Several spkgate instances can share one
// database: each follows the others' revocations, plan changes and key
// creations through the change log (keystore.Store.Changes).
//
// Open applies the embedded migrations under a PostgreSQL advisory lock,
// so that any number of instances starting at once on an empty database
// all come up. Errors are translated at the package boundary: a driver type
// never leaks out, and an error message never contains the connection
// string, its password or a key hash. A store that cannot answer
// (connection refused, timeout, server shutting down, pool closed) returns
// an error matching keystore.ErrUnavailable.
package pgstore
