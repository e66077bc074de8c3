// Package caddybin builds our Caddy (cmd/caddy) for the tests and tools
// that drive the real binary as a separate process.
package caddybin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Package is the import path of our Caddy main.
const Package = "github.com/spkgate/spkgate/cmd/caddy"

// Build compiles cmd/caddy into dir and returns the binary's path. It can
// run from any directory inside the module; the compiler's output goes to
// stderr.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "caddy")
	cmd := exec.Command("go", "build", "-o", bin, Package)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building %s: %w", Package, err)
	}
	return bin, nil
}

// Main builds the binary into a temporary directory for the whole test
// binary, sets *bin to it, runs run (usually m.Run or pgtest.Run(m)),
// removes the directory and exits with run's code. For TestMain.
func Main(bin *string, run func() int) {
	dir, err := os.MkdirTemp("", "spkgate-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin, err = Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := run()
	os.RemoveAll(dir)
	os.Exit(code)
}
