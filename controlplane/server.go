package controlplane

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trellis-mesh/trellis/ca"
)

// Config is what the operator tells a control plane on its command line.
type Config struct {
	Mesh        string
	Namespace   string
	TrustDomain string
	// SignerDir holds tls.crt (the intermediate and its chain), tls.key and ca.crt (the roots).
	SignerDir string
	HTTPAddr  string
	GRPCAddr  string
}

// Server is a control plane.
type Server struct {
	cfg    Config
	logger *slog.Logger
	now    func() time.Time

	mu      sync.RWMutex
	signer  *ca.KeyPair
	roots   []*x509.Certificate
	loadErr error

	registry  *prometheus.Registry
	notAfter  prometheus.Gauge
	loadCount *prometheus.CounterVec
}

// New returns a control plane that has not loaded its signer yet.
func New(cfg Config, logger *slog.Logger) *Server {
	s := &Server{cfg: cfg, logger: logger, now: time.Now, registry: prometheus.NewRegistry()}
	s.notAfter = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "trellis_controlplane_signer_not_after_seconds",
		Help: "When the signing intermediate expires, in seconds since the epoch.",
	})
	s.loadCount = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_controlplane_signer_loads_total",
		Help: "Loads of the signing intermediate from its files, by result.",
	}, []string{"result"})
	s.registry.MustRegister(s.notAfter, s.loadCount,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return s
}

// LoadSigner reads the signing intermediate from SignerDir. A failed load
// keeps the previous signer: a half-written rotation must not stop signing.
func (s *Server) LoadSigner() error {
	kp, roots, err := s.readSigner()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.loadErr = err
		s.loadCount.WithLabelValues("error").Inc()
		return err
	}
	changed := s.signer == nil || !s.signer.Cert.Equal(kp.Cert)
	s.signer, s.roots, s.loadErr = kp, roots, nil
	s.notAfter.Set(float64(kp.Cert.NotAfter.Unix()))
	s.loadCount.WithLabelValues("ok").Inc()
	if changed {
		s.logger.Info("loaded signing intermediate", "subject", kp.Cert.Subject.CommonName, "notAfter", kp.Cert.NotAfter)
	}
	return nil
}

func (s *Server) readSigner() (*ca.KeyPair, []*x509.Certificate, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(s.cfg.SignerDir, name))
		if err != nil {
			return nil, fmt.Errorf("reading the signer: %w", err)
		}
		return b, nil
	}
	data := map[string][]byte{}
	for _, k := range []string{ca.IssuerCertKey, ca.IssuerKeyKey, ca.BundleKey} {
		b, err := read(k)
		if err != nil {
			return nil, nil, err
		}
		data[k] = b
	}
	return ca.ParseIssued(data, s.now())
}

// WatchSigner reloads the signer every interval until ctx ends. The kubelet
// swaps a Secret volume's files atomically, so a poll sees old or new, never
// a mix.
func (s *Server) WatchSigner(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.LoadSigner(); err != nil {
			s.logger.Error("loading the signing intermediate", "dir", s.cfg.SignerDir, "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Ready reports why the control plane cannot serve, or nil.
func (s *Server) Ready() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case s.signer == nil && s.loadErr != nil:
		return s.loadErr
	case s.signer == nil:
		return fmt.Errorf("the signing intermediate has not been loaded yet")
	case !s.now().Before(s.signer.Cert.NotAfter):
		return fmt.Errorf("the signing intermediate expired at %s", s.signer.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// Handler serves /healthz (the process runs), /readyz (it can sign) and /metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	return mux
}
