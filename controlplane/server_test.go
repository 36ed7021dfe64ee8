package controlplane

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/ca"
)

// writeSigner writes the files the kubelet would project from the CA Secret.
func writeSigner(t *testing.T, dir string, data map[string][]byte) {
	t.Helper()
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func newTestServer(t *testing.T, dir string, now time.Time) *Server {
	s := New(Config{SignerDir: dir}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.now = func() time.Time { return now }
	return s
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

	t.Run("ready with a valid signer, and says when it expires", func(t *testing.T) {
		dir := t.TempDir()
		writeSigner(t, dir, signer)
		s := newTestServer(t, dir, now)
		if err := s.LoadSigner(); err != nil {
			t.Fatal(err)
		}
		if code, body := get(t, s.Handler(), "/readyz"); code != http.StatusOK {
			t.Errorf("readyz %d %q", code, body)
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
