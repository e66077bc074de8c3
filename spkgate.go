// Package spkgate is the module that xcaddy builds into Caddy:
//
//	xcaddy build v2.11.9 --with github.com/spkgate/spkgate
//
// Importing it registers spkgate's Caddy modules (the spk app, the spk_auth
// and spk_console handlers, the spk.storage.* stores, the admin API routes
// and the "caddy spk" command). The Caddy glue lives in package caddymodule;
// the domain it wires up (apikey, scope, keys, keycache, keystore and its
// backends) is in Caddy-free packages at the top of the module.
package spkgate

import (
	// Register the Caddy modules.
	_ "github.com/spkgate/spkgate/caddymodule"
)
