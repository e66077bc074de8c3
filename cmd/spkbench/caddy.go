package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

func startUpstream() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	body := []byte(`{"monitors":[]}`)
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	return ln, nil
}

// caddyProc is one Caddy process under test.
type caddyProc struct {
	name  string
	cmd   *exec.Cmd
	base  string
	admin string
	// wantRateLimit makes an answer without a RateLimit header an error:
	// the Caddy's keys are on a plan with limits, so every answer to
	// them must show that the limiter ran.
	wantRateLimit bool
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// The directives in front of reverse_proxy in the Caddys under test.
const (
	spkAuth = "spk_auth {\n\t\tpolicy statuspage\n\t}"
	// headersOnly makes spk_auth's header edits for a full-access key,
	// with no check.
	headersOnly = `request_header -Authorization
	request_header X-Spk-Account-Id acct_bench_1795600000000000000
	request_header X-Spk-Key-Id key_01JDBENCH0000000000000000
	request_header X-Spk-Scopes *
	request_header X-Spk-Plan pro`
	// limitsOn is the spk app's limits block of -limits for the seeded
	// keys' plan: the highest rate limits.Rate accepts (one request a
	// microsecond) and a quota no run reaches, so that the limiter does
	// all its work on every request and refuses none.
	limitsOn = "limits pro {\n\t\t\trate 1000000 1s\n\t\t\tquota 1000000000000000 month\n\t\t}"
)

// startCaddy starts a Caddy proxying to upstream, with directives in front
// of the proxy and, with a storage line (and any further lines of the spk
// app after it), the spk app. All keep 1024 idle
// connections per upstream (Caddy's default of 32 makes reverse_proxy open
// a connection per request under this load).
func startCaddy(cfg config, name, upstream, storage, directives string) (*caddyProc, error) {
	port, adminPort := freePort(), freePort()
	dir := filepath.Join(cfg.workDir, "caddy-"+name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var global string
	if storage != "" {
		global = "spk {\n\t\t" + storage + "\n\t}"
	}
	caddyfile := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	storage file_system %s
	%s
}
http://127.0.0.1:%d {
	%s
	reverse_proxy %s {
		transport http {
			keepalive_idle_conns_per_host 1024
		}
	}
}
`, adminPort, dir, global, port, directives, upstream)
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(caddyfile), 0o600); err != nil {
		return nil, err
	}
	args := []string{cfg.caddyBin, "run", "--config", file, "--adapter", "caddyfile"}
	if cfg.caddyCPU != "" {
		if ts, err := exec.LookPath("taskset"); err == nil {
			args = append([]string{ts, "-c", cfg.caddyCPU}, args...)
		}
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	logf, err := os.Create(filepath.Join(dir, "caddy.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &caddyProc{name: name, cmd: cmd, base: fmt.Sprintf("http://127.0.0.1:%d", port), admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort)}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.admin + "/config/")
		if err == nil {
			resp.Body.Close()
			return p, nil
		}
		if time.Now().After(deadline) {
			p.stop()
			log, _ := os.ReadFile(filepath.Join(dir, "caddy.log"))
			return nil, fmt.Errorf("caddy %s did not start:\n%s", name, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *caddyProc) stop() {
	p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// cpuTicks returns the process's user+system CPU time in clock ticks.
func (p *caddyProc) cpuTicks() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	var utime, stime int64
	fmt.Sscan(fields[11], &utime)
	fmt.Sscan(fields[12], &stime)
	return utime + stime
}

// metric reads one sample of the process's Prometheus metrics.
func (p *caddyProc) metric(name string) float64 {
	resp, err := http.Get(p.admin + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// cpuProfile writes a CPU profile of p, taken for d (whole seconds, at
// least one) through its admin endpoint, to path.
func (p *caddyProc) cpuProfile(path string, d time.Duration) error {
	secs := max(1, int(d/time.Second))
	resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", p.admin, secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("admin answered %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// status sends one API request with key and returns the status.
func (p *caddyProc) status(client *http.Client, key string) int {
	req, _ := http.NewRequest("GET", p.base+"/v1/monitors/42", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// adminJSON calls the spk admin API of p; a status other than 2xx is an
// error.
func (p *caddyProc) adminJSON(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, p.admin+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s on %s: %s %s", method, path, p.name, resp.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}
