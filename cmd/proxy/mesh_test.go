package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/trellis-mesh/trellis/ca"
	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/test/testenv"
)

// meshCluster is a mesh in miniature: a real API server (envtest), the
// real control plane binary, and "pods" that are network namespaces on a
// bridge that the test makes, each with proxy init's rules and proxy run
// as UID 2102, exactly as in a meshed pod.
type meshCluster struct {
	kube       kubernetes.Interface
	dir        string
	kubeconfig string
	signerDir  string
	bundle     string
	cpBinary   string
	cpAddr     string
	cpHTTP     string
	bridge     string

	mu sync.Mutex
	cp *exec.Cmd
}

const (
	meshNS       = "shop"
	bridgeIP     = "10.81.0.1"
	cpServerName = "trellis-controlplane.trellis-system.svc"
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
	// The proxies (UID 2102) read their token and roots from here, so
	// not t.TempDir, whose parent only root may enter.
	dir, err := os.MkdirTemp("", "trellis-mesh-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m := &meshCluster{dir: dir}
	env, cfg, _, err := testenv.Start(testenv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	if m.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	m.kubeconfig = filepath.Join(m.dir, "kubeconfig")
	writeKubeconfig(t, cfg, m.kubeconfig)

	// The mesh CA, as the operator keeps it.
	root, err := ca.NewRoot("cluster.local", 0, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := ca.NewIssuer(root, "cluster.local", 0, time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	m.signerDir = filepath.Join(m.dir, "signer")
	m.bundle = filepath.Join(m.dir, "ca.crt")
	writeFile(t, m.bundle, root.CertPEM, 0o644)
	if err := os.Mkdir(m.signerDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(m.signerDir, ca.IssuerCertKey), issuer.FullChainPEM(), 0o600)
	writeFile(t, filepath.Join(m.signerDir, ca.IssuerKeyKey), issuer.KeyPEM, 0o600)
	writeFile(t, filepath.Join(m.signerDir, ca.BundleKey), root.CertPEM, 0o600)

	m.cpBinary = filepath.Join(m.dir, "controlplane")
	if out, err := exec.Command("go", "build", "-o", m.cpBinary, "github.com/trellis-mesh/trellis/cmd/controlplane").CombinedOutput(); err != nil {
		t.Fatalf("building the control plane: %v\n%s", err, out)
	}

	m.bridge = fmt.Sprintf("trb%d", os.Getpid()%100000)
	hostIP(t, "link", "add", m.bridge, "type", "bridge")
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", m.bridge).Run() })
	hostIP(t, "addr", "add", bridgeIP+"/24", "dev", m.bridge)
	hostIP(t, "link", "set", m.bridge, "up")
	m.cpAddr = bridgeIP + ":15012"
	m.cpHTTP = "127.0.0.1:" + freePort(t)

	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "trellis-system"}},
		{ObjectMeta: metav1.ObjectMeta{Name: meshNS, Labels: map[string]string{"trellis-injection": "enabled"}}},
	} {
		if _, err := m.kube.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	m.startControlPlane(t)
	t.Cleanup(func() { m.stopControlPlane(t) })
	return m
}

func hostIP(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

func writeKubeconfig(t *testing.T, cfg *rest.Config, path string) {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["envtest"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "envtest"}
	kc.CurrentContext = "envtest"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
}

// startControlPlane runs the control plane binary and waits until it is ready.
func (m *meshCluster) startControlPlane(t *testing.T) {
	t.Helper()
	cmd := exec.Command(m.cpBinary, "--mesh=default", "--namespace=trellis-system", "--trust-domain=cluster.local",
		"--signer-dir="+m.signerDir, "--grpc-addr="+m.cpAddr, "--http-addr="+m.cpHTTP, "--mtls-mode=Strict", "--log-level=debug")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+m.kubeconfig)
	log, err := os.OpenFile(filepath.Join(m.dir, "controlplane.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = log.Close()
	m.mu.Lock()
	m.cp = cmd
	m.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + m.cpHTTP + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(filepath.Join(m.dir, "controlplane.log"))
			t.Fatalf("the control plane was not ready in 30s:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopControlPlane kills the control plane (ours, by PID), as an outage would.
func (m *meshCluster) stopControlPlane(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	cmd := m.cp
	m.cp = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// meshPod is a pod of the mesh: a network namespace on the bridge, with
// its Pod object in the API server and, if meshed, its proxy.
type meshPod struct {
	*netns
	name, ip string
	proxy    *proxyProcess
	admin    *http.Client
}

type podSpec struct {
	name, ip string
	// serviceAccount the Pod object runs as; proxyAccount is the one its
	// proxy has a token for (the same, but for an impostor).
	serviceAccount, proxyAccount string
	ports                        []int32
	// meshed: the pod has a sidecar.
	meshed bool
}

func (m *meshCluster) addPod(t *testing.T, s podSpec) *meshPod {
	t.Helper()
	ctx := context.Background()
	n := newNetns(t, fmt.Sprintf("trellis-mesh-%d-%s", os.Getpid(), s.name))
	veth := "trv" + s.ip[strings.LastIndex(s.ip, ".")+1:] + fmt.Sprint(os.Getpid()%10000)
	hostIP(t, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", n.name)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", veth).Run() })
	hostIP(t, "link", "set", veth, "master", m.bridge)
	hostIP(t, "link", "set", veth, "up")
	n.ip(t, "addr", "add", s.ip+"/24", "dev", "eth0")
	n.ip(t, "link", "set", "eth0", "up")
	n.ip(t, "route", "add", "default", "via", bridgeIP)
	p := &meshPod{netns: n, name: s.name, ip: s.ip, admin: n.httpClient()}

	for _, sa := range []string{s.serviceAccount, s.proxyAccount} {
		_, err := m.kube.CoreV1().ServiceAccounts(meshNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
		if err != nil && !strings.Contains(err.Error(), "already exists") {
			t.Fatal(err)
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: meshNS, Labels: map[string]string{"app": s.name}},
		Spec: corev1.PodSpec{
			ServiceAccountName: s.serviceAccount,
			NodeName:           "node-1",
			Containers:         []corev1.Container{{Name: "app", Image: "example.com/app:1"}},
		},
	}
	for _, port := range s.ports {
		pod.Spec.Containers[0].Ports = append(pod.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: port})
	}
	if s.meshed {
		pod.Annotations = map[string]string{inject.AnnotationStatus: "{}"}
	}
	created, err := m.kube.CoreV1().Pods(meshNS).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: s.ip, PodIPs: []corev1.PodIP{{IP: s.ip}}}
	if _, err := m.kube.CoreV1().Pods(meshNS).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if !s.meshed {
		return p
	}

	n.run(t, "init", "--outbound-port=15001", "--inbound-port=15006", "--proxy-uid=2102", "--exclude-inbound-ports=15020")
	tr, err := m.kube.CoreV1().ServiceAccounts(meshNS).CreateToken(ctx, s.proxyAccount,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{inject.TokenAudience}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	token := filepath.Join(m.dir, s.name+".token")
	writeFile(t, token, []byte(tr.Status.Token), 0o644)
	cmd := command("run", "--control-plane-name="+cpServerName, "--token-file="+token, "--trust-bundle-file="+m.bundle,
		"--drain-timeout=5s", "--detect-timeout=300ms")
	cmd.Env = append(cmd.Env,
		inject.EnvControlPlane+"="+m.cpAddr,
		inject.EnvPodName+"="+s.name, inject.EnvPodNamespace+"="+meshNS, inject.EnvPodIP+"="+s.ip,
		inject.EnvServiceAccount+"="+s.proxyAccount, inject.EnvTrustDomain+"=cluster.local",
		inject.EnvMTLSMode+"=Strict", inject.EnvLogLevel+"=debug")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: inject.ProxyUID, Gid: inject.ProxyUID}}
	p.proxy = startProxy(t, cmd, func(cmd *exec.Cmd) error { return n.do(cmd.Start) })
	return p
}

// addService adds a Service whose endpoints are pods (no controller runs:
// the test writes the EndpointSlice), and returns its ClusterIP.
func (m *meshCluster) addService(t *testing.T, name string, ports []corev1.ServicePort, pods ...*meshPod) string {
	t.Helper()
	ctx := context.Background()
	svc, err := m.kube.CoreV1().Services(meshNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: meshNS},
		Spec:       corev1.ServiceSpec{Ports: ports},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: meshNS, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, sp := range ports {
		slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{Name: ptr.To(sp.Name), Port: ptr.To(sp.TargetPort.IntVal), Protocol: ptr.To(corev1.ProtocolTCP)})
	}
	for _, p := range pods {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{p.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: meshNS, Name: p.name},
		})
	}
	if _, err := m.kube.DiscoveryV1().EndpointSlices(meshNS).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return svc.Spec.ClusterIP
}

func servicePort(name string, port, target int32) corev1.ServicePort {
	sp := corev1.ServicePort{Name: name, Port: port, Protocol: corev1.ProtocolTCP}
	sp.TargetPort.IntVal = target
	return sp
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

	echo := listen("7070")
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
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
	client := m.addPod(t, podSpec{name: "client", ip: "10.81.0.2", serviceAccount: "client", proxyAccount: "client", meshed: true})
	server := m.addPod(t, podSpec{name: "server", ip: "10.81.0.3", serviceAccount: "server", proxyAccount: "server", ports: []int32{8080, 9090, 7070}, meshed: true})
	// The impostor's Pod says it runs as "server", but its proxy holds
	// "impostor"'s certificate.
	impostor := m.addPod(t, podSpec{name: "impostor", ip: "10.81.0.4", serviceAccount: "server", proxyAccount: "impostor", ports: []int32{8080}, meshed: true})
	outsider := m.addPod(t, podSpec{name: "outsider", ip: "10.81.0.5", serviceAccount: "default", proxyAccount: "default"})
	serveApps(t, server)
	serveApps(t, impostor)
	web := m.addService(t, "web", []corev1.ServicePort{
		servicePort("http", 80, 8080), servicePort("grpc", 9090, 9090), servicePort("echo", 7070, 7070),
	}, server)
	fake := m.addService(t, "fake", []corev1.ServicePort{servicePort("http", 80, 8080)}, impostor)

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
		m.stopControlPlane(t)
		time.Sleep(2 * time.Second)
		m.startControlPlane(t)
		<-done
		if len(failures) > 0 || sent < 50 {
			t.Fatalf("%d of %d requests failed with the control plane stopped and restarted:\n%s", len(failures), sent, strings.Join(failures, "\n"))
		}
		// The proxies are back on the restarted control plane: a Service
		// created now is found.
		later := m.addService(t, "later", []corev1.ServicePort{servicePort("http", 80, 8080)}, server)
		deadline := time.Now().Add(20 * time.Second)
		for {
			code, body, _, err := get(client.http1(false), "http://"+later+"/later")
			if err == nil && code == 200 && body == "server HTTP/1.1 /later" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a Service created after the restart: %d %q %v", code, body, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if n := server.metric(t, `trellis_proxy_http_responses_total{direction="inbound",dst_service="",dst_workload="shop/server",src_workload="shop/client",status_class="2xx"}`); n < float64(sent) {
			t.Errorf("the server's proxy counted %v requests from shop/client in mutual TLS, want at least the %d sent during the outage", n, sent)
		}
	})
	for _, p := range []*meshPod{client, server} {
		if code, _ := httpGet(t, p.admin, "http://127.0.0.1:15020/ready"); code != 200 {
			t.Errorf("%s's proxy is not ready: %d", p.name, code)
		}
	}
	if t.Failed() {
		if f, err := os.Open(filepath.Join(m.dir, "controlplane.log")); err == nil {
			s := bufio.NewScanner(f)
			var lines []string
			for s.Scan() {
				lines = append(lines, s.Text())
			}
			_ = f.Close()
			if len(lines) > 60 {
				lines = lines[len(lines)-60:]
			}
			t.Logf("control plane log (end):\n%s", strings.Join(lines, "\n"))
		}
	}
}
