package appprobe

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// app starts an HTTP (or HTTPS) server on 127.0.0.1 with the paths the
// probes below ask for, and returns its port.
func app(t *testing.T, useTLS bool) int32 {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "database unreachable", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/slow", func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	// A redirect on the same host is followed, so this fails.
	mux.HandleFunc("/to-fail", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/fail", http.StatusFound)
	})
	// A redirect to another host is not followed, and its 3xx passes.
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://localhost:1/fail", http.StatusFound)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	// /headers passes only when the request is what the probe described.
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		checks := map[string]bool{
			"Host":       r.Host == "app.example",
			"User-Agent": r.UserAgent() == "kube-probe/1.37",
			"X-Probe":    r.Header.Get("X-Probe") == "yes",
			"Accept":     len(r.Header.Values("Accept")) == 0,
			"query":      r.URL.Query().Get("deep") == "1",
		}
		for what, ok := range checks {
			if !ok {
				http.Error(w, "wrong "+what, http.StatusBadRequest)
				return
			}
		}
	})
	mux.HandleFunc("/defaults", func(w http.ResponseWriter, r *http.Request) {
		if r.UserAgent() != DefaultUserAgent || r.Header.Get("Accept") != "*/*" || r.Host != r.Context().Value(http.LocalAddrContextKey).(net.Addr).String() {
			http.Error(w, "wrong defaults: "+r.UserAgent()+" "+r.Header.Get("Accept")+" "+r.Host, http.StatusBadRequest)
		}
	})
	srv := httptest.NewUnstartedServer(mux)
	if useTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	p, _ := strconv.Atoi(u.Port())
	return int32(p)
}

func httpGet(port int32, path string, scheme string, headers ...HTTPHeader) Handler {
	return Handler{HTTPGet: &HTTPGetAction{
		Path: path, Port: Port{Number: port}, Scheme: scheme, HTTPHeaders: headers,
	}}
}

func TestHTTP(t *testing.T) {
	plain, secure := app(t, false), app(t, true)
	tests := map[string]struct {
		probe     Handler
		userAgent string // the kubelet's, passed on
		want      string // in the message; passes when it starts with "GET"
		fail      bool
	}{
		"200":                {probe: httpGet(plain, "/ok", "HTTP"), want: "HTTP 200"},
		"no scheme is HTTP":  {probe: httpGet(plain, "/ok", ""), want: "HTTP 200"},
		"503 with its body":  {probe: httpGet(plain, "/fail", "HTTP"), want: "HTTP 503: database unreachable", fail: true},
		"404":                {probe: httpGet(plain, "/nothing", "HTTP"), want: "HTTP 404", fail: true},
		"HTTPS, unverified":  {probe: httpGet(secure, "/ok", "HTTPS"), want: "https://127.0.0.1:"},
		"HTTP to HTTPS port": {probe: httpGet(secure, "/ok", "HTTP"), want: "HTTP 400", fail: true},
		"same-host redirect": {probe: httpGet(plain, "/to-fail", "HTTP"), want: "HTTP 503", fail: true},
		"other-host redirect": {
			probe: httpGet(plain, "/elsewhere", "HTTP"), want: "HTTP 302",
		},
		"redirect loop": {probe: httpGet(plain, "/loop", "HTTP"), want: "stopped after 10 redirects", fail: true},
		"headers, host, query": {
			probe: httpGet(plain, "/headers?deep=1", "HTTP",
				HTTPHeader{Name: "Host", Value: "app.example"},
				HTTPHeader{Name: "x-probe", Value: "yes"},
				HTTPHeader{Name: "Accept", Value: ""}),
			userAgent: "kube-probe/1.37",
			want:      "HTTP 200",
		},
		"defaults": {probe: httpGet(plain, "/defaults", "HTTP"), want: "HTTP 200"},
		"closed port": {
			probe: httpGet(closedPort(t), "/ok", "HTTP"), want: "connection refused", fail: true,
		},
		"named port": {
			probe: Handler{HTTPGet: &HTTPGetAction{Path: "/ok", Port: Port{Named: true, Name: "http"}}},
			want:  `port "http" is a name`, fail: true,
		},
	}
	p := New("127.0.0.1")
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			assertProbe(t, p, ctx, tc.probe, tc.userAgent, tc.want, tc.fail)
		})
	}
}

// The kubelet's timeout reaches the prober as the context's: a slow app
// fails the probe when it runs out, not later.
func TestHTTPTimeout(t *testing.T) {
	port := app(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	assertProbe(t, New(""), ctx, httpGet(port, "/slow", "HTTP"), "", "context deadline exceeded", true)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the probe took %v with a 200ms timeout", d)
	}
}

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	open := int32(ln.Addr().(*net.TCPAddr).Port)
	p := New("127.0.0.1")
	tcp := func(host string, port int32) Handler {
		return Handler{TCPSocket: &TCPSocketAction{Host: host, Port: Port{Number: port}}}
	}
	ctx := context.Background()
	assertProbe(t, p, ctx, tcp("", open), "", "connected", false)
	assertProbe(t, p, ctx, tcp("127.0.0.1", closedPort(t)), "", "connection refused", true)
	// The probe's host wins over the pod's IP.
	assertProbe(t, New("192.0.2.1"), ctx, tcp("127.0.0.1", open), "", "TCP 127.0.0.1:", false)
}

func TestGRPC(t *testing.T) {
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("converter", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("draining", healthpb.HealthCheckResponse_NOT_SERVING)
	withHealth := grpcServer(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) })
	without := grpcServer(t, func(*grpc.Server) {})

	grpcProbe := func(port int32, service *string) Handler {
		return Handler{GRPC: &GRPCAction{Port: port, Service: service}}
	}
	tests := map[string]struct {
		probe Handler
		want  string
		fail  bool
	}{
		"server":          {probe: grpcProbe(withHealth, new("")), want: "SERVING"},
		"no service":      {probe: grpcProbe(withHealth, nil), want: `service "": SERVING`},
		"service":         {probe: grpcProbe(withHealth, new("converter")), want: "SERVING"},
		"not serving":     {probe: grpcProbe(withHealth, new("draining")), want: "NOT_SERVING", fail: true},
		"unknown service": {probe: grpcProbe(withHealth, new("nope")), want: "NotFound", fail: true},
		"no health API":   {probe: grpcProbe(without, new("")), want: "does not implement the health service", fail: true},
		"closed port":     {probe: grpcProbe(closedPort(t), new("")), want: "Unavailable", fail: true},
	}
	p := New("127.0.0.1")
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			assertProbe(t, p, ctx, tc.probe, "", tc.want, tc.fail)
		})
	}
}

func TestNothingToRelay(t *testing.T) {
	// An exec probe, which the injector never relays, decodes to nothing.
	probes, err := ParseProbes(`{"app/livez":{"exec":{"command":["true"]}}}`)
	if err != nil {
		t.Fatal(err)
	}
	assertProbe(t, New(""), context.Background(), probes["app/livez"], "", "no HTTP, TCP or gRPC handler", true)
}

func assertProbe(t *testing.T, p *Prober, ctx context.Context, h Handler, userAgent, want string, fail bool) {
	t.Helper()
	msg, err := p.Probe(ctx, h, userAgent)
	switch {
	case fail && err == nil:
		t.Errorf("passed (%s), want a failure containing %q", msg, want)
	case !fail && err != nil:
		t.Errorf("failed: %v", err)
	case fail && !strings.Contains(err.Error(), want):
		t.Errorf("failed with %q, want it to contain %q", err, want)
	case !fail && !strings.Contains(msg, want):
		t.Errorf("passed with %q, want it to contain %q", msg, want)
	}
}

func grpcServer(t *testing.T, register func(*grpc.Server)) int32 {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	register(s)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return int32(ln.Addr().(*net.TCPAddr).Port)
}

// closedPort is a port on 127.0.0.1 where nothing listens.
func closedPort(t *testing.T) int32 {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return int32(port)
}

// Probes of the pod's own address come from 127.0.0.6, which the pod's
// rules let by; from the pod's address they would be sent to the inbound
// proxy (and refused in Strict mode). Probes of another host are plain.
func TestProbesComeFromTheInboundSource(t *testing.T) {
	from := make(chan string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		from <- host
	}))
	defer srv.Close()
	port := int32(srv.Listener.Addr().(*net.TCPAddr).Port)
	assertProbe(t, New("127.0.0.1"), context.Background(), httpGet(port, "/", "HTTP"), "", "HTTP 200", false)
	if got := <-from; got != "127.0.0.6" {
		t.Errorf("a probe of the pod's address came from %s, want 127.0.0.6", got)
	}
	other := Handler{HTTPGet: &HTTPGetAction{Host: "127.0.0.1", Path: "/", Port: Port{Number: port}, Scheme: "HTTP"}}
	assertProbe(t, New("127.0.0.2"), context.Background(), other, "", "HTTP 200", false)
	if got := <-from; got != "127.0.0.1" {
		t.Errorf("a probe of another host came from %s, want a plain dial", got)
	}
}
