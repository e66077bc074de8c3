package keycache

import "github.com/spkgate/spkgate/keys"

// testActor makes the changes of these tests (the audit trail's actor).
var testActor = keys.Actor{Name: "test", Source: keys.SourceCLI}
