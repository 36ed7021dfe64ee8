package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/controlplane/traffic"
	"github.com/trellis-mesh/trellis/sidecar"
	"github.com/trellis-mesh/trellis/test/meshnet"
)

// meshCluster is a mesh in miniature: meshnet's control plane (a real API
// server and the real control plane binary) and "pods" that are network
// namespaces on a bridge that the test makes, each with proxy init's rules
// and proxy run as UID 2102, exactly as in a meshed pod.
type meshCluster struct {
	*meshnet.ControlPlane
	bridge string
}

const (
	meshNS   = "shop"
	bridgeIP = "10.81.0.1"
)

func newMeshCluster(t *testing.T) *meshCluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: it creates network namespaces and a bridge, writes nftables rules, and runs proxies as UID 2102")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("needs KUBEBUILDER_ASSETS (kube-apiserver and etcd): run it with make test-go")
	}
	m := &meshCluster{bridge: fmt.Sprintf("trb%d", os.Getpid()%100000)}
	hostIP(t, "link", "add", m.bridge, "type", "bridge")
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", m.bridge).Run() })
	hostIP(t, "addr", "add", bridgeIP+"/24", "dev", m.bridge)
	hostIP(t, "link", "set", m.bridge, "up")
	cp, err := meshnet.Start(meshnet.Options{GRPCAddr: bridgeIP + ":15012", MTLSMode: "Strict", Namespaces: []string{meshNS}})
	if err != nil {
		t.Fatal(err)
	}
	m.ControlPlane = cp
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane log (end):\n%s", cp.TailLog(60))
		}
		cp.Stop()
	})
	return m
}

func hostIP(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// meshPod is a pod of the mesh: a network namespace on the bridge, with
// its Pod object in the API server and, if meshed, its proxy.
type meshPod struct {
	*netns
	meshnet.Pod
	name, ip string
	proxy    *proxyProcess
	admin    *http.Client
}

func (m *meshCluster) addPod(t *testing.T, s meshnet.Pod) *meshPod {
	t.Helper()
	s.Namespace = meshNS
	n := newNetns(t, fmt.Sprintf("trellis-mesh-%d-%s", os.Getpid(), s.Name))
	veth := "trv" + s.IP[strings.LastIndex(s.IP, ".")+1:] + fmt.Sprint(os.Getpid()%10000)
	hostIP(t, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", n.name)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", veth).Run() })
	hostIP(t, "link", "set", veth, "master", m.bridge)
	hostIP(t, "link", "set", veth, "up")
	n.ip(t, "addr", "add", s.IP+"/24", "dev", "eth0")
	n.ip(t, "link", "set", "eth0", "up")
	n.ip(t, "route", "add", "default", "via", bridgeIP)
	p := &meshPod{netns: n, Pod: s, name: s.Name, ip: s.IP, admin: n.httpClient()}
	env, args, err := m.AddPod(s)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Meshed {
		return p
	}
	n.run(t, "init", "--outbound-port=15001", "--inbound-port=15006", "--proxy-uid=2102", "--exclude-inbound-ports=15020")
	cmd := command(append([]string{"run", "--drain-timeout=5s", "--detect-timeout=300ms", "--report-interval=1s"}, args...)...)
	cmd.Env = append(cmd.Env, env...)
	cmd.Env = append(cmd.Env, sidecar.EnvLogLevel+"=debug")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: sidecar.ProxyUID, Gid: sidecar.ProxyUID}}
	p.proxy = startProxy(t, cmd, func(cmd *exec.Cmd) error { return n.do(cmd.Start) })
	return p
}

// addService adds a Service of pods and returns its ClusterIP.
func (m *meshCluster) addService(t *testing.T, name string, ports []meshnet.ServicePort, pods ...*meshPod) string {
	t.Helper()
	var ps []meshnet.Pod
	for _, p := range pods {
		ps = append(ps, p.Pod)
	}
	ip, err := m.AddService(meshNS, name, ports, ps...)
	if err != nil {
		t.Fatal(err)
	}
	return ip
}

func servicePort(name string, port, target int32) meshnet.ServicePort {
	return meshnet.ServicePort{Name: name, Port: port, Target: target}
}

// metrics reads one series of a pod's proxy.
func (p *meshPod) metric(t *testing.T, series string) float64 {
	t.Helper()
	_, text := httpGet(t, p.admin, "http://127.0.0.1:15020/metrics")
	return metric(text, series)
}

// serveApps runs the test's apps in a pod: HTTP on 8080 (HTTP/1.1 and
// HTTP/2 without TLS; it answers with the protocol it was spoken to in and
// its own name), gRPC health on 9090, and a TCP echo on 7070.
func serveApps(t *testing.T, p *meshPod) {
	t.Helper()
	listen := func(port string) net.Listener {
		var ln net.Listener
		if err := p.do(func() (err error) { ln, err = net.Listen("tcp", ":"+port); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		return ln
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: protocols, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(time.Second)
		}
		w.Header().Set("X-App", p.name)
		_, _ = fmt.Fprintf(w, "%s %s %s", p.name, r.Proto, r.URL.Path)
	})}
	go func() { _ = srv.Serve(listen("8080")) }()
	t.Cleanup(func() { _ = srv.Close() })

	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(listen("9090")) }()
	t.Cleanup(gs.Stop)

	p.listen(t, ":7070") // the TCP echo
}

// http1 is an HTTP/1.1 client in pod p; keepAlive false opens a connection per request.
func (p *meshPod) http1(keepAlive bool) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: !keepAlive,
		DialContext:       func(_ context.Context, _, addr string) (net.Conn, error) { return p.dialErr(addr) },
	}}
}

// h2c is an HTTP/2 client without TLS (prior knowledge) in pod p.
func (p *meshPod) h2c() *http.Client {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Protocols:   &protocols,
		DialContext: func(_ context.Context, _, addr string) (net.Conn, error) { return p.dialErr(addr) },
	}}
}

// eventually retries f for up to 20 seconds.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func get(c *http.Client, url string) (int, string, http.Header, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header, err
}

// TestMeshBetweenPods carries HTTP/1.1, HTTP/2, gRPC (unary and streaming)
// and opaque TCP between two meshed pods in mutual TLS, refuses a
// plaintext client in Strict mode and a server with the wrong identity, and
// loses no request while the control plane is down.
func TestMeshBetweenPods(t *testing.T) {
	m := newMeshCluster(t)
	client := m.addPod(t, meshnet.Pod{Name: "client", IP: "10.81.0.2", ServiceAccount: "client", Meshed: true})
	server := m.addPod(t, meshnet.Pod{Name: "server", IP: "10.81.0.3", ServiceAccount: "server", Ports: []int32{8080, 9090, 7070}, Meshed: true})
	// The impostor's Pod says it runs as "server", but its proxy holds
	// "impostor"'s certificate.
	impostor := m.addPod(t, meshnet.Pod{Name: "impostor", IP: "10.81.0.4", ServiceAccount: "server", ProxyAccount: "impostor", Ports: []int32{8080}, Meshed: true})
	outsider := m.addPod(t, meshnet.Pod{Name: "outsider", IP: "10.81.0.5", ServiceAccount: "default"})
	serveApps(t, server)
	serveApps(t, impostor)
	serveApps(t, outsider)
	web := m.addService(t, "web", []meshnet.ServicePort{
		servicePort("http", 80, 8080), servicePort("grpc", 9090, 9090), servicePort("echo", 7070, 7070),
	}, server)
	fake := m.addService(t, "fake", []meshnet.ServicePort{servicePort("http", 80, 8080)}, impostor)

	t.Run("HTTP/1.1", func(t *testing.T) {
		code, body, h, err := get(client.http1(true), "http://"+web+"/one")
		if err != nil || code != 200 || body != "server HTTP/1.1 /one" {
			t.Fatalf("GET /one: %d %q %v %v; want 200 from the server app, spoken to in HTTP/1.1", code, body, h, err)
		}
	})
	t.Run("HTTP/2", func(t *testing.T) {
		code, body, _, err := get(client.h2c(), "http://"+web+"/two")
		if err != nil || code != 200 || body != "server HTTP/2.0 /two" {
			t.Fatalf("GET /two over HTTP/2: %d %q %v; want 200 from the server app, spoken to in HTTP/2", code, body, err)
		}
	})
	t.Run("gRPC", func(t *testing.T) {
		conn, err := grpc.NewClient(web+":9090", grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(_ context.Context, addr string) (net.Conn, error) { return client.dialErr(addr) }))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		hc := healthpb.NewHealthClient(conn)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("unary Check: %v %v", resp, err)
		}
		stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if msg, err := stream.Recv(); err != nil || msg.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("streaming Watch: %v %v", msg, err)
		}
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nonexistent"}); err == nil || !strings.Contains(err.Error(), "NotFound") {
			t.Fatalf("a gRPC error status must come back as it is: got %v", err)
		}
	})
	t.Run("opaque TCP", func(t *testing.T) {
		c := client.dial(t, web+":7070")
		roundTrip(t, c, "PING\r\n")
		if n := server.metric(t, `trellis_proxy_tcp_routed_total{direction="inbound",mtls="true",peer="shop/client"}`); n < 1 {
			t.Errorf("the server's proxy counted %v opaque connections from shop/client in mutual TLS, want 1", n)
		}
	})
	t.Run("requests arrived in mutual TLS from the client's identity", func(t *testing.T) {
		series := `trellis_proxy_http_responses_total{direction="inbound",dst_service="",dst_workload="shop/server",src_workload="shop/client",status_class="2xx"}`
		if n := server.metric(t, series); n < 2 {
			t.Errorf("%s = %v, want at least the HTTP/1.1 and HTTP/2 requests", series, n)
		}
	})
	t.Run("a pod calling its own Service reaches itself through its inbound proxy", func(t *testing.T) {
		// The server is web's only endpoint: its outbound proxy dials its
		// own address, which its output chain sends to its inbound proxy.
		code, body, h, err := get(server.http1(true), "http://"+web+"/self")
		if err != nil || code != 200 || body != "server HTTP/1.1 /self" {
			t.Fatalf("GET /self from the server: %d %q %v %v; want 200 from its own app", code, body, h, err)
		}
		series := `trellis_proxy_http_responses_total{direction="inbound",dst_service="",dst_workload="shop/server",src_workload="shop/server",status_class="2xx"}`
		if n := server.metric(t, series); n < 1 {
			t.Errorf("%s = %v, want the call in mutual TLS from its own identity", series, n)
		}
	})
	t.Run("the control plane's traffic API shows the requests", func(t *testing.T) {
		m.checkTrafficAPI(t)
	})
	t.Run("destinations without a sidecar, or outside the cluster", func(t *testing.T) {
		// A pod without a proxy: plain HTTP from the client's proxy.
		code, body, _, err := get(client.http1(false), "http://"+outsider.ip+":8080/plain")
		if err != nil || code != 200 || body != "outsider HTTP/1.1 /plain" {
			t.Errorf("GET to a pod without a sidecar: %d %q %v", code, body, err)
		}
		// An address the cluster does not know is reached untouched.
		ln, err := net.Listen("tcp", bridgeIP+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = ln.Close() }()
		go func() {
			c, err := ln.Accept()
			if err == nil {
				_, _ = io.Copy(c, c)
				_ = c.Close()
			}
		}()
		roundTrip(t, client.dial(t, ln.Addr().String()), "GET / HTTP/1.1\r\n\r\n")
	})
	t.Run("AuthorizationPolicy: only the allowed identity gets in", func(t *testing.T) {
		ctx := context.Background()
		policy := &meshv1.AuthorizationPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: meshNS, Name: "server-only-from-nobody"},
			Spec: meshv1.AuthorizationPolicySpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
				Action:   meshv1.AuthorizationActionAllow,
				Rules: []meshv1.AuthorizationRule{{From: []meshv1.AuthorizationSource{{
					Identities: []meshv1.SPIFFEIDMatch{"spiffe://cluster.local/ns/shop/sa/nobody"},
				}}}},
			},
		}
		if err := m.Client.Create(ctx, policy); err != nil {
			t.Fatal(err)
		}
		// Gone even if this test fails, or the tests after it are denied.
		t.Cleanup(func() { _ = m.Client.Delete(ctx, policy) })
		eventually(t, "the policy to deny the client", func() error {
			code, _, h, err := get(client.http1(false), "http://"+web+"/denied")
			if err != nil || code != http.StatusForbidden || !strings.Contains(h.Get("Trellis-Proxy-Error"), "spiffe://cluster.local/ns/shop/sa/client may not GET /denied") {
				return fmt.Errorf("%d %q %w", code, h.Get("Trellis-Proxy-Error"), err)
			}
			return nil
		})
		// An opaque connection is accepted by the client's proxy, then
		// reset when the server's proxy refuses it: so soon, at times, that
		// the dial itself sees the reset.
		if c, err := client.dialErr(web + ":7070"); err == nil {
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Write([]byte("PING\r\n"))
			if n, err := c.Read(make([]byte, 16)); err == nil {
				t.Errorf("an opaque connection the policy denies answered %d bytes", n)
			}
			_ = c.Close()
		} else if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("an opaque connection the policy denies: %v, want it accepted and closed, or reset", err)
		}
		if n := server.metric(t, `trellis_proxy_authorization_denied_total{protocol="http",rule=""}`); n < 1 {
			t.Errorf("the server's proxy counted %v denied requests", n)
		}
		if err := m.Client.Delete(ctx, policy); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the client to be let in once the policy is gone", func() error {
			code, body, _, err := get(client.http1(false), "http://"+web+"/allowed")
			if err != nil || code != 200 {
				return fmt.Errorf("%d %q %w", code, body, err)
			}
			return nil
		})
	})
	t.Run("plaintext refused in Strict mode", func(t *testing.T) {
		before := max(0, server.metric(t, `trellis_proxy_inbound_refused_total{reason="plaintext_in_strict_mode"}`))
		_, _, _, err := get(outsider.http1(false), "http://"+server.ip+":8080/plain")
		if err == nil {
			t.Fatal("a plaintext client outside the mesh reached the app of a Strict pod")
		}
		if after := server.metric(t, `trellis_proxy_inbound_refused_total{reason="plaintext_in_strict_mode"}`); after != before+1 {
			t.Errorf("refusals went from %v to %v, want one more", before, after)
		}
	})
	t.Run("a server with the wrong identity is refused", func(t *testing.T) {
		code, body, h, err := get(client.http1(false), "http://"+fake+"/steal")
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusServiceUnavailable || strings.Contains(body, "impostor HTTP") ||
			!strings.Contains(h.Get("Trellis-Proxy-Error"), "want spiffe://cluster.local/ns/shop/sa/server") {
			t.Fatalf("GET through an impostor: %d %q, trellis-proxy-error %q; want 503 naming the identity the endpoint should have", code, body, h.Get("Trellis-Proxy-Error"))
		}
	})
	t.Run("no request lost while the control plane is down", func(t *testing.T) {
		var failures []string
		var mu sync.Mutex
		var sent int
		done := make(chan struct{})
		go func() {
			defer close(done)
			fresh, kept := client.http1(false), client.http1(true)
			deadline := time.Now().Add(6 * time.Second)
			for i := 0; time.Now().Before(deadline); i++ {
				c := fresh
				if i%2 == 1 {
					c = kept
				}
				code, body, _, err := get(c, fmt.Sprintf("http://%s/during/%d", web, i))
				mu.Lock()
				sent++
				if err != nil || code != 200 || !strings.HasPrefix(body, "server ") {
					failures = append(failures, fmt.Sprintf("request %d: %d %q %v", i, code, body, err))
				}
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
		time.Sleep(1500 * time.Millisecond)
		m.StopProcess()
		time.Sleep(2 * time.Second)
		if err := m.StartProcess(); err != nil {
			t.Fatal(err)
		}
		<-done
		if len(failures) > 0 || sent < 50 {
			t.Fatalf("%d of %d requests failed with the control plane stopped and restarted:\n%s", len(failures), sent, strings.Join(failures, "\n"))
		}
		// The proxies are back on the restarted control plane: a Service
		// created now is found.
		later := m.addService(t, "later", []meshnet.ServicePort{servicePort("http", 80, 8080)}, server)
		eventually(t, "a Service created after the restart", func() error {
			code, body, _, err := get(client.http1(false), "http://"+later+"/later")
			if err != nil || code != 200 || body != "server HTTP/1.1 /later" {
				return fmt.Errorf("%d %q %w", code, body, err)
			}
			return nil
		})
		if n := server.metric(t, `trellis_proxy_http_responses_total{direction="inbound",dst_service="",dst_workload="shop/server",src_workload="shop/client",status_class="2xx"}`); n < float64(sent) {
			t.Errorf("the server's proxy counted %v requests from shop/client in mutual TLS, want at least the %d sent during the outage", n, sent)
		}
	})
	for _, p := range []*meshPod{client, server} {
		if code, _ := httpGet(t, p.admin, "http://127.0.0.1:15020/ready"); code != 200 {
			t.Errorf("%s's proxy is not ready: %d", p.name, code)
		}
	}
	t.Run("SIGTERM lets a request in flight finish", func(t *testing.T) {
		type result struct {
			code int
			body string
			err  error
		}
		done := make(chan result, 1)
		go func() {
			code, body, _, err := get(client.http1(true), "http://"+web+"/slow")
			done <- result{code, body, err}
		}()
		time.Sleep(300 * time.Millisecond)
		if err := server.proxy.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if r := <-done; r.err != nil || r.code != 200 || r.body != "server HTTP/1.1 /slow" {
			t.Errorf("the request in flight during the drain: %d %q %v", r.code, r.body, r.err)
		}
		if err := server.proxy.wait(t, 5*time.Second); err != nil {
			t.Errorf("the server's proxy exited with %v, want 0", err)
		}
	})
}

// checkTrafficAPI reads the control plane's /api/v1/ after the subtests'
// requests from client to web (HTTP/1.1, HTTP/2, gRPC, opaque TCP): the
// proxies report every second, and a bucket is shown once it has settled
// (10 s after its end), so the numbers come within half a minute.
func (m *meshCluster) checkTrafficAPI(t *testing.T) {
	t.Helper()
	api := "http://" + m.HTTPAddr()
	getJSON := func(path string, v any) error {
		resp, err := http.Get(api + path)
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return json.NewDecoder(resp.Body).Decode(v)
	}
	var svc traffic.StatResponse
	deadline := time.Now().Add(45 * time.Second)
	for {
		err := getJSON(traffic.PathStat+"?namespace="+meshNS+"&by=service&window=5m", &svc)
		if err != nil {
			t.Fatal(err)
		}
		// At least the HTTP/1.1 and HTTP/2 GETs, the two gRPC Checks and
		// the Watch, and the server's call to itself.
		if len(svc.Rows) > 0 && svc.Rows[0].Name == "web" && svc.Rows[0].Requests >= 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stat by service: %+v; want web's requests", svc.Rows)
		}
		time.Sleep(time.Second)
	}
	if r := svc.Rows[0]; r.SuccessRate == nil || r.LatencyMs == nil || r.TCPConnections < 1 || r.MeshedPods != 1 {
		t.Errorf("web: %+v; want a success rate, latencies, the opaque connection and its one pod", r)
	}

	var edges traffic.EdgesResponse
	if err := getJSON(traffic.PathEdges+"?namespace="+meshNS+"&window=5m", &edges); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range edges.Edges {
		if e.Source.Workload == "client" && e.Destination.Workload == "server" && e.Destination.Service == "web" {
			found = true
			if !e.MTLS || e.Source.Identity != "spiffe://cluster.local/ns/shop/sa/client" || e.Destination.Identity != "spiffe://cluster.local/ns/shop/sa/server" || e.Requests < 5 {
				t.Errorf("client → server: %+v; want their identities, in mutual TLS", e)
			}
		}
	}
	if !found {
		t.Errorf("no edge from client to server: %+v", edges.Edges)
	}

	var proxies []traffic.ProxyStatus
	if err := getJSON(traffic.PathProxies+"?namespace="+meshNS, &proxies); err != nil {
		t.Fatal(err)
	}
	byPod := map[string]traffic.ProxyStatus{}
	for _, p := range proxies {
		byPod[p.Pod] = p
	}
	for _, pod := range []string{"client", "server"} {
		p, ok := byPod[pod]
		if !ok || !p.Connected || p.Version == "" || p.CertNotAfter.Before(time.Now()) || p.LastConfigAt == nil || p.Streams < 1 {
			t.Errorf("proxy of %s: %+v; want it connected, with its version, certificate and config freshness", pod, p)
		}
	}
}
