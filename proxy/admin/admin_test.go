package admin

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/trellis-mesh/trellis/proxy/appprobe"
)

// start serves an admin server over real HTTP on loopback.
func start(t *testing.T, probes appprobe.Probes, shutdown func()) (*Server, string) {
	t.Helper()
	s := New(Options{
		Registry: prometheus.NewRegistry(),
		Probes:   probes,
		Prober:   appprobe.New("127.0.0.1"),
		Shutdown: shutdown,
	})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return s, srv.URL
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReadyAndLive(t *testing.T) {
	s, url := start(t, nil, nil)
	steps := []struct {
		set      func()
		wantCode int
		wantBody string
	}{
		{func() {}, 503, "not ready: starting"},
		{s.SetReady, 200, "ready"},
		{func() { s.SetNotReady("draining") }, 503, "not ready: draining"},
	}
	for _, step := range steps {
		step.set()
		code, body := get(t, url+"/ready")
		if code != step.wantCode || !strings.Contains(body, step.wantBody) {
			t.Errorf("/ready = %d %q, want %d %q", code, body, step.wantCode, step.wantBody)
		}
		// Liveness does not follow readiness: a draining proxy is alive.
		if code, _ := get(t, url+"/live"); code != 200 {
			t.Errorf("/live = %d", code)
		}
	}
}

// The app probes, relayed to a real HTTP server, a TCP listener and a gRPC
// health server.
func TestAppHealth(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.Error(w, "not healthy", http.StatusInternalServerError)
			return
		}
		// The kubelet's User-Agent reaches the app, as it would without the mesh.
		if r.UserAgent() != "kube-probe/1.37" {
			http.Error(w, "who are you? "+r.UserAgent(), http.StatusBadRequest)
		}
	}))
	defer web.Close()
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tcp.Close() }()
	hs := health.NewServer()
	hs.SetServingStatus("converter", healthpb.HealthCheckResponse_NOT_SERVING)
	gl, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(gl) }()
	defer gs.Stop()

	// As the injector writes them, in TRELLIS_APP_PROBES.
	env, _ := json.Marshal(map[string]any{
		"web/livez":        map[string]any{"httpGet": map[string]any{"path": "/healthz", "port": port(web.Listener), "scheme": "HTTP"}},
		"web/readyz":       map[string]any{"httpGet": map[string]any{"path": "/broken", "port": port(web.Listener)}},
		"db/startupz":      map[string]any{"tcpSocket": map[string]any{"port": port(tcp)}},
		"converter/readyz": map[string]any{"grpc": map[string]any{"port": port(gl), "service": "converter"}},
	})
	probes, err := appprobe.ParseProbes(string(env))
	if err != nil {
		t.Fatal(err)
	}
	_, url := start(t, probes, nil)

	tests := map[string]struct {
		path     string
		wantCode int
		wantBody string
	}{
		"HTTP passes":         {"/app-health/web/livez", 200, "HTTP 200"},
		"HTTP fails":          {"/app-health/web/readyz", 503, "HTTP 500: not healthy"},
		"TCP passes":          {"/app-health/db/startupz", 200, "connected"},
		"gRPC not serving":    {"/app-health/converter/readyz", 503, "NOT_SERVING"},
		"unknown container":   {"/app-health/nope/livez", 404, `no app probe "nope/livez": the proxy relays only the probes in TRELLIS_APP_PROBES (converter/readyz, db/startupz, web/livez, web/readyz)`},
		"unknown probe kind":  {"/app-health/web/startupz", 404, "no app probe"},
		"prefix only":         {"/app-health/", 404, `no app probe ""`},
		"not under the relay": {"/app-healthz", 404, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, url+tc.path, nil)
			req.Header.Set("User-Agent", "kube-probe/1.37")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = resp.Body.Close() }()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode || !strings.Contains(string(b), tc.wantBody) {
				t.Errorf("%s = %d %q, want %d %q", tc.path, resp.StatusCode, b, tc.wantCode, tc.wantBody)
			}
		})
	}

	_, metrics := get(t, url+"/metrics")
	for _, want := range []string{
		`trellis_proxy_app_probes_total{probe="web/livez",result="success"} 1`,
		`trellis_proxy_app_probes_total{probe="web/readyz",result="failure"} 1`,
		`trellis_proxy_app_probes_total{probe="converter/readyz",result="failure"} 1`,
		`trellis_proxy_app_probes_total{probe="db/startupz",result="success"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, metrics)
		}
	}
	if strings.Contains(metrics, "nope") {
		t.Error("/metrics has a series for an unknown probe; paths must not make series")
	}
}

// When the kubelet's probe times out it hangs up, and the relay stops
// waiting for the app.
func TestAppHealthTimeout(t *testing.T) {
	released := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			close(released)
		case <-time.After(20 * time.Second):
		}
	}))
	defer slow.Close()
	probes := appprobe.Probes{"app/livez": appprobe.Handler{HTTPGet: &appprobe.HTTPGetAction{Path: "/", Port: appprobe.Port{Number: int32(port(slow.Listener))}}}}
	_, url := start(t, probes, nil)

	client := &http.Client{Timeout: 300 * time.Millisecond} // the probe's timeoutSeconds
	if _, err := client.Get(url + "/app-health/app/livez"); err == nil {
		t.Fatal("the slow probe answered before the timeout")
	}
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("the relay was still waiting for the app 5s after the kubelet hung up")
	}
}

func TestShutdown(t *testing.T) {
	var calls atomic.Int32
	s, url := start(t, nil, func() { calls.Add(1) })
	for range 2 {
		resp, err := http.Post(url+"/shutdown", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Errorf("POST /shutdown = %d", resp.StatusCode)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("Shutdown called %d times, want once", n)
	}
	if code, _ := get(t, url+"/shutdown"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /shutdown = %d, want 405", code)
	}

	// From outside the pod. (This machine may have no other address to
	// call from, so the request is made up.)
	req := httptest.NewRequestWithContext(context.Background(), http.MethodPost, "/shutdown", nil)
	req.RemoteAddr = "10.1.2.3:40000"
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	if w.Code != http.StatusForbidden || calls.Load() != 1 {
		t.Errorf("POST /shutdown from 10.1.2.3 = %d (calls %d), want 403", w.Code, calls.Load())
	}
}

func TestNoShutdownEndpoint(t *testing.T) {
	_, url := start(t, nil, nil)
	resp, err := http.Post(url+"/shutdown", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST /shutdown = %d, want 404 when nothing can shut down", resp.StatusCode)
	}
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }
