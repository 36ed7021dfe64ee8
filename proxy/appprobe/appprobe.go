package appprobe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/trellis-mesh/trellis/proxy/redirect"
)

// DefaultUserAgent is the User-Agent of HTTP and gRPC probes when the
// caller has none to pass on; the kubelet sends kube-probe/<version>.
const DefaultUserAgent = "kube-probe/trellis"

// maxBody is how much of an HTTP probe's response is read, as the kubelet
// reads it; the rest is dropped with the connection.
const maxBody = 10 << 10

// maxRedirects is how many same-host redirects an HTTP probe follows.
const maxRedirects = 10

// Prober runs probes. Its zero value is not usable; call New.
type Prober struct {
	host string
	http *http.Client
}

// New returns a prober whose probes that name no host go to podIP, or to
// 127.0.0.1 when podIP is empty.
func New(podIP string) *Prober {
	host := podIP
	if host == "" {
		host = "127.0.0.1"
	}
	p := &Prober{host: host}
	p.http = &http.Client{
		Transport: &http.Transport{
			DialContext: p.dial,
			// The kubelet's settings: no verification (a probe checks
			// liveness, not identity), no connection reuse, no proxy
			// from the environment, no transparent decompression.
			TLSClientConfig:    &tls.Config{InsecureSkipVerify: true},
			DisableKeepAlives:  true,
			DisableCompression: true,
			Proxy:              nil,
		},
		CheckRedirect: checkRedirect,
	}
	return p
}

// dial connects to addr: to the pod's own address as redirect.DialApp does
// (from the source the pod's rules let by, rather than round through the
// inbound proxy), to any other host plainly.
func (p *Prober) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if host, _, err := net.SplitHostPort(addr); err == nil && host == p.host {
		return redirect.DialApp(ctx, net.Dialer{}, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// checkRedirect follows redirects to the probe's own host, as the kubelet
// does, and stops at one to another host, whose 3xx then counts as a pass.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if req.URL.Hostname() != via[0].URL.Hostname() {
		return http.ErrUseLastResponse
	}
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	return nil
}

// Probe runs h until it gives an answer or ctx ends. It returns what it saw
// and nil when the probe passes, or an error that says why it failed.
// userAgent is the kubelet's, passed on to the app; DefaultUserAgent when
// empty.
func (p *Prober) Probe(ctx context.Context, h Handler, userAgent string) (string, error) {
	if userAgent == "" {
		userAgent = DefaultUserAgent
	}
	switch {
	case h.HTTPGet != nil:
		return p.probeHTTP(ctx, h.HTTPGet, userAgent)
	case h.TCPSocket != nil:
		return p.probeTCP(ctx, h.TCPSocket)
	case h.GRPC != nil:
		return p.probeGRPC(ctx, h.GRPC, userAgent)
	}
	// Exec probes run in the app's container and are never relayed.
	return "", errors.New("the probe has no HTTP, TCP or gRPC handler to relay")
}

func (p *Prober) probeHTTP(ctx context.Context, a *HTTPGetAction, userAgent string) (string, error) {
	port, err := portNumber(a.Port)
	if err != nil {
		return "", err
	}
	scheme := strings.ToLower(a.Scheme)
	if scheme == "" {
		scheme = "http"
	}
	// Like the kubelet, keep a query string written into the path.
	u, err := url.Parse(a.Path)
	if err != nil {
		u = &url.URL{Path: a.Path}
	}
	u.Scheme = scheme
	u.Host = net.JoinHostPort(p.hostOr(a.Host), strconv.Itoa(port))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("building the request for %s: %w", u, err)
	}
	// The probe's headers, then the kubelet's defaults for those it does
	// not set; an empty Accept removes the header, as in the kubelet.
	for _, hd := range a.HTTPHeaders {
		req.Header.Add(hd.Name, hd.Value)
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header.Set("User-Agent", userAgent)
	}
	if _, ok := req.Header["Accept"]; !ok {
		req.Header.Set("Accept", "*/*")
	} else if req.Header.Get("Accept") == "" {
		req.Header.Del("Accept")
	}
	req.Host = req.Header.Get("Host")
	resp, err := p.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", u, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	seen := fmt.Sprintf("GET %s: HTTP %d", u, resp.StatusCode)
	if resp.StatusCode >= http.StatusOK && resp.StatusCode < http.StatusBadRequest {
		return seen, nil
	}
	if b := strings.TrimSpace(string(body)); b != "" {
		seen += ": " + truncate(b, 256)
	}
	return "", errors.New(seen)
}

func (p *Prober) probeTCP(ctx context.Context, a *TCPSocketAction) (string, error) {
	port, err := portNumber(a.Port)
	if err != nil {
		return "", err
	}
	addr := net.JoinHostPort(p.hostOr(a.Host), strconv.Itoa(port))
	c, err := p.dial(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("TCP %s: %w", addr, err)
	}
	_ = c.Close()
	return "TCP " + addr + ": connected", nil
}

func (p *Prober) probeGRPC(ctx context.Context, a *GRPCAction, userAgent string) (string, error) {
	if a.Port < 1 || a.Port > 65535 {
		return "", fmt.Errorf("gRPC port %d is not a port number (1-65535)", a.Port)
	}
	service := ""
	if a.Service != nil {
		service = *a.Service
	}
	addr := net.JoinHostPort(p.host, strconv.Itoa(int(a.Port)))
	// passthrough: the address is an IP, not a name to resolve.
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return p.dial(ctx, "tcp", addr) }),
		grpc.WithUserAgent(userAgent))
	if err != nil {
		return "", fmt.Errorf("gRPC %s: %w", addr, err)
	}
	defer func() { _ = conn.Close() }()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		if status.Code(err) == codes.Unimplemented {
			return "", fmt.Errorf("gRPC %s does not implement the health service grpc.health.v1.Health", addr)
		}
		return "", fmt.Errorf("gRPC %s health check of service %q: %w", addr, service, err)
	}
	seen := fmt.Sprintf("gRPC %s service %q: %s", addr, service, resp.GetStatus())
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return "", errors.New(seen)
	}
	return seen, nil
}

func (p *Prober) hostOr(host string) string {
	if host != "" {
		return host
	}
	return p.host
}

// portNumber is a probe's port. The injector stores numbers; a name means
// the pod was injected by something that did not resolve it.
func portNumber(port Port) (int, error) {
	if port.Named {
		return 0, fmt.Errorf("port %q is a name; Trellis's injector stores the probe's port as a number, so re-inject the pod", port.Name)
	}
	if n := int(port.Number); n >= 1 && n <= 65535 {
		return n, nil
	}
	return 0, fmt.Errorf("port %d is not a port number (1-65535)", port.Number)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
