package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/trellis-mesh/trellis/proxy/redirect"
	"github.com/trellis-mesh/trellis/sidecar"
)

// TestRedirectInNetns is a pod in miniature: two network namespaces joined
// by a veth pair, "pod" (10.78.0.1, fd78::1) and "peer" (10.78.0.2 and
// 10.78.0.3, fd78::2). proxy init writes its rules in the pod, proxy run
// runs there as the proxy's UID, and connections made as root in the pod
// (outbound) and from the peer (inbound) must go through the proxy, which
// its metrics count, unless their port or network is excluded. The host's
// own network namespace is never touched.
func TestRedirectInNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it creates network namespaces, writes nftables rules in one, and runs the proxy as UID 2102")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2) to create network namespaces")
	}
	prefix := fmt.Sprintf("trellis-proxytest-%d", os.Getpid())
	pod, peer := newNetns(t, prefix+"-pod"), newNetns(t, prefix+"-peer")
	pod.ip(t, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", peer.name)
	pod.ip(t, "addr", "add", "10.78.0.1/24", "dev", "eth0")
	pod.ip(t, "addr", "add", "fd78::1/64", "dev", "eth0", "nodad")
	pod.ip(t, "link", "set", "eth0", "up")
	peer.ip(t, "addr", "add", "10.78.0.2/24", "dev", "eth0")
	peer.ip(t, "addr", "add", "10.78.0.3/24", "dev", "eth0")
	peer.ip(t, "addr", "add", "fd78::2/64", "dev", "eth0", "nodad")
	peer.ip(t, "addr", "add", "fd78::3/64", "dev", "eth0", "nodad")
	peer.ip(t, "link", "set", "eth0", "up")

	// The init container, with the injector's flags: the admin port and
	// 9999 are not redirected inbound; port 9090 and the peer's second
	// addresses are not redirected outbound.
	initArgs := []string{"init", "--outbound-port=15001", "--inbound-port=15006", "--proxy-uid=2102",
		"--exclude-inbound-ports=15020,9999", "--exclude-outbound-ports=9090", "--exclude-outbound-cidrs=10.78.0.3/32,fd78::3/128"}
	f, err := parseInitFlags(initArgs[1:], io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := redirect.NewPlan(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if out := pod.run(t, initArgs...); out != strings.Join(plan.Summary(), "\n")+"\n" {
		t.Errorf("proxy init printed:\n%s\nwant:\n%s", out, strings.Join(plan.Summary(), "\n"))
	}
	assertRules(t, pod, plan)

	// Servers: an echo server on the peer (what the app calls) and in the
	// pod (the app, for inbound calls), each on a redirected port and an
	// excluded one.
	for _, port := range []string{"8080", "9090"} {
		peer.listen(t, ":"+port)
	}
	for _, port := range []string{"8080", "9999"} {
		pod.listen(t, ":"+port)
	}

	cmd := command("run", "--drain-timeout=10s")
	cmd.Env = append(cmd.Env, sidecar.EnvAccessLog+"=JSON", sidecar.EnvPodIP+"=10.78.0.1", sidecar.EnvLogLevel+"=debug")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: sidecar.ProxyUID, Gid: sidecar.ProxyUID}}
	proxy := startProxy(t, cmd, func(cmd *exec.Cmd) error { return pod.do(cmd.Start) })
	if out, in := proxy.listening("outbound"), proxy.listening("inbound"); len(out) != 2 || len(in) != 2 {
		t.Errorf("listening on %v and %v, want IPv4 and IPv6 for both directions", out, in)
	}

	admin := pod.httpClient()
	counts := func() map[string]float64 {
		t.Helper()
		_, text := httpGet(t, admin, "http://127.0.0.1:15020/metrics")
		m := map[string]float64{}
		for _, dir := range []string{"outbound", "inbound"} {
			m[dir] = metric(text, fmt.Sprintf(`trellis_proxy_tcp_connections_opened_total{direction=%q}`, dir))
			m[dir+" not redirected"] = metric(text, fmt.Sprintf(`trellis_proxy_tcp_failed_total{direction=%q,reason="not_redirected"}`, dir))
		}
		return m
	}
	// expect runs a connection and checks which counters it moved.
	expect := func(what string, connect func(), moved map[string]float64) {
		t.Helper()
		before := counts()
		connect()
		waitFor(t, what+": counters", func() bool {
			after := counts()
			for k := range after {
				if after[k]-before[k] != moved[k] {
					return false
				}
			}
			return true
		}, func() string { return fmt.Sprintf("before %v, after %v, want moved %v", before, counts(), moved) })
	}

	// Outbound, from the app (root, not the proxy's UID).
	expect("outbound IPv4", func() { echoFrom(t, pod, "10.78.0.2:8080") }, map[string]float64{"outbound": 1})
	expect("outbound IPv6", func() { echoFrom(t, pod, "[fd78::2]:8080") }, map[string]float64{"outbound": 1})
	expect("outbound to an excluded port", func() { echoFrom(t, pod, "10.78.0.2:9090") }, nil)
	expect("outbound to an excluded IPv4 network", func() { echoFrom(t, pod, "10.78.0.3:8080") }, nil)
	expect("outbound to an excluded IPv6 network", func() { echoFrom(t, pod, "[fd78::3]:8080") }, nil)
	// Inbound, from the peer.
	expect("inbound IPv4", func() { echoFrom(t, peer, "10.78.0.1:8080") }, map[string]float64{"inbound": 1})
	expect("inbound IPv6", func() { echoFrom(t, peer, "[fd78::1]:8080") }, map[string]float64{"inbound": 1})
	expect("inbound to an excluded port", func() { echoFrom(t, peer, "10.78.0.1:9999") }, nil)
	expect("inbound to the admin port", func() {
		if code, _ := httpGet(t, peer.httpClient(), "http://10.78.0.1:15020/ready"); code != 200 {
			t.Errorf("the kubelet's view of /ready: %d", code)
		}
	}, nil)

	// Calling the proxy's own ports must not loop. From the peer, the
	// outbound port is redirected to the inbound listener, which connects
	// to the outbound one as the proxy: that connection is not
	// redirected, so the outbound listener closes it.
	expect("peer to the outbound port", func() { closedFrom(t, peer, "10.78.0.1:15001") },
		map[string]float64{"inbound": 1, "outbound": 1, "outbound not redirected": 1})
	expect("app to the outbound port on localhost", func() { closedFrom(t, pod, "127.0.0.1:15001") },
		map[string]float64{"outbound": 1, "outbound not redirected": 1})

	// A second init replaces the rules with the same ones, under a
	// running proxy.
	pod.run(t, initArgs...)
	assertRules(t, pod, plan)
	expect("outbound after a second init", func() { echoFrom(t, pod, "10.78.0.2:8080") }, map[string]float64{"outbound": 1})

	if access := proxy.stdout.String(); !strings.Contains(access, `"direction":"outbound","client":"10.78.0.1:`) ||
		!strings.Contains(access, `"destination":"10.78.0.2:8080","bytesFromClient":5,"bytesFromServer":5`) ||
		!strings.Contains(access, `"destination":"[fd78::1]:8080"`) {
		t.Errorf("access log lacks the connections:\n%s", access)
	}

	// SIGTERM drains: /ready fails, new connections are refused, an open
	// one keeps working, and the proxy exits 0 once it closes.
	held := pod.dial(t, "10.78.0.2:8080")
	roundTrip(t, held, "before")
	start := time.Now()
	if err := proxy.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/ready to fail", func() bool {
		code, _ := httpGet(t, admin, "http://127.0.0.1:15020/ready")
		return code == http.StatusServiceUnavailable
	}, nil)
	waitFor(t, "new connections to be refused", func() bool {
		c, err := pod.dialErr("10.78.0.2:8080")
		if err == nil {
			_ = c.Close()
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	}, nil)
	roundTrip(t, held, "during the drain")
	_ = held.Close()
	if err := proxy.wait(t, 5*time.Second); err != nil {
		t.Errorf("the proxy exited with %v, want 0", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("the drain took %v: it waited for the timeout, not for the connection", d)
	}
}

// netns is a network namespace the test made.
type netns struct {
	name string
	fd   int
}

func newNetns(t *testing.T, name string) *netns {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("cannot create network namespace %s (%v): %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	fd, err := unix.Open("/var/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	n := &netns{name: name, fd: fd}
	n.ip(t, "link", "set", "lo", "up")
	return n
}

func (n *netns) ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", n.name}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s %s: %v: %s", n.name, strings.Join(args, " "), err, out)
	}
}

// run runs the proxy command in n with ip netns exec, as root, and returns
// its stdout.
func (n *netns) run(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.name, binary}, args...)...)
	cmd.Env = append(os.Environ(), asBinary+"=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("proxy %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// do runs f on an OS thread that has entered n. Sockets that f opens stay
// in n, and processes it starts are born there. The thread is never
// unlocked, so it dies with its goroutine instead of serving others.
func (n *netns) do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering %s: %w", n.name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

func (n *netns) dialErr(addr string) (net.Conn, error) {
	var c net.Conn
	err := n.do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	return c, err
}

func (n *netns) dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := n.dialErr(addr)
	if err != nil {
		t.Fatalf("from %s: %v", n.name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

func (n *netns) httpClient() *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(_ context.Context, _, addr string) (net.Conn, error) {
				return n.dialErr(addr)
			},
		},
	}
}

// listen runs an echo server in n.
func (n *netns) listen(t *testing.T, addr string) {
	t.Helper()
	var ln net.Listener
	if err := n.do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				if _, err := io.Copy(c, c); err == nil {
					_ = c.(*net.TCPConn).CloseWrite()
				}
			}()
		}
	}()
}

// echoFrom sends "hello" to an echo server at addr from n and checks that
// it comes back, and that the connection then closes cleanly.
func echoFrom(t *testing.T, n *netns, addr string) {
	t.Helper()
	c := n.dial(t, addr)
	roundTrip(t, c, "hello")
	_ = c.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(c); err != nil || len(rest) > 0 {
		t.Errorf("%s from %s: after the echo, %q, %v; want EOF", addr, n.name, rest, err)
	}
	_ = c.Close()
}

// closedFrom connects to addr from n and expects the connection to be
// closed at once, with no data.
func closedFrom(t *testing.T, n *netns, addr string) {
	t.Helper()
	c, err := n.dialErr(addr)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s from %s: %v", addr, n.name, err)
		}
		return
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if b, err := io.ReadAll(c); len(b) > 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Errorf("%s from %s: read %q, %v; want the connection closed", addr, n.name, b, err)
	}
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("read %q, %v; want %q", got, err, msg)
	}
}

// assertRules reads n's nftables tables back over netlink and compares them
// with plan: the same tables, chains, hooks and expressions, nothing more.
func assertRules(t *testing.T, n *netns, plan redirect.Plan) {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(n.fd))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := conn.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) != len(plan.Tables) {
		t.Errorf("%d tables in %s, want %d", len(tables), n.name, len(plan.Tables))
	}
	for _, pt := range plan.Tables {
		fam := nftables.TableFamilyIPv4
		if pt.Family == redirect.IPv6 {
			fam = nftables.TableFamilyIPv6
		}
		table, err := conn.ListTableOfFamily(redirect.TableName, fam)
		if err != nil {
			t.Errorf("table %s %s: %v", pt.Family, redirect.TableName, err)
			continue
		}
		chains, err := conn.ListChainsOfTableFamily(fam)
		if err != nil {
			t.Fatal(err)
		}
		if len(chains) != len(pt.Chains) {
			t.Errorf("table %s: %d chains, want %d", pt.Family, len(chains), len(pt.Chains))
		}
		for _, pc := range pt.Chains {
			chain, err := conn.ListChain(table, pc.Name())
			if err != nil {
				t.Errorf("table %s chain %s: %v", pt.Family, pc.Name(), err)
				continue
			}
			if chain.Type != nftables.ChainTypeNAT || chain.Hooknum == nil || chain.Priority == nil ||
				*chain.Hooknum != *hookOf(pc.Hook) || *chain.Priority != nftables.ChainPriority(pc.Priority) {
				t.Errorf("table %s chain %s: type %s hook %v priority %v", pt.Family, pc.Name(), chain.Type, deref(chain.Hooknum), deref(chain.Priority))
			}
			rules, err := conn.GetRules(table, chain)
			if err != nil {
				t.Fatal(err)
			}
			if len(rules) != len(pc.Rules) {
				t.Errorf("table %s chain %s: %d rules, want %d", pt.Family, pc.Name(), len(rules), len(pc.Rules))
				continue
			}
			for i, r := range rules {
				got := zeroCounters(r.Exprs)
				if want := pc.Rules[i].Exprs(pt.Family); !reflect.DeepEqual(got, want) {
					t.Errorf("table %s chain %s rule %d (%s):\n got %s\nwant %s", pt.Family, pc.Name(), i, pc.Rules[i], describe(got), describe(want))
				}
			}
		}
	}
}

func hookOf(h redirect.Hook) *nftables.ChainHook {
	if h == redirect.Output {
		return nftables.ChainHookOutput
	}
	return nftables.ChainHookPrerouting
}

// zeroCounters drops the counts, which traffic has moved, from exprs.
func zeroCounters(exprs []expr.Any) []expr.Any {
	out := make([]expr.Any, len(exprs))
	for i, e := range exprs {
		if _, ok := e.(*expr.Counter); ok {
			e = &expr.Counter{}
		}
		out[i] = e
	}
	return out
}

func describe(exprs []expr.Any) string {
	s := make([]string, len(exprs))
	for i, e := range exprs {
		s[i] = fmt.Sprintf("%T%+v", e, e)
	}
	return strings.Join(s, " ")
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// waitFor polls cond for up to 10 s; explain, if not nil, says what was
// seen when it times out.
func waitFor(t *testing.T, what string, cond func() bool, explain func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			if explain != nil {
				msg = ": " + explain()
			}
			t.Fatalf("timed out waiting for %s%s", what, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
