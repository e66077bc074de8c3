package pgstore_test

import (
	"testing"

	"github.com/spkgate/spkgate/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
