package keystore

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoadMigrations(t *testing.T) {
	ms, err := LoadMigrations(fstest.MapFS{
		"m/0002_more.up.sql": {Data: []byte("B")},
		"m/0001_init.up.sql": {Data: []byte("A")},
		"m/README":           {Data: []byte("not a migration")},
	}, "m/*.up.sql")
	if err != nil || len(ms) != 2 || ms[0].Version != 1 || ms[0].Name != "0001_init" || ms[1].SQL != "B" {
		t.Fatalf("%+v %v", ms, err)
	}
	for name, fsys := range map[string]fstest.MapFS{
		"bad name":  {"m/init.up.sql": {}},
		"zero":      {"m/0000_x.up.sql": {}},
		"duplicate": {"m/0001_a.up.sql": {}, "m/1_b.up.sql": {}},
	} {
		if _, err := LoadMigrations(fsys, "m/*.up.sql"); err == nil || !strings.Contains(err.Error(), "migration") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
