// Command caddy is Caddy v2 with its standard modules and spkgate's, as
// xcaddy would generate it:
//
//	go run ./cmd/caddy run --config Caddyfile.example
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// spkgate's modules.
	_ "github.com/spkgate/spkgate"
)

func main() {
	caddycmd.Main()
}
