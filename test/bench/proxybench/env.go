package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// nsPrefix starts the name of every network namespace a run makes; the
	// run's PID follows, so that a later run can tell a dead run's leftovers.
	nsPrefix = "trellis-bench-"
	// The client's and the server's addresses on the bridge: a network of
	// this run's own, inside its namespaces.
	clientIP   = "10.79.0.2"
	serverIP   = "10.79.0.3"
	prefixLen  = 24
	serverPort = 8080
	bodyBytes  = 1024
	// stopGrace is how long a process has to exit after SIGTERM before SIGKILL.
	stopGrace = 5 * time.Second
)

// netns is a network namespace of the run.
type netns struct {
	name string
	ip   string // on the bridge; "" for the node, which has none
}

// benchEnv is what a scenario runs in: the client's and the server's network
// namespaces, joined by veths to a bridge in a third one (the node), a
// temporary directory for configs, certificates and logs, and the processes
// started in them, which close stops. The Trellis rows add their control
// plane and its link from the host to the bridge (trellis.go), which close
// removes too.
type benchEnv struct {
	client, server, node netns
	dir                  string
	tools                tools
	pprof                bool // the Trellis rows profile their proxies (-pprof)

	mu       sync.Mutex
	procs    []*proc
	made     []string     // namespaces to delete
	hostLink string       // the veth the Trellis rows add in the host's namespace, to delete
	mesh     *trellisMesh // started by the first Trellis row
	ok       bool         // the run finished: the directory can go
}

// newBenchEnv makes the namespaces and links. It first deletes the
// namespaces of earlier runs whose process is gone (killed with SIGKILL,
// which no defer survives).
func newBenchEnv(ctx context.Context, t tools) (*benchEnv, error) {
	removeStaleNamespaces()
	dir, err := os.MkdirTemp("", "trellis-proxybench-")
	if err != nil {
		return nil, err
	}
	prefix := fmt.Sprintf("%s%d-", nsPrefix, os.Getpid())
	e := &benchEnv{
		client: netns{name: prefix + "client", ip: clientIP},
		server: netns{name: prefix + "server", ip: serverIP},
		node:   netns{name: prefix + "node"},
		dir:    dir,
		tools:  t,
	}
	if err := e.link(ctx); err != nil {
		e.close()
		return nil, fmt.Errorf("making the network namespaces: %w", err)
	}
	return e, nil
}

// link makes the three namespaces: the node's bridge, and one veth from it
// to eth0 in the client and in the server.
func (e *benchEnv) link(ctx context.Context) error {
	for _, ns := range []netns{e.node, e.client, e.server} {
		if err := ipCmd(ctx, "netns", "add", ns.name); err != nil {
			return err
		}
		e.made = append(e.made, ns.name)
		if err := ipCmd(ctx, "-n", ns.name, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"-n", e.node.name, "link", "add", "br0", "type", "bridge"},
		{"-n", e.node.name, "link", "set", "br0", "up"},
	}
	for _, l := range []struct {
		ns   netns
		port string // the veth's end on the bridge
	}{{e.client, "client"}, {e.server, "server"}} {
		ns, port := l.ns, l.port
		steps = append(steps,
			[]string{"-n", e.node.name, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name},
			[]string{"-n", e.node.name, "link", "set", port, "master", "br0", "up"},
			[]string{"-n", ns.name, "addr", "add", fmt.Sprintf("%s/%d", ns.ip, prefixLen), "dev", "eth0"},
			[]string{"-n", ns.name, "link", "set", "eth0", "up"},
		)
	}
	for _, s := range steps {
		if err := ipCmd(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// close stops every process the run started, last first, and deletes its
// namespaces, which takes their links with them. The directory stays when
// the run failed, for the processes' logs.
func (e *benchEnv) close() {
	e.mu.Lock()
	procs := e.procs
	e.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop()
	}
	if e.mesh != nil {
		e.mesh.stop(e)
	}
	// Not ctx: the run's context is done on Ctrl-C, and this must still run.
	if e.hostLink != "" {
		if err := ipCmd(context.Background(), "link", "del", e.hostLink); err != nil {
			logf("%v", err)
		}
	}
	for _, n := range e.made {
		if err := ipCmd(context.Background(), "netns", "del", n); err != nil {
			logf("%v", err)
		}
	}
	if e.ok {
		_ = os.RemoveAll(e.dir)
	} else {
		logf("configs and logs kept in %s", e.dir)
	}
}

func removeStaleNamespaces() {
	entries, _ := os.ReadDir("/run/netns")
	for _, ent := range entries {
		rest, ok := strings.CutPrefix(ent.Name(), nsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		logf("deleting %s, left by run %d", ent.Name(), pid)
		if err := ipCmd(context.Background(), "netns", "del", ent.Name()); err != nil {
			logf("%v", err)
		}
	}
}

func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// childAttr makes a child its own process group, so that Ctrl-C reaches only
// this program, which then stops the children in order; and kills the child
// if this program dies without doing so.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// inNetns is argv run in ns. `ip netns exec` execs argv in its own process,
// so the process's PID is the command's.
func inNetns(ns netns, argv ...string) []string {
	return append([]string{"ip", "netns", "exec", ns.name}, argv...)
}

// do runs f on an OS thread that has entered ns, then takes the thread back
// to this program's namespace. Sockets that f opens stay in ns, and
// processes it starts are born there.
func (ns netns) do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening this thread's network namespace: %w", err)
			return
		}
		defer func() { _ = unix.Close(self) }()
		target, err := unix.Open(filepath.Join("/run/netns", ns.name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening network namespace %s: %w", ns.name, err)
			return
		}
		defer func() { _ = unix.Close(target) }()
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering %s: %w", ns.name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leaving %s: %w", ns.name, err))
			// The thread is stuck in ns: it must serve no other goroutine,
			// and must not exit either, since a process f started gets
			// SIGKILL when the thread that started it exits (Pdeathsig).
			select {}
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// proc is a long-running process of the run: the server or a proxy.
type proc struct {
	name     string
	cmd      *exec.Cmd
	log      string // its stdout and stderr
	done     chan struct{}
	err      error // how it exited; set before done closes
	stopping atomic.Bool
	stopOnce sync.Once
}

// start starts argv in ns as a long-running process, with its output in the
// run's directory; close stops it if the caller does not.
func (e *benchEnv) start(ns netns, name string, argv ...string) (*proc, error) {
	args := inNetns(ns, argv...)
	return e.launch(name, exec.Command(args[0], args[1:]...), (*exec.Cmd).Start)
}

// startAs starts argv in ns as a long-running process of uid (and the
// same GID), with env added to this program's environment: a proxy, which
// runs as the UID that proxy init exempts from redirection. It is started
// from a thread that has entered ns, as `ip netns exec` could not do once
// the UID is no longer root's.
func (e *benchEnv) startAs(ns netns, name string, uid uint32, env []string, argv ...string) (*proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = "/"
	return e.launch(name, cmd, func(cmd *exec.Cmd) error {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: uid}
		return ns.do(cmd.Start)
	})
}

// launch starts cmd with start, its output in the run's directory, and
// keeps it for close.
func (e *benchEnv) launch(name string, cmd *exec.Cmd, start func(*exec.Cmd) error) (*proc, error) {
	e.mu.Lock()
	n := len(e.procs)
	e.mu.Unlock()
	p := &proc{name: name, cmd: cmd, log: filepath.Join(e.dir, fmt.Sprintf("%02d-%s.log", n, name)), done: make(chan struct{})}
	out, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	defer func() { _ = out.Close() }() // the child has its own descriptor
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = childAttr()
	if err := start(cmd); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop ends the process by its PID: SIGTERM, then SIGKILL after stopGrace.
func (p *proc) stop() {
	p.stopOnce.Do(func() {
		p.stopping.Store(true)
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// waitHTTP waits until url answers a GET from the client's namespace, and
// fails early when a process of the run has exited unasked.
func (e *benchEnv) waitHTTP(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		_, err := e.runIn(ctx, e.client, e.tools.fortio, "curl", "-quiet", url)
		if err == nil {
			return nil
		}
		if err := e.exited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer from %s within 15s; last try: %w", url, e.client.name, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// exited says which process of the run has exited without being stopped,
// if one has, with the end of its output.
func (e *benchEnv) exited() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range e.procs {
		if p.stopping.Load() {
			continue
		}
		select {
		case <-p.done:
		default:
			continue
		}
		b, _ := os.ReadFile(p.log)
		if len(b) > 2000 {
			b = b[len(b)-2000:]
		}
		return fmt.Errorf("%s exited (%w); its output:\n%s", p.name, p.err, bytes.TrimSpace(b))
	}
	return nil
}

// runIn runs argv in ns to its end and returns its stdout.
func (e *benchEnv) runIn(ctx context.Context, ns netns, argv ...string) ([]byte, error) {
	args := inNetns(ns, argv...)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.SysProcAttr = childAttr()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, lastLine(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// writeFile writes a file into the run's directory and returns its path.
func (e *benchEnv) writeFile(name string, data []byte) (string, error) {
	p := filepath.Join(e.dir, name)
	return p, os.WriteFile(p, data, 0o600)
}

func (t *tools) resolve() error {
	var missing []string
	for _, p := range []*string{&t.haproxy, &t.fortio, &t.wrk} {
		abs, err := exec.LookPath(*p)
		if err != nil {
			missing = append(missing, *p)
			continue
		}
		if abs, err = filepath.Abs(abs); err == nil {
			*p = abs
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s not found: hack/bench-tools.sh installs haproxy and wrk and builds fortio into bin/", strings.Join(missing, ", "))
	}
	return nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
