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
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/trellis-mesh/trellis/sidecar"
	"github.com/trellis-mesh/trellis/test/meshnet"
)

// The Trellis rows run the sidecar as in a meshed pod: proxy init's
// nftables rules in the pod's namespace and proxy run as the proxy's UID,
// asking the real control plane (meshnet: an API server, the mesh CA and
// the control plane binary) about the Service the client calls.
const (
	// hostIP is the host's end of the link from its network namespace to
	// the bridge: the control plane runs on the host, where it reaches the
	// API server on 127.0.0.1, and listens here for the proxies.
	hostIP           = "10.79.0.1"
	hostNet          = "10.79.0.0/24"
	controlPlanePort = 15012
	// kubeNamespace holds the Pods and the Service of the Trellis rows.
	kubeNamespace = "bench"
	// serviceName is the server's Service, which the client calls by its
	// ClusterIP on servicePort, so that proxy init's rules send the call
	// to the client's proxy.
	serviceName  = "server"
	servicePort  = 80
	adminPort    = sidecar.AdminPort
	readyTimeout = 30 * time.Second
	// proxyDrain is the proxies' --drain-timeout, within stopGrace.
	proxyDrain = 2 * time.Second
)

// proxyInitArgs are the injector's proxy init flags.
var proxyInitArgs = []string{"init", "--outbound-port=15001", "--inbound-port=15006", fmt.Sprintf("--proxy-uid=%d", sidecar.ProxyUID), fmt.Sprintf("--exclude-inbound-ports=%d", adminPort)}

// serverPod is what the server's Pod object says of it.
type serverPod int

const (
	serverAbsent serverPod = iota
	serverPlain            // no sidecar: the client's proxy calls the app
	serverMeshed           // a sidecar: the client's proxy calls it in mutual TLS
)

// trellisMesh is what the Trellis rows share: the control plane, the proxy
// binary, and the Pods and Service that stand for the client and the
// server. The client's Pod is meshed; the server's is recreated meshed for
// the two-hop row, which runs after the one-hop row since, once the
// server's namespace has proxy init's rules, every connection to the
// server goes to its proxy.
type trellisMesh struct {
	cp    *meshnet.ControlPlane
	proxy string // the proxy binary

	clientProxy    podProxy
	server         serverPod
	serverProxy    podProxy // when server is serverMeshed
	serverRedirect bool     // proxy init has run in the server's namespace
	clusterIP      string
}

// podProxy is how a meshed pod's proxy runs: the environment and flags
// that meshnet.AddPod gives it.
type podProxy struct {
	env, args []string
}

// trellis returns the Trellis rows' mesh, which the first call starts:
// the link from the host to the bridge, the proxy binary, the control
// plane, and the client's Pod with proxy init's rules in its namespace.
// close stops it all.
func (e *benchEnv) trellis(ctx context.Context) (*trellisMesh, error) {
	if e.mesh != nil {
		return e.mesh, nil
	}
	if err := e.linkHost(ctx); err != nil {
		return nil, fmt.Errorf("linking the host to the bridge for the control plane: %w", err)
	}
	m := &trellisMesh{}
	bin := filepath.Join(e.dir, "bin")
	// The proxy runs as its own UID, which must reach its binary.
	if err := errors.Join(os.Chmod(e.dir, 0o711), os.Mkdir(bin, 0o755)); err != nil {
		return nil, err
	}
	m.proxy = filepath.Join(bin, "proxy")
	logf("building the proxy")
	// As the image builds it (cmd/imagebuild): static, stripped, without
	// gRPC's tracing, so that RSS is what a pod's sidecar has.
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "grpcnotrace", "-ldflags", "-s -w", "-o", m.proxy, "github.com/trellis-mesh/trellis/cmd/proxy")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the proxy: %w\n%s", err, out)
	}
	logf("starting the control plane (an API server, the mesh CA, the control plane on %s:%d)", hostIP, controlPlanePort)
	// envtest logs through controller-runtime's logger, which otherwise
	// prints a stack trace 30s on to say that nobody set it.
	crlog.SetLogger(logr.Discard())
	cp, err := meshnet.Start(meshnet.Options{
		GRPCAddr:   net.JoinHostPort(hostIP, strconv.Itoa(controlPlanePort)),
		MTLSMode:   "Permissive",
		Namespaces: []string{kubeNamespace},
	})
	if err != nil {
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	m.cp = cp
	e.mesh = m
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	env, args, err := cp.AddPod(meshnet.Pod{Name: "client", Namespace: kubeNamespace, IP: e.client.ip, ServiceAccount: "client", Meshed: true})
	if err != nil {
		return nil, fmt.Errorf("creating the client's Pod: %w", err)
	}
	m.clientProxy = podProxy{env: env, args: args}
	if _, err := e.runIn(ctx, e.client, append([]string{m.proxy}, proxyInitArgs...)...); err != nil {
		return nil, fmt.Errorf("proxy init in %s: %w", e.client.name, err)
	}
	return m, nil
}

// linkHost joins the host's network namespace to the bridge with a veth,
// hostIP at the host's end, so that the proxies reach the control plane;
// and gives the client and the server a default route, without which
// connecting to a ClusterIP fails before proxy init's rules can send the
// connection to the proxy.
func (e *benchEnv) linkHost(ctx context.Context) error {
	for _, q := range [][]string{{"-4", "-o", "addr", "show", "to", hostNet}, {"-4", "route", "show", "root", hostNet}} {
		out, err := exec.CommandContext(ctx, "ip", q...).Output()
		if err != nil {
			return fmt.Errorf("ip %s: %w", strings.Join(q, " "), err)
		}
		if trimmed(out) != "" {
			return fmt.Errorf("the host already uses %s (ip %s: %s); the Trellis rows link the host to the bridge as %s: free that network, or leave the Trellis rows out with -scenarios",
				hostNet, strings.Join(q, " "), strings.TrimSpace(string(out)), hostIP)
		}
	}
	link := fmt.Sprintf("trbench%d", os.Getpid())
	if err := ipCmd(ctx, "link", "add", link, "type", "veth", "peer", "name", "host", "netns", e.node.name); err != nil {
		return err
	}
	e.hostLink = link
	steps := [][]string{
		{"addr", "add", fmt.Sprintf("%s/%d", hostIP, prefixLen), "dev", link},
		{"link", "set", link, "up"},
		{"-n", e.node.name, "link", "set", "host", "master", "br0", "up"},
	}
	for _, s := range steps {
		if err := ipCmd(ctx, s...); err != nil {
			return err
		}
	}
	for _, ns := range []netns{e.client, e.server} {
		out, err := exec.CommandContext(ctx, "ip", "-n", ns.name, "route", "show", "default").Output()
		if err != nil {
			return fmt.Errorf("ip -n %s route show default: %w", ns.name, err)
		}
		if trimmed(out) == "" {
			if err := ipCmd(ctx, "-n", ns.name, "route", "add", "default", "via", hostIP); err != nil {
				return err
			}
		}
	}
	return nil
}

func trimmed(b []byte) string { return strings.TrimSpace(string(b)) }

// stop stops the control plane and its API server. After a failed run it
// keeps the control plane's log in the run's directory and prints its end.
func (m *trellisMesh) stop(e *benchEnv) {
	if !e.ok {
		if b, err := os.ReadFile(m.cp.LogFile()); err == nil {
			_ = os.WriteFile(filepath.Join(e.dir, "controlplane.log"), b, 0o644)
		}
		logf("control plane log (end):\n%s", m.cp.TailLog(25))
	}
	m.cp.Stop()
}

// setServer makes the server's Pod object meshed or not, deleting the Pod
// of the other kind first, and creates the Service of the server once. The
// Service's EndpointSlice names the Pod, which the control plane looks up
// for the endpoint's identity.
func (m *trellisMesh) setServer(ctx context.Context, e *benchEnv, meshed bool) error {
	want := serverPlain
	if meshed {
		want = serverMeshed
	}
	if m.server == want {
		return nil
	}
	pod := meshnet.Pod{Name: "server", Namespace: kubeNamespace, IP: e.server.ip, ServiceAccount: "server", Ports: []int32{serverPort}, Meshed: meshed}
	if m.server != serverAbsent {
		if err := m.deletePod(ctx, pod.Name); err != nil {
			return err
		}
		m.server = serverAbsent
	}
	env, args, err := m.cp.AddPod(pod)
	if err != nil {
		return fmt.Errorf("creating the server's Pod (meshed %v): %w", meshed, err)
	}
	m.server, m.serverProxy = want, podProxy{env: env, args: args}
	if m.clusterIP == "" {
		ports := []meshnet.ServicePort{{Name: "http", Port: servicePort, Target: serverPort}}
		if m.clusterIP, err = m.cp.AddService(kubeNamespace, serviceName, ports, pod); err != nil {
			return fmt.Errorf("creating the Service %s/%s: %w", kubeNamespace, serviceName, err)
		}
	}
	return nil
}

// deletePod deletes a Pod at once, as the kubelet confirms a deletion,
// since no kubelet runs here, and waits until it is gone.
func (m *trellisMesh) deletePod(ctx context.Context, name string) error {
	pods := m.cp.Kube.CoreV1().Pods(kubeNamespace)
	now := int64(0)
	if err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &now}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the Pod %s/%s: %w", kubeNamespace, name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		_, err := pods.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("it is still there")
			}
			return fmt.Errorf("the Pod %s/%s was not gone within 10s of its deletion: %w", kubeNamespace, name, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (m *trellisMesh) url() string {
	return fmt.Sprintf("http://%s/", net.JoinHostPort(m.clusterIP, strconv.Itoa(servicePort)))
}

// rowProxy is a proxy a Trellis row started.
type rowProxy struct {
	name string // "client" or "server"
	ns   netns
	p    *proc
}

// startProxy runs proxy run in ns as the proxy's UID, as the proxy
// container does, and waits until it is ready: until it holds its
// certificate from the control plane.
func (m *trellisMesh) startProxy(ctx context.Context, e *benchEnv, ns netns, name string, pp podProxy) (rowProxy, error) {
	argv := append([]string{m.proxy, "run", "--drain-timeout=" + proxyDrain.String()}, pp.args...)
	if e.pprof {
		argv = append(argv, "--pprof")
	}
	env := append(slices.Clone(pp.env), sidecar.EnvLogLevel+"=warn")
	p, err := e.startAs(ns, "trellis-"+name, sidecar.ProxyUID, env, argv...)
	if err != nil {
		return rowProxy{}, err
	}
	if err := e.waitReady(ctx, ns, name); err != nil {
		p.stop()
		return rowProxy{}, err
	}
	return rowProxy{name: name, ns: ns, p: p}, nil
}

// waitReady waits until the proxy in ns answers 200 on /ready, and fails
// early when a process of the run has exited unasked.
func (e *benchEnv) waitReady(ctx context.Context, ns netns, name string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	url := fmt.Sprintf("http://127.0.0.1:%d/ready", adminPort)
	for {
		code, body, err := ns.get(ctx, url)
		if err == nil && code == http.StatusOK {
			return nil
		}
		if err := e.exited(); err != nil {
			return err
		}
		if err == nil {
			err = fmt.Errorf("%d %s", code, trimmed(body))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the %s's proxy was not ready within %v: %s answered %w", name, readyTimeout, url, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// get GETs url from inside ns and returns the status and the body.
func (ns netns) get(ctx context.Context, url string) (int, []byte, error) {
	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := ns.do(func() (err error) {
				var d net.Dialer
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// trellisScenario is a Trellis row: the client's pod meshed, calling the
// server's Service. With two hops the server's pod is meshed too, and the
// proxies speak HTTP/2 in mutual TLS between them; with one, the client's
// proxy calls the server's app in plain HTTP/1.1.
func trellisScenario(name string, hops int) scenario {
	var running []rowProxy // what start started, for verify and profile
	meshed := hops == 2
	return scenario{
		name: name, hops: hops, mesh: true,
		start: func(ctx context.Context, env *benchEnv) (string, []int, func(), error) {
			m, err := env.trellis(ctx)
			if err != nil {
				return "", nil, nil, err
			}
			if err := m.setServer(ctx, env, meshed); err != nil {
				return "", nil, nil, err
			}
			running = nil
			stop := func() {
				for _, p := range running {
					p.p.stop()
				}
			}
			if meshed {
				if !m.serverRedirect {
					if _, err := env.runIn(ctx, env.server, append([]string{m.proxy}, proxyInitArgs...)...); err != nil {
						return "", nil, nil, fmt.Errorf("proxy init in %s: %w", env.server.name, err)
					}
					m.serverRedirect = true
				}
				// The server's first, so that the client's first
				// requests find it.
				p, err := m.startProxy(ctx, env, env.server, "server", m.serverProxy)
				if err != nil {
					return "", nil, nil, err
				}
				running = append(running, p)
			}
			p, err := m.startProxy(ctx, env, env.client, "client", m.clientProxy)
			if err != nil {
				stop()
				return "", nil, nil, err
			}
			running = append([]rowProxy{p}, running...)
			var pids []int
			for _, p := range running {
				pids = append(pids, p.p.pid())
			}
			return m.url(), pids, stop, nil
		},
		verify: func(ctx context.Context, env *benchEnv, answered int) error {
			client := workload("client")
			server := ""
			if meshed {
				server = workload("server")
			}
			// The client's proxy answered them from the server, with its
			// identity when meshed (mutual TLS) and none when not.
			if err := expectResponses(ctx, env.client, "client", answered, map[string]string{
				"direction": "outbound", "src_workload": client, "dst_workload": server, "status_class": "2xx",
			}); err != nil || !meshed {
				return err
			}
			// The server's proxy took them in mutual TLS from the client's.
			return expectResponses(ctx, env.server, "server", answered, map[string]string{
				"direction": "inbound", "src_workload": client, "dst_workload": server, "status_class": "2xx",
			})
		},
		profile: func(ctx context.Context, _ *benchEnv, d time.Duration, prefix string) error {
			var wg sync.WaitGroup
			errs := make([]error, len(running))
			for i, p := range running {
				wg.Go(func() { errs[i] = p.profile(ctx, d, fmt.Sprintf("%s-%s.cpu.pprof", prefix, p.name)) })
			}
			wg.Wait()
			return errors.Join(errs...)
		},
	}
}

func workload(serviceAccount string) string { return kubeNamespace + "/" + serviceAccount }

// profile takes a CPU profile of the proxy over d and writes it to path.
func (p rowProxy) profile(ctx context.Context, d time.Duration, path string) error {
	ctx, cancel := context.WithTimeout(ctx, d+10*time.Second)
	defer cancel()
	code, body, err := p.ns.get(ctx, fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", adminPort, int(d/time.Second)))
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("%d %s", code, trimmed(body))
	}
	if err != nil {
		return fmt.Errorf("the %s's proxy's CPU profile: %w", p.name, err)
	}
	if err := os.WriteFile(path, body, 0o644); err != nil {
		return err
	}
	logf("CPU profile of the %s's proxy: %s", p.name, path)
	return nil
}

// responsesMetric counts the proxies' HTTP responses.
const responsesMetric = "trellis_proxy_http_responses_total"

// expectResponses checks that the proxy in ns counted at least n
// responses of the series that labels select.
func expectResponses(ctx context.Context, ns netns, name string, n int, labels map[string]string) error {
	code, body, err := ns.get(ctx, fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort))
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("%d", code)
	}
	if err != nil {
		return fmt.Errorf("reading the %s's proxy's metrics: %w", name, err)
	}
	if got := sumSeries(string(body), responsesMetric, labels); got < float64(n) {
		var seen []string
		for line := range strings.SplitSeq(string(body), "\n") {
			if strings.HasPrefix(line, responsesMetric+"{") {
				seen = append(seen, line)
			}
		}
		return fmt.Errorf("the %s's proxy counted %v responses %v, fewer than the %d answered: the requests did not take the row's path; its %s series:\n%s",
			name, got, labels, n, responsesMetric, strings.Join(seen, "\n"))
	}
	return nil
}

// sumSeries adds up the samples of metric, in Prometheus's text format,
// whose labels include labels.
func sumSeries(text, metric string, labels map[string]string) float64 {
	var sum float64
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, metric+"{")
		if !ok {
			continue
		}
		end := strings.LastIndex(rest, "} ")
		if end < 0 {
			continue
		}
		got := parseLabels(rest[:end])
		if !matches(got, labels) {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(rest[end+2:]), 64); err == nil {
			sum += v
		}
	}
	return sum
}

func matches(got, want map[string]string) bool {
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			return false
		}
	}
	return true
}

// parseLabels reads `name="value",...`; the text format escapes values as
// Go's quoted strings do (\\, \" and \n).
func parseLabels(s string) map[string]string {
	labels := map[string]string{}
	for s != "" {
		name, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		quoted, err := strconv.QuotedPrefix(rest)
		if err != nil {
			break
		}
		labels[name], _ = strconv.Unquote(quoted)
		s = strings.TrimPrefix(rest[len(quoted):], ",")
	}
	return labels
}
