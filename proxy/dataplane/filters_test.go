package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/durationpb"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/proxy/forward"
)

func TestRewritePath(t *testing.T) {
	for _, tc := range []struct{ path, full, prefix, matched, want string }{
		{"/api/v1/users", "", "/v2", "/api/v1", "/v2/users"},
		{"/api/v1/users", "", "/v2/", "/api/v1", "/v2/users"},
		{"/api/v1", "", "/v2", "/api/v1", "/v2"},
		{"/api/v1/", "", "/", "/api/v1/", "/"},
		{"/api/v1/users", "/static", "", "/api", "/static"},
		{"/api/v1/users", "", "/v2", "", "/api/v1/users"}, // not a prefix match
	} {
		if got := rewritePath(tc.path, tc.full, tc.prefix, tc.matched); got != tc.want {
			t.Errorf("rewritePath(%q, full %q, prefix %q, matched %q) = %q, want %q", tc.path, tc.full, tc.prefix, tc.matched, got, tc.want)
		}
	}
}

func TestRedirectLocation(t *testing.T) {
	for _, tc := range []struct {
		host, target string
		rd           *controlplanev1.Redirect
		matched      string
		want         string
	}{
		{"web:8080", "/a?x=1", &controlplanev1.Redirect{Hostname: "other"}, "", "http://other:8080/a?x=1"},
		{"web", "/a", &controlplanev1.Redirect{Scheme: "https"}, "", "https://web/a"},
		{"web:8080", "/a", &controlplanev1.Redirect{Scheme: "https"}, "", "https://web/a"}, // a scheme's own port
		{"web:8080", "/a", &controlplanev1.Redirect{Scheme: "https", Port: 8443}, "", "https://web:8443/a"},
		{"web", "/old/page", &controlplanev1.Redirect{PrefixPath: "/new"}, "/old", "http://web:8080/new/page"}, // the dialed port, 8080
		{"web:80", "/x", &controlplanev1.Redirect{FullPath: "/y"}, "", "http://web/y"},
	} {
		r := httptest.NewRequest("GET", tc.target, nil)
		r.Host = tc.host
		if got := redirectLocation(r, tc.rd, tc.matched, 8080); got != tc.want {
			t.Errorf("%s%s with %v: %q, want %q", tc.host, tc.target, tc.rd, got, tc.want)
		}
	}
}

// An upstream that says what it got, failing the first fail requests with 503.
func countingUpstream(t testing.TB, fail int64) (*controlplanev1.OutboundResponse, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if n.Add(1) <= fail {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("X-Seen-Header", r.Header.Get("X-Route")+"|"+r.Header.Get("X-Backend")+"|"+r.Header.Get("X-Drop"))
		w.Header().Set("X-Internal", "secret")
		_, _ = fmt.Fprintf(w, "%s %s %s", r.Host, r.URL.Path, body)
	}))
	t.Cleanup(srv.Close)
	return &controlplanev1.OutboundResponse{
		Known: true, Service: svcRef("web"), Protocol: controlplanev1.Protocol_PROTOCOL_HTTP1,
		Backends: []*controlplanev1.Backend{{Service: svcRef("web"), Endpoints: []*controlplanev1.Endpoint{{Address: strings.TrimPrefix(srv.URL, "http://")}}}},
	}, &n
}

func set(name, value string) *controlplanev1.HeaderModifier {
	return &controlplanev1.HeaderModifier{Action: controlplanev1.HeaderModifier_ACTION_SET, Name: name, Value: value}
}

// A route's filters: header modifiers of the route and of its backend on
// the request and the response, a prefix rewrite, a redirect.
func TestRouteFilters(t *testing.T) {
	resp, _ := countingUpstream(t, 0)
	resp.Routes = []*controlplanev1.Route{
		{
			Name:     "moved",
			Matches:  []*controlplanev1.Match{{Path: &controlplanev1.PathMatch{Kind: controlplanev1.PathMatch_KIND_PREFIX, Value: "/old"}}},
			Redirect: &controlplanev1.Redirect{PrefixPath: "/new", StatusCode: 301},
		},
		{
			Name:           "api",
			Matches:        []*controlplanev1.Match{{Path: &controlplanev1.PathMatch{Kind: controlplanev1.PathMatch_KIND_PREFIX, Value: "/api/v1"}}},
			RequestHeaders: []*controlplanev1.HeaderModifier{set("X-Route", "api"), {Action: controlplanev1.HeaderModifier_ACTION_REMOVE, Name: "X-Drop"}},
			ResponseHeaders: []*controlplanev1.HeaderModifier{
				{Action: controlplanev1.HeaderModifier_ACTION_REMOVE, Name: "X-Internal"}, set("X-Served-By", "trellis"),
			},
			Rewrite:  &controlplanev1.Rewrite{Hostname: "web-internal", PrefixPath: "/v2"},
			Backends: []*controlplanev1.WeightedBackend{{Backend: 0, Weight: 1, RequestHeaders: []*controlplanev1.HeaderModifier{set("X-Backend", "web")}}},
		},
	}
	addr := outboundProxy(t, resp)
	c := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	req, _ := http.NewRequest("GET", "http://"+addr+"/api/v1/users", nil)
	req.Header.Set("X-Drop", "please")
	got, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(got.Body)
	_ = got.Body.Close()
	if string(body) != "web-internal /v2/users " || got.Header.Get("X-Seen-Header") != "api|web|" ||
		got.Header.Get("X-Internal") != "" || got.Header.Get("X-Served-By") != "trellis" {
		t.Errorf("filtered request: %q, headers %v", body, got.Header)
	}

	got, err = c.Get("http://" + addr + "/old/page?q=1")
	if err != nil {
		t.Fatal(err)
	}
	_ = got.Body.Close()
	if got.StatusCode != 301 || !strings.HasSuffix(got.Header.Get("Location"), "/new/page?q=1") {
		t.Errorf("redirect: %d %q", got.StatusCode, got.Header.Get("Location"))
	}
}

// A route's retries hide failures, with the body sent again each time, and
// the budget caps them.
func TestRetries(t *testing.T) {
	resp, n := countingUpstream(t, 2)
	resp.Routes = []*controlplanev1.Route{{
		Name:     "retried",
		Backends: []*controlplanev1.WeightedBackend{{Backend: 0, Weight: 1}},
		Retry:    &controlplanev1.Retry{Attempts: 3, Codes: []uint32{503}, Backoff: durationpb.New(time.Millisecond)},
	}}
	// A budget of only what minPerSecond allows: 1 a second, 10 in the window.
	resp.Policy = &controlplanev1.TrafficPolicy{RetryBudgetPercent: 0, RetryBudgetMinPerSecond: 1}
	addr := outboundProxy(t, resp)
	c := &http.Client{Timeout: 5 * time.Second}
	got, err := c.Post("http://"+addr+"/pay", "text/plain", strings.NewReader("amount=5"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(got.Body)
	_ = got.Body.Close()
	if got.StatusCode != 200 || !strings.HasSuffix(string(body), "/pay amount=5") || n.Load() != 3 {
		t.Fatalf("after two failures: %d %q, %d attempts; want 200 on the third with the body", got.StatusCode, body, n.Load())
	}

	// Every request fails from now on: the budget (8 retries left in the
	// window) runs out, and then failures come back as they are.
	n.Store(-1000)
	before := n.Load()
	for range 20 {
		got, err := c.Get("http://" + addr + "/pay")
		if err != nil {
			t.Fatal(err)
		}
		_ = got.Body.Close()
		if got.StatusCode != 503 {
			t.Fatalf("status %d, want the failure as it came", got.StatusCode)
		}
	}
	if attempts := n.Load() - before; attempts != 20+8 {
		t.Errorf("%d attempts for 20 requests, want 20 plus the 8 retries left in the budget", attempts)
	}
}

func TestRetryBudget(t *testing.T) {
	b := newRetryBudget()
	b.set(20, 0)
	now := time.Unix(1000, 0)
	for range 100 {
		b.request(now)
	}
	allowed := 0
	for b.withdraw(now) {
		allowed++
	}
	if allowed != 20 {
		t.Errorf("20%% of 100 requests allowed %d retries", allowed)
	}
	// Ten seconds on, the window has forgotten them.
	if b.withdraw(now.Add(10 * time.Second)) {
		t.Error("a retry allowed with no request in the window")
	}
}

// A backend's TrafficPolicy ejects an endpoint that keeps failing: traffic
// goes to the healthy one.
func TestOutlierDetectionFromPolicy(t *testing.T) {
	bad, badCount := countingUpstream(t, 1<<30)
	good, goodCount := countingUpstream(t, 0)
	resp := &controlplanev1.OutboundResponse{
		Known: true, Service: svcRef("web"), Protocol: controlplanev1.Protocol_PROTOCOL_HTTP1,
		Backends: []*controlplanev1.Backend{{
			Service:   svcRef("web"),
			Endpoints: append(bad.Backends[0].Endpoints, good.Backends[0].Endpoints...),
			// Round robin, so that the failing endpoint surely gets its two
			// requests: the latency-aware balancer may stop picking it
			// after one.
			Policy: &controlplanev1.TrafficPolicy{
				LoadBalancer:      controlplanev1.LoadBalancer_LOAD_BALANCER_ROUND_ROBIN,
				ConsecutiveErrors: 2, BaseEjectionTime: durationpb.New(time.Minute), MaxEjectionPercent: 50,
			},
		}},
	}
	metrics := NewMetrics(prometheus.NewRegistry())
	addr := outboundProxyWith(t, resp, Options{Log: quiet, Metrics: metrics})
	c := &http.Client{Timeout: 5 * time.Second}
	for range 50 {
		got, err := c.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		_ = got.Body.Close()
	}
	if badCount.Load() != 2 || goodCount.Load() != 48 {
		t.Errorf("the failing endpoint got %d requests and the healthy one %d: want the failing one ejected after 2", badCount.Load(), goodCount.Load())
	}
	if n := testutil.ToFloat64(metrics.ejections.WithLabelValues("shop/web:80")); n != 1 {
		t.Errorf("trellis_proxy_outlier_ejections_total = %v, want 1", n)
	}
}

// A backend's max_pending_requests bounds the requests in flight to it from
// this proxy: one more is answered 503 at once.
func TestConnectionLimits(t *testing.T) {
	release := make(chan struct{})
	var inside atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inside.Add(1)
		<-release
	}))
	t.Cleanup(srv.Close)
	resp := &controlplanev1.OutboundResponse{
		Known: true, Service: svcRef("web"), Protocol: controlplanev1.Protocol_PROTOCOL_HTTP1,
		Backends: []*controlplanev1.Backend{{
			Service:   svcRef("web"),
			Endpoints: []*controlplanev1.Endpoint{{Address: strings.TrimPrefix(srv.URL, "http://")}},
			Policy:    &controlplanev1.TrafficPolicy{MaxPendingRequests: 2},
		}},
	}
	addr := outboundProxy(t, resp)
	c := &http.Client{Timeout: 5 * time.Second}
	done := make(chan int, 2)
	for range 2 {
		go func() {
			r, err := c.Get("http://" + addr + "/slow")
			if err != nil {
				done <- 0
				return
			}
			_ = r.Body.Close()
			done <- r.StatusCode
		}()
	}
	for deadline := time.Now().Add(5 * time.Second); inside.Load() < 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	r, err := c.Get("http://" + addr + "/third")
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Body.Close()
	if r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(r.Header.Get(headerProxyError), "max_pending_requests") {
		t.Errorf("a third request with two in flight: %d %q, want 503", r.StatusCode, r.Header.Get(headerProxyError))
	}
	close(release)
	for range 2 {
		if code := <-done; code != 200 {
			t.Errorf("a request within the limit: %d", code)
		}
	}
	r, err = c.Get("http://" + addr + "/after")
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Body.Close()
	if r.StatusCode != 200 {
		t.Errorf("after the others finished: %d", r.StatusCode)
	}
}

// A backend's max_connections bounds the opaque connections open to it
// from this proxy: one more is closed at once.
func TestMaxConnections(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	e := newOutEntry(nil, &controlplanev1.OutboundResponse{
		Known: true, Service: svcRef("db"), Protocol: controlplanev1.Protocol_PROTOCOL_TCP,
		Backends: []*controlplanev1.Backend{{
			Service:   svcRef("db"),
			Endpoints: []*controlplanev1.Endpoint{{Address: echo.Addr().String()}},
			Policy:    &controlplanev1.TrafficPolicy{MaxConnections: 1},
		}},
	})
	p := New(Options{Log: quiet})
	dst := netip.MustParseAddrPort("10.0.0.9:5432")
	f := forward.New(forward.Outbound, forward.Options{
		Metrics:     forward.NewMetrics(prometheus.NewRegistry()),
		Log:         quiet,
		Destination: func(net.Conn) (netip.AddrPort, error) { return dst, nil },
		Handler: func(ctx context.Context, f *forward.Forwarder, c net.Conn, dst netip.AddrPort) {
			p.outboundTCP(ctx, f, c, dst, e.current())
		},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = f.Serve(ln) }()
	t.Cleanup(func() { _ = f.Shutdown(context.Background()) })

	first, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = first.Close() }()
	_ = first.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := first.Write([]byte("one")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(first, make([]byte, 3)); err != nil {
		t.Fatalf("the first connection: %v", err)
	}
	// The second is reset: so soon, at times, that the dial sees it.
	second, err := net.Dial("tcp", ln.Addr().String())
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = second.Close() }()
	_ = second.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = second.Write([]byte("two"))
	if n, err := second.Read(make([]byte, 3)); err == nil {
		t.Errorf("a second connection over max_connections 1 got %d bytes back", n)
	}
}
