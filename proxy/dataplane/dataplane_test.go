package dataplane

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func svcRef(name string) *controlplanev1.ServiceRef {
	return &controlplanev1.ServiceRef{Name: name, Namespace: "shop", Port: 80}
}

// A route table as the control plane compiles it: the first route whose
// match holds wins; with routes, a request none matches has no route.
func TestRouteMatching(t *testing.T) {
	resp := &controlplanev1.OutboundResponse{
		Known: true, Service: svcRef("web"),
		Backends: []*controlplanev1.Backend{{Service: svcRef("web")}, {Service: svcRef("web-v2")}},
		Routes: []*controlplanev1.Route{
			{Name: "exact", Matches: []*controlplanev1.Match{{Path: &controlplanev1.PathMatch{Kind: controlplanev1.PathMatch_KIND_EXACT, Value: "/healthz"}}},
				Backends: []*controlplanev1.WeightedBackend{{Backend: 0, Weight: 1}}},
			{Name: "v2-header", Matches: []*controlplanev1.Match{{Headers: []*controlplanev1.HeaderMatch{{Name: "x-version", Value: "v2"}}}},
				Backends: []*controlplanev1.WeightedBackend{{Backend: 1, Weight: 1}}},
			{Name: "regex-query", Matches: []*controlplanev1.Match{{
				Path:        &controlplanev1.PathMatch{Kind: controlplanev1.PathMatch_KIND_REGEX, Value: "/items/[0-9]+"},
				QueryParams: []*controlplanev1.HeaderMatch{{Name: "debug", Value: "1|true", Regex: true}},
				Method:      "GET",
			}}, Backends: []*controlplanev1.WeightedBackend{{Backend: 1, Weight: 1}}},
			{Name: "grpc", Matches: []*controlplanev1.Match{{GrpcService: "temperature.v1.Converter", GrpcMethod: "Convert"}},
				Backends: []*controlplanev1.WeightedBackend{{Backend: 1, Weight: 1}}},
			{Name: "api-prefix", Matches: []*controlplanev1.Match{{Path: &controlplanev1.PathMatch{Kind: controlplanev1.PathMatch_KIND_PREFIX, Value: "/api/"}}},
				Backends: []*controlplanev1.WeightedBackend{{Backend: 0, Weight: 1}}, Timeout: durationpb.New(2 * time.Second)},
		},
	}
	st := (newOutEntry(nil, resp)).current()
	for _, tc := range []struct {
		method, target string
		header         http.Header
		want           string
	}{
		{"GET", "/healthz", nil, "exact"},
		{"GET", "/healthz/deep", nil, ""},
		{"GET", "/anything", http.Header{"X-Version": {"v2"}}, "v2-header"},
		{"GET", "/anything", http.Header{"X-Version": {"v3"}}, ""},
		{"GET", "/items/42?debug=true", nil, "regex-query"},
		{"GET", "/items/42?debug=no", nil, ""},
		{"POST", "/items/42?debug=1", nil, ""},
		{"GET", "/items/42x?debug=1", nil, ""}, // anchored
		{"POST", "/temperature.v1.Converter/Convert", nil, "grpc"},
		{"POST", "/temperature.v1.Converter/Other", nil, ""},
		{"GET", "/api", nil, "api-prefix"}, // /api/ matches /api, as the Gateway API says
		{"GET", "/api/v1", nil, "api-prefix"},
		{"GET", "/apiv1", nil, ""},
	} {
		r := httptest.NewRequest(tc.method, tc.target, nil)
		for k, v := range tc.header {
			r.Header[k] = v
		}
		rt, _, ok := st.route(r)
		got := ""
		if ok {
			got = rt.name
		}
		if got != tc.want {
			t.Errorf("%s %s %v: route %q, want %q", tc.method, tc.target, tc.header, got, tc.want)
		}
	}

	// Without routes, everything goes to the Service itself.
	plain := newOutEntry(nil, &controlplanev1.OutboundResponse{Known: true, Service: svcRef("web"), Backends: resp.Backends[:1]}).current()
	if rt, _, ok := plain.route(httptest.NewRequest("GET", "/x", nil)); !ok || rt.pickBackend().b.name != "shop/web:80" {
		t.Errorf("without routes: %v %v, want the Service's own backend", rt, ok)
	}
}

// Weighted backends share requests by weight.
func TestPickBackendWeights(t *testing.T) {
	resp := &controlplanev1.OutboundResponse{
		Known: true, Service: svcRef("web"),
		Backends: []*controlplanev1.Backend{{Service: svcRef("web")}, {Service: svcRef("web-v1")}, {Service: svcRef("web-v2")}, {Service: svcRef("gone")}},
		Routes: []*controlplanev1.Route{{Name: "split", Backends: []*controlplanev1.WeightedBackend{
			{Backend: 1, Weight: 80}, {Backend: 2, Weight: 20}, {Backend: 3, Weight: 0}, {Backend: 9, Weight: 5},
		}}},
	}
	st := (newOutEntry(nil, resp)).current()
	rt, _, _ := st.route(httptest.NewRequest("GET", "/", nil))
	counts := map[string]int{}
	const n = 20000
	for range n {
		counts[rt.pickBackend().b.name]++
	}
	if share := float64(counts["shop/web-v1:80"]) / n; math.Abs(share-0.8) > 0.02 {
		t.Errorf("web-v1 got %.3f of requests, want 0.80 (counts %v)", share, counts)
	}
	if counts["shop/gone:80"] != 0 || len(counts) != 2 {
		t.Errorf("counts %v: a weight of 0 or an index out of range must get nothing", counts)
	}
	empty := &route{name: "none"}
	if empty.pickBackend() != nil {
		t.Error("a route without backends picked one")
	}
}

func TestRemoveHopHeaders(t *testing.T) {
	h := http.Header{
		"Connection":        {"keep-alive, X-Secret"},
		"X-Secret":          {"1"},
		"Keep-Alive":        {"timeout=5"},
		"Te":                {"trailers, deflate"},
		"Transfer-Encoding": {"chunked"},
		"Upgrade":           {"h2c"},
		"X-Kept":            {"yes"},
	}
	removeHopHeaders(h)
	want := http.Header{"Te": {"trailers"}, "X-Kept": {"yes"}}
	if fmt.Sprint(h) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", h, want)
	}
}

// outboundProxy serves outbound HTTP/1 connections on loopback to the
// destination resp describes, without discovery or TLS: the HTTP path
// alone.
func outboundProxy(t testing.TB, resp *controlplanev1.OutboundResponse) string {
	t.Helper()
	return outboundProxyWith(t, resp, Options{Log: quiet})
}

func outboundProxyWith(t testing.TB, resp *controlplanev1.OutboundResponse, o Options) string {
	t.Helper()
	p := New(o)
	e := newOutEntry(nil, resp)
	e.ejected = p.endpointEjected
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		_ = ln.Close()
		sctx, c := context.WithTimeout(context.Background(), time.Second)
		defer c()
		_ = p.Shutdown(sctx)
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.outHTTP.serve(withConnInfo(ctx, &connInfo{entry: e, dst: netip.MustParseAddrPort("10.0.0.1:80")}), c)
		}
	}()
	return ln.Addr().String()
}

func upstream(t testing.TB) *controlplanev1.OutboundResponse {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Upstream", "yes")
		_, _ = fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(body))
	}))
	t.Cleanup(srv.Close)
	return &controlplanev1.OutboundResponse{
		Known: true, Service: svcRef("web"), Protocol: controlplanev1.Protocol_PROTOCOL_HTTP1,
		Backends: []*controlplanev1.Backend{{Service: svcRef("web"), Endpoints: []*controlplanev1.Endpoint{{Address: strings.TrimPrefix(srv.URL, "http://")}}}},
	}
}

// Requests go through to an unmeshed endpoint; a destination without
// endpoints is answered 503, one whose routes match nothing 404, each with
// the reason in trellis-proxy-error.
func TestOutboundHTTP1(t *testing.T) {
	addr := outboundProxy(t, upstream(t))
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Post("http://"+addr+"/orders", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "POST /orders 5" || resp.Header.Get("X-Upstream") != "yes" {
		t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
	}

	empty := outboundProxy(t, &controlplanev1.OutboundResponse{Known: true, Service: svcRef("web"), Backends: []*controlplanev1.Backend{{Service: svcRef("web")}}})
	resp, err = c.Get("http://" + empty + "/")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(resp.Header.Get(headerProxyError), "no ready endpoints") {
		t.Errorf("no endpoints: %d %q", resp.StatusCode, resp.Header.Get(headerProxyError))
	}

	routed := upstream(t)
	routed.Routes = []*controlplanev1.Route{{Name: "only-api", Matches: []*controlplanev1.Match{{Path: &controlplanev1.PathMatch{Kind: controlplanev1.PathMatch_KIND_PREFIX, Value: "/api"}}},
		Backends: []*controlplanev1.WeightedBackend{{Backend: 0, Weight: 1}}}}
	raddr := outboundProxy(t, routed)
	resp, err = c.Get("http://" + raddr + "/other")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("no route: %d, want 404", resp.StatusCode)
	}
}

// FuzzHTTP1Path sends arbitrary bytes to the outbound HTTP/1 path: the
// proxy never panics, answers or closes, and still serves a good request
// afterwards on a new connection.
func FuzzHTTP1Path(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: web\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\n\r\nabc",
		"POST /x HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"GET / HTTP/1.1\r\nHost: web\r\nContent-Length: -1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: web\r\nConnection: close, Host\r\n\r\n",
		"GET http://evil/ HTTP/1.1\r\nHost: web\r\n\r\n",
		"GET / HTTP/1.1\r\n" + strings.Repeat("X-A: b\r\n", 200) + "\r\n",
		"\x00\x01garbage",
		"GET / HTTP/1.1\r\nHost: web\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	addr := outboundProxy(f, upstream(f))
	good := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		_, _ = c.Write(in)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
		_ = c.Close()
		resp, err := good.Get("http://" + addr + "/after")
		if err != nil {
			t.Fatalf("the proxy stopped serving after %q: %v", in, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("after %q: %d", in, resp.StatusCode)
		}
	})
}

// One JSON line per request in the access log, and gRPC failures told from
// gRPC errors that are the caller's business.
func TestAccessLogAndGRPCFailures(t *testing.T) {
	var buf syncBuffer
	addr := outboundProxyWith(t, upstream(t), Options{Log: quiet, AccessLog: slog.New(slog.NewJSONHandler(&buf, nil))})
	resp, err := http.Get("http://" + addr + "/logged?x=1")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	// The line is written once the handler returns, which may be just
	// after the client has the response.
	for deadline := time.Now().Add(2 * time.Second); buf.String() == "" && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	var line struct {
		Msg, Direction, Method, Path, Endpoint, Dst string
		Status                                      int
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(buf.String())), &line); err != nil {
		t.Fatalf("access log %q: %v", buf.String(), err)
	}
	if line.Msg != "http" || line.Direction != "outbound" || line.Method != "GET" || line.Path != "/logged" || line.Status != 200 ||
		line.Endpoint == "" || line.Dst != "shop/web:80" {
		t.Errorf("access log line %+v", line)
	}

	for code, failed := range map[string]bool{"0": false, "5": false, "7": false, "14": true, "13": true, "4": true, "2": true} {
		r := &http.Response{Header: http.Header{}, Trailer: http.Header{"Grpc-Status": {code}}}
		if grpcFailed(r) != failed {
			t.Errorf("grpc-status %s: failed %v, want %v", code, !failed, failed)
		}
	}
	if !grpcFailed(&http.Response{Header: http.Header{"Grpc-Status": {"14"}}}) {
		t.Error("a trailers-only UNAVAILABLE is a failure")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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
