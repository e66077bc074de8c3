// Package sqlitestore is the embedded keystore.Store: one SQLite file,
// through the pure-Go modernc.org/sqlite driver, so that spkgate runs with
// no database server.
//
// The database is opened in WAL mode. Reads go through a pool of read-only
// connections and never wait for writers; writes go through a single
// connection whose transactions begin IMMEDIATE, so that writers queue on
// SQLite's busy handler (BusyTimeout) instead of failing with SQLITE_BUSY,
// whether they are goroutines of this process or another process (such as
// a command line tool) using the same file.
//
// Times are stored as UTC text with exactly six fractional digits, so they
// round-trip to the microsecond and compare as text.
package sqlitestore
