package sqlitestore_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/spkgate/spkgate/keystore"
	"github.com/spkgate/spkgate/keystore/storetest"
)

// TestWritersOfAnotherStoreWait: two stores on one file (as a server and a
// command line tool would be) writing at once must not see SQLITE_BUSY.
func TestWritersOfAnotherStoreWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spk.db")
	a, b := openAt(t, path), openAt(t, path)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 10 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			for j := range 10 {
				nk := storetest.CreateKeyParams("acct")
				if _, err := s.CreateKey(ctx, nk); err != nil {
					errs <- err
					continue
				}
				if _, err := s.SetPlan(ctx, "acct", fmt.Sprintf("p%d", j%2)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("write: %v", err)
	}
	list, err := b.ListKeys(ctx, "acct")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 100 {
		t.Errorf("%d keys, want 100", len(list))
	}
}

// TestSecondProcess runs writers in two other processes on the same file
// while this one writes too: none may fail with SQLITE_BUSY, and the
// change log must hold every change exactly once.
func TestSecondProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spk.db")
	s := openAt(t, path)
	const n = 50
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var cmds []*exec.Cmd
	for range 2 {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+path, helperEnv+"_N="+strconv.Itoa(n))
		cmd.Stderr = &prefixWriter{t: t}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	ctx := context.Background()
	for range n {
		if _, err := s.CreateKey(ctx, storetest.CreateKeyParams("acct")); err != nil {
			t.Errorf("CreateKey while other processes write: %v", err)
		}
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper process: %v", err)
		}
	}
	cs, err := s.Changes(ctx, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[keystore.ChangeKind]int{}
	for _, c := range cs {
		counts[c.Kind]++
	}
	if counts[keystore.ChangeCreated] != 3*n || counts[keystore.ChangeRevoked] != 2*n {
		t.Errorf("changes %v, want %d created and %d revoked", counts, 3*n, 2*n)
	}
	list, err := s.ListKeys(ctx, "acct")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != n {
		t.Errorf("%d active keys, want %d", len(list), n)
	}
}
