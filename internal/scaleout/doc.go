// Package scaleout tests spkgate deployed the way the README's Scale-out
// section describes it: several gateway processes (the binary that
// cmd/caddy builds) on one PostgreSQL. The tests start the processes on
// free loopback ports against a throwaway PostgreSQL cluster, measure how
// fast revocations, plan changes and creations on one instance reach the
// others, start instances together on an empty database, and reload one
// under load. The package has no code outside its tests.
package scaleout
