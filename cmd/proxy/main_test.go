package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// asBinary, set in a process's environment, makes this package's test
// binary behave as the proxy command, so that tests can run the command as
// a separate process (as another user, in another network namespace)
// without building it again.
const asBinary = "TRELLIS_PROXY_TEST_AS_BINARY"

// binary is a copy of the test binary that any user can run (the go tool
// keeps the original in a directory only its owner can enter).
var binary string

func TestMain(m *testing.M) {
	if os.Getenv(asBinary) == "1" {
		os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
	}
	code := func() int {
		dir, err := os.MkdirTemp("", "trellis-proxy-test-")
		if err != nil {
			_, _ = fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer func() { _ = os.RemoveAll(dir) }()
		if err := os.Chmod(dir, 0o755); err != nil {
			_, _ = fmt.Fprintln(os.Stderr, err)
			return 1
		}
		binary = filepath.Join(dir, "proxy")
		if err := copyExecutable(binary); err != nil {
			_, _ = fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func copyExecutable(to string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.Link(self, to); err == nil {
		return os.Chmod(to, 0o755)
	}
	in, err := os.Open(self)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// command is the proxy command with args, as a process.
func command(args ...string) *exec.Cmd {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), asBinary+"=1")
	return cmd
}

func TestCLI(t *testing.T) {
	tests := map[string]struct {
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		"no subcommand":      {nil, 2, "", "Subcommands:\n  init"},
		"unknown subcommand": {[]string{"serve"}, 2, "", `proxy: unknown subcommand "serve"`},
		"help":               {[]string{"help"}, 0, "wait-ready", ""},
		"version":            {[]string{"version"}, 0, "v0.1.0\n", ""},
		"subcommand help":    {[]string{"init", "-h"}, 0, "-exclude-outbound-cidrs", ""},
		"bad flag":           {[]string{"init", "--exclude-inbound-ports=15020,http"}, 2, "", `"http" is not a port number (1-65535); write comma-separated ports such as 15020,9090`},
		"unknown flag":       {[]string{"run", "--outbound-port=1"}, 2, "", "flag provided but not defined: -outbound-port\nRun \"proxy run -h\" for its flags."},
		"stray argument":     {[]string{"wait-ready", "now"}, 2, "", `unexpected argument "now"`},
		"invalid plan":       {[]string{"init", "--proxy-uid=0"}, 2, "", "--proxy-uid is 0 (root)"},
		"dry run": {
			[]string{"init", "--dry-run", "--exclude-outbound-cidrs=169.254.169.254"}, 0,
			"\t\tip daddr 169.254.169.254 counter return\n", "",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := cli(tc.args, &stdout, &stderr)
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tc.wantCode, stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.wantStdout) || (tc.wantStdout == "" && stdout.Len() > 0) {
				t.Errorf("stdout:\n%s\nwant it to contain %q", stdout.String(), tc.wantStdout)
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) || (tc.wantStderr == "" && stderr.Len() > 0) {
				t.Errorf("stderr:\n%s\nwant it to contain %q", stderr.String(), tc.wantStderr)
			}
		})
	}
}

// The binary, not just cli: main's exit codes reach the shell.
func TestBinaryExitCodes(t *testing.T) {
	out, err := command("version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "v0.1.0" {
		t.Errorf("proxy version = %q, %v", out, err)
	}
	err = command("frobnicate").Run()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("proxy frobnicate: %v, want exit status 2", err)
	}
}

// proxyProcess is a running `proxy run`, whose log tells the test where it
// listens.
type proxyProcess struct {
	cmd    *exec.Cmd
	stdout syncBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // its exit, once done is closed

	mu    sync.Mutex
	log   []string
	addrs map[string][]string // listener name -> addresses
	ready chan struct{}       // closed when it logs "proxy ready"
}

// startProxy starts cmd, a `proxy run`, with start (cmd.Start, or a
// variant that starts it elsewhere) and waits until it is ready.
func startProxy(t *testing.T, cmd *exec.Cmd, start func(*exec.Cmd) error) *proxyProcess {
	t.Helper()
	p := &proxyProcess{cmd: cmd, done: make(chan struct{}), addrs: map[string][]string{}, ready: make(chan struct{})}
	cmd.Stdout = &p.stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := start(cmd); err != nil {
		t.Fatal(err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			p.record(s.Text())
		}
	}()
	go func() {
		<-scanned // Wait closes the pipe: read it all first
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill() // ours, by PID
			<-p.done
		}
		if t.Failed() {
			t.Logf("proxy log:\n%s\nproxy stdout:\n%s", strings.Join(p.logLines(), "\n"), p.stdout.String())
		}
	})
	select {
	case <-p.ready:
	case <-p.done:
		t.Fatalf("the proxy exited before it was ready: %v\n%s", p.err, strings.Join(p.logLines(), "\n"))
	case <-time.After(20 * time.Second):
		t.Fatalf("the proxy was not ready after 20s:\n%s", strings.Join(p.logLines(), "\n"))
	}
	return p
}

func (p *proxyProcess) record(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = append(p.log, line)
	var entry struct{ Msg, Listener, Addr string }
	if json.Unmarshal([]byte(line), &entry) != nil {
		return
	}
	switch entry.Msg {
	case "listening":
		p.addrs[entry.Listener] = append(p.addrs[entry.Listener], entry.Addr)
	case "proxy ready":
		close(p.ready)
	}
}

func (p *proxyProcess) logLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.log...)
}

// addr is where listener listens, the first address if it has several.
func (p *proxyProcess) addr(listener string) string {
	return p.listening(listener)[0]
}

func (p *proxyProcess) listening(listener string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.addrs[listener]...)
}

// wait waits for the process to exit and returns how.
func (p *proxyProcess) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		t.Fatalf("the proxy did not exit within %v", within)
		return nil
	}
}

// metric is the value of the series named (name with its labels, as
// /metrics writes them) in a Prometheus text exposition; -1 when absent.
func metric(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

func httpGet(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
