package caddybin

import (
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/spkgate/spkgate/internal/testkit"
)

// Process is our Caddy running as a child process of a test.
type Process struct {
	// Cmd is the running command.
	Cmd *exec.Cmd
	// Logs is everything it wrote to stdout and stderr.
	Logs *testkit.SyncBuffer
	// Exited is closed once the process has exited.
	Exited chan struct{}

	t    testing.TB
	name string
}

// Start starts cmd (its output goes to Logs) and stops it when the test
// ends. name names it in failures.
func Start(t testing.TB, name string, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{Cmd: cmd, Logs: new(testkit.SyncBuffer), Exited: make(chan struct{}), t: t, name: name}
	cmd.Stdout, cmd.Stderr = p.Logs, p.Logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.Exited) }()
	t.Cleanup(p.Stop)
	return p
}

// Stop ends the process with SIGTERM (SIGKILL after 15 s, which fails the
// test) and shows the end of its output if the test failed. It may be
// called more than once.
func (p *Process) Stop() {
	select {
	case <-p.Exited:
	default:
		p.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.Exited:
		case <-time.After(15 * time.Second):
			p.Cmd.Process.Kill()
			<-p.Exited
			p.t.Errorf("%s did not stop on SIGTERM", p.name)
		}
	}
	if p.t.Failed() {
		out := p.Logs.String()
		if len(out) > 8000 {
			out = "..." + out[len(out)-8000:]
		}
		p.t.Logf("%s output:\n%s", p.name, out)
	}
}
