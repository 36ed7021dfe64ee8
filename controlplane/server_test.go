package controlplane

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/ca"
)

// writeSigner writes the files the kubelet would project from the CA Secret.
func writeSigner(t testing.TB, dir string, data map[string][]byte) {
	t.Helper()
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestServer(t *testing.T, dir string, now time.Time) *Server {
	s := New(Config{SignerDir: dir, Namespace: testNamespace, TrustDomain: testTrustDomain}, nil, discardLogger())
	s.now = func() time.Time { return now }
	return s
}

// serve runs s's gRPC server on loopback until the returned stop is called.
func serve(t *testing.T, s *Server) (stop func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeGRPC(ctx, s.GRPCServer(), lis, time.Second) }()
	for deadline := time.Now().Add(5 * time.Second); !s.grpcServing.Load() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("ServeGRPC: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestReadiness(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	res, err := ca.EnsureBuiltin(nil, ca.BuiltinConfig{TrustDomain: "cluster.local"}, now)
	if err != nil {
		t.Fatal(err)
	}
	signer := map[string][]byte{
		ca.IssuerCertKey: res.Data[ca.IssuerCertKey],
		ca.IssuerKeyKey:  res.Data[ca.IssuerKeyKey],
		ca.BundleKey:     res.Data[ca.BundleKey],
	}

	t.Run("not ready without a signer", func(t *testing.T) {
		s := newTestServer(t, t.TempDir(), now)
		if err := s.LoadSigner(); err == nil {
			t.Error("loaded a signer from an empty directory")
		}
		code, body := get(t, s.Handler(), "/readyz")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "tls.crt") {
			t.Errorf("readyz %d %q; want 503 naming the missing file", code, body)
		}
		if code, _ := get(t, s.Handler(), "/healthz"); code != http.StatusOK {
			t.Errorf("healthz %d; the process is alive", code)
		}
	})

	t.Run("ready with a valid signer while gRPC serves, and says when it expires", func(t *testing.T) {
		dir := t.TempDir()
		writeSigner(t, dir, signer)
		s := newTestServer(t, dir, now)
		if err := s.LoadSigner(); err != nil {
			t.Fatal(err)
		}
		if code, body := get(t, s.Handler(), "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "gRPC server is not serving") {
			t.Errorf("readyz %d %q before gRPC serves; want 503 saying so", code, body)
		}
		stop := serve(t, s)
		if code, body := get(t, s.Handler(), "/readyz"); code != http.StatusOK {
			t.Errorf("readyz %d %q", code, body)
		}
		stop()
		if code, _ := get(t, s.Handler(), "/readyz"); code != http.StatusServiceUnavailable {
			t.Errorf("readyz %d after gRPC stopped; want 503", code)
		}
		_, metrics := get(t, s.Handler(), "/metrics")
		if !strings.Contains(metrics, "trellis_controlplane_signer_not_after_seconds") {
			t.Error("no signer expiry metric")
		}
	})

	t.Run("a broken rotation keeps the last good signer", func(t *testing.T) {
		dir := t.TempDir()
		writeSigner(t, dir, signer)
		s := newTestServer(t, dir, now)
		if err := s.LoadSigner(); err != nil {
			t.Fatal(err)
		}
		serve(t, s)
		writeSigner(t, dir, map[string][]byte{ca.IssuerCertKey: []byte("garbage")})
		if err := s.LoadSigner(); err == nil {
			t.Error("garbage accepted as a signer")
		}
		if code, body := get(t, s.Handler(), "/readyz"); code != http.StatusOK {
			t.Errorf("readyz %d %q after a failed reload; the old signer still signs", code, body)
		}
	})

	t.Run("not ready once the signer expired", func(t *testing.T) {
		dir := t.TempDir()
		writeSigner(t, dir, signer)
		s := newTestServer(t, dir, now)
		if err := s.LoadSigner(); err != nil {
			t.Fatal(err)
		}
		s.now = func() time.Time { return res.Issuer.Cert.NotAfter.Add(time.Minute) }
		if code, body := get(t, s.Handler(), "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "expired") {
			t.Errorf("readyz %d %q; want 503 saying it expired", code, body)
		}
	})
}
