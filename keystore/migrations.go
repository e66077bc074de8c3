package keystore

import (
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Migration is one versioned schema change, embedded in a backend as a
// file named NNNN_name.up.sql.
type Migration struct {
	// Version is the NNNN of the file name; versions are applied in order.
	Version int
	// Name is the file name without ".up.sql", e.g. "0001_init".
	Name string
	// SQL is the file's contents.
	SQL string
}

// LoadMigrations reads the files of fsys matching pattern (e.g.
// "migrations/*.up.sql"), sorted by version. A file name without a positive
// version, or two files with one version, is an error.
func LoadMigrations(fsys fs.FS, pattern string) ([]Migration, error) {
	files, err := fs.Glob(fsys, pattern)
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, f := range files {
		name := strings.TrimSuffix(path.Base(f), ".up.sql")
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("bad migration file name %q", f)
		}
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("duplicate migration version %d", ms[i].Version)
		}
	}
	return ms, nil
}
