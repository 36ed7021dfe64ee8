package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/proxy/appprobe"
	"github.com/trellis-mesh/trellis/sidecar"
)

func TestParseRunFlags(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	t.Run("defaults", func(t *testing.T) {
		c, err := parseRunFlags(nil, env(), io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		want := runConfig{
			outbound:        addrList{"0.0.0.0:15001", "[::]:15001"},
			inbound:         addrList{"0.0.0.0:15006", "[::]:15006"},
			admin:           ":15020",
			drainTimeout:    5 * time.Second,
			connectTimeout:  10 * time.Second,
			detectTimeout:   time.Second,
			reportInterval:  10 * time.Second,
			tokenFile:       "/var/run/trellis/token/token",
			trustBundleFile: "/var/run/trellis/ca-bundle/ca.crt",
			mtlsMode:        controlplanev1.MTLSMode_MTLS_MODE_PERMISSIVE,
			logLevel:        slog.LevelInfo,
		}
		if !reflect.DeepEqual(c, want) {
			t.Errorf("got %+v\nwant %+v", c, want)
		}
	})
	t.Run("flags", func(t *testing.T) {
		c, err := parseRunFlags([]string{"--outbound-addr=127.0.0.1:0", "--inbound-addr=127.0.0.1:0,[::1]:0", "--admin-addr=127.0.0.1:0", "--drain-timeout=1s",
			"--report-interval=0"}, env(), io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(c.outbound, addrList{"127.0.0.1:0"}) || !reflect.DeepEqual(c.inbound, addrList{"127.0.0.1:0", "[::1]:0"}) ||
			c.admin != "127.0.0.1:0" || c.drainTimeout != time.Second || c.reportInterval != 0 {
			t.Errorf("got %+v", c)
		}
	})
	t.Run("environment", func(t *testing.T) {
		c, err := parseRunFlags(nil, env(
			sidecar.EnvLogLevel, "debug",
			sidecar.EnvAccessLog, "JSON",
			sidecar.EnvPodIP, "10.244.0.7",
			sidecar.EnvPodName, "api-7d9f",
			sidecar.EnvAppProbes, `{"api/readyz":{"httpGet":{"path":"/ready","port":8080,"scheme":"HTTP"}}}`,
		), io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		wantProbes := appprobe.Probes{"api/readyz": appprobe.Handler{HTTPGet: &appprobe.HTTPGetAction{
			Path: "/ready", Port: appprobe.Port{Number: 8080}, Scheme: "HTTP",
		}}}
		if c.logLevel != slog.LevelDebug || !c.accessLog || c.podIP != "10.244.0.7" || !reflect.DeepEqual(c.probes, wantProbes) ||
			!reflect.DeepEqual(c.pod, []any{"pod", "api-7d9f", "podIP", "10.244.0.7"}) || len(c.warnings) != 0 {
			t.Errorf("got %+v", c)
		}
	})
	t.Run("values from a newer operator", func(t *testing.T) {
		c, err := parseRunFlags(nil, env(sidecar.EnvLogLevel, "verbose", sidecar.EnvAccessLog, "OTLP", sidecar.EnvMTLSMode, "Mutual"), io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if c.logLevel != slog.LevelInfo || c.accessLog || c.mtlsMode != controlplanev1.MTLSMode_MTLS_MODE_PERMISSIVE || len(c.warnings) != 3 {
			t.Errorf("got %+v, want info, no access log, Permissive and 3 warnings", c)
		}
	})
	t.Run("control plane", func(t *testing.T) {
		c, err := parseRunFlags(nil, env(sidecar.EnvControlPlane, "trellis-controlplane.trellis-system.svc:15012", sidecar.EnvMTLSMode, "Strict",
			sidecar.EnvPodName, "api-7d9f", sidecar.EnvPodNamespace, "shop", sidecar.EnvServiceAccount, "api", sidecar.EnvTrustDomain, "cluster.local"), io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if c.controlPlane != "trellis-controlplane.trellis-system.svc:15012" || c.mtlsMode != controlplanev1.MTLSMode_MTLS_MODE_STRICT ||
			c.namespace != "shop" || c.serviceAccount != "api" || c.podName != "api-7d9f" || c.trustDomain != "cluster.local" {
			t.Errorf("got %+v", c)
		}
		var stderr strings.Builder
		_, err = parseRunFlags([]string{"--control-plane=cp:15012"}, env(sidecar.EnvPodName, "api-7d9f"), io.Discard, &stderr)
		if err == nil || !strings.Contains(stderr.String(), "TRELLIS_POD_NAMESPACE, TRELLIS_SERVICE_ACCOUNT, TRELLIS_TRUST_DOMAIN are not") {
			t.Errorf("a control plane without the pod's identity: error %v, stderr %q", err, stderr.String())
		}
	})
	t.Run("bad probes", func(t *testing.T) {
		var stderr strings.Builder
		_, err := parseRunFlags(nil, env(sidecar.EnvAppProbes, `{"api/readyz":`), io.Discard, &stderr)
		if err == nil || !strings.Contains(stderr.String(), "TRELLIS_APP_PROBES is not the JSON of the app's probes") {
			t.Errorf("error %v, stderr %q", err, stderr.String())
		}
	})
	for _, bad := range []string{"15001", "localhost:15001", "0.0.0.0:http", "[::]:99999", ","} {
		t.Run("bad address "+bad, func(t *testing.T) {
			var stderr strings.Builder
			if _, err := parseRunFlags([]string{"--outbound-addr=" + bad}, env(), io.Discard, &stderr); err == nil {
				t.Errorf("accepted --outbound-addr=%s", bad)
			} else if !strings.Contains(stderr.String(), "-outbound-addr") {
				t.Errorf("stderr %q does not name the flag", stderr.String())
			}
		})
	}
}

// The binary on loopback, as any user: its endpoints, the app probe relay,
// a direct connection to its ports, and /shutdown. Real redirection needs
// root and a network namespace: see TestRedirectInNetns.
func TestRunOnLoopback(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	defer app.Close()
	appPort := app.Listener.Addr().(*net.TCPAddr).Port
	cmd := command("run", "--outbound-addr=127.0.0.1:0", "--inbound-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--drain-timeout=2s")
	cmd.Env = append(cmd.Env,
		sidecar.EnvPodIP+"=127.0.0.1",
		sidecar.EnvLogLevel+"=debug",
		sidecar.EnvAppProbes+"="+fmt.Sprintf(`{"app/livez":{"httpGet":{"path":"/healthz","port":%d}},"app/readyz":{"httpGet":{"path":"/other","port":%d}}}`, appPort, appPort),
	)
	p := startProxy(t, cmd, (*exec.Cmd).Start)
	admin := "http://" + p.addr("admin")
	c := &http.Client{Timeout: 5 * time.Second}

	for _, tc := range []struct {
		path     string
		wantCode int
		wantBody string
	}{
		{"/ready", 200, "ready"},
		{"/live", 200, "live"},
		{"/app-health/app/livez", 200, "HTTP 200"},
		{"/app-health/app/readyz", 503, "HTTP 404"},
		{"/app-health/app/startupz", 404, "no app probe"},
	} {
		if code, body := httpGet(t, c, admin+tc.path); code != tc.wantCode || !strings.Contains(body, tc.wantBody) {
			t.Errorf("%s = %d %q, want %d %q", tc.path, code, body, tc.wantCode, tc.wantBody)
		}
	}

	// Without trellis-init's rules nothing is redirected: a connection
	// to the proxy's port is closed, never forwarded to the proxy itself.
	for _, l := range []string{"outbound", "inbound"} {
		if err := connectionEnd(p.addr(l)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s: %v; want the connection closed", l, err)
		}
	}
	_, metrics := httpGet(t, c, admin+"/metrics")
	for series, want := range map[string]float64{
		`trellis_proxy_tcp_connections_opened_total{direction="outbound"}`:    1,
		`trellis_proxy_tcp_connections_opened_total{direction="inbound"}`:     1,
		`trellis_proxy_app_probes_total{probe="app/livez",result="success"}`:  1,
		`trellis_proxy_app_probes_total{probe="app/readyz",result="failure"}`: 1,
	} {
		if got := metric(metrics, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	failed := metric(metrics, `trellis_proxy_tcp_failed_total{direction="outbound",reason="not_redirected"}`) +
		metric(metrics, `trellis_proxy_tcp_failed_total{direction="outbound",reason="no_original_destination"}`)
	if failed != 1 {
		t.Errorf("outbound failures = %v, want 1\n%s", failed, metrics)
	}
	if !strings.Contains(metrics, "go_goroutines") || !strings.Contains(metrics, "process_resident_memory_bytes") {
		t.Error("/metrics lacks the Go and process collectors")
	}

	resp, err := c.Post(admin+"/shutdown", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if err := p.wait(t, 5*time.Second); err != nil {
		t.Errorf("after /shutdown the proxy exited with %v, want 0", err)
	}
}

// SIGTERM drains and exits 0.
func TestRunStopsOnSIGTERM(t *testing.T) {
	p := startProxy(t, command("run", "--outbound-addr=127.0.0.1:0", "--inbound-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0"), (*exec.Cmd).Start)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t, 5*time.Second); err != nil {
		t.Errorf("exit: %v, want 0", err)
	}
	if !strings.Contains(strings.Join(p.logLines(), "\n"), `"msg":"draining: asked to stop"`) {
		t.Error("the log does not say why the proxy stopped")
	}
}

func TestRunFailsOnBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	var stderr strings.Builder
	cmd := command("run", "--outbound-addr="+ln.Addr().String(), "--inbound-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0")
	cmd.Stderr = &stderr
	err = cmd.Run()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "outbound listener") {
		t.Errorf("exit %v, stderr:\n%s\nwant exit 1 naming the outbound listener", err, stderr.String())
	}
}

func TestWaitReady(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) < 3 {
			http.Error(w, "not ready: starting", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	var stdout, stderr strings.Builder
	if code := cli([]string{"wait-ready", "--timeout=10s", "--url=" + srv.URL}, &stdout, &stderr); code != 0 || calls.Load() != 3 {
		t.Errorf("exit %d after %d calls, stderr %q", code, calls.Load(), stderr.String())
	}

	stderr.Reset()
	never := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "draining", http.StatusServiceUnavailable)
	}))
	defer never.Close()
	start := time.Now()
	code := cli([]string{"wait-ready", "--timeout=600ms", "--url=" + never.URL}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "did not answer 200 within 600ms; last: HTTP 503") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("gave up after %v with a 600ms timeout", d)
	}
}

// connectionEnd connects to addr, sends nothing, and returns what ends the
// connection: io.EOF, a reset (which can beat the dial's return), or a
// timeout after 2 s.
func connectionEnd(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 {
		return fmt.Errorf("read %d bytes", n)
	}
	return err
}
