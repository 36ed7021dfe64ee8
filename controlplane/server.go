package controlplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/ca"
	"github.com/trellis-mesh/trellis/controlplane/dashboard"
)

const (
	// ServiceName is the control plane's Service in the mesh namespace
	// (controllers.ControlPlaneName); the serving certificate is for its
	// DNS names.
	ServiceName = "trellis-controlplane"

	// trustBundleConfigMap and trustBundleKey are controllers.TrustBundleName
	// and controllers.TrustBundleKey: the operator's copy in the mesh
	// namespace holds the current roots and the old ones still trusted.
	trustBundleConfigMap = "trellis-ca-bundle"
	trustBundleKey       = "ca.crt"

	// Bounds of Config.WorkloadCertTTL. Below ten minutes proxies would renew
	// every few minutes for nothing; above a week a stolen key stays good
	// for too long, since certificates are never revoked.
	MinWorkloadCertTTL = 10 * time.Minute
	MaxWorkloadCertTTL = 7 * 24 * time.Hour
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
	// WorkloadCertTTL is the life of the certificates Certify signs, never
	// past the signer's own NotAfter; zero means ca.DefaultWorkloadValidity.
	WorkloadCertTTL time.Duration
	// TokenCacheTTL is how long an accepted ServiceAccount token is
	// remembered, so that a proxy retrying with the same token does not
	// cost another TokenReview; never past the token's own expiry. Zero
	// reviews every token.
	TokenCacheTTL time.Duration
}

// Validate reports the first setting the control plane cannot run with.
func (c Config) Validate() error {
	if err := ca.ValidateTrustDomain(c.TrustDomain); err != nil {
		return fmt.Errorf("--trust-domain: %w", err)
	}
	if c.Namespace == "" {
		return errors.New("--namespace is empty: set it to the namespace the control plane runs in")
	}
	if c.WorkloadCertTTL != 0 && (c.WorkloadCertTTL < MinWorkloadCertTTL || c.WorkloadCertTTL > MaxWorkloadCertTTL) {
		return fmt.Errorf("--workload-cert-ttl=%s is out of range: use between %s and %s", c.WorkloadCertTTL, MinWorkloadCertTTL, MaxWorkloadCertTTL)
	}
	if c.TokenCacheTTL < 0 {
		return fmt.Errorf("--token-cache-ttl=%s is negative: use 0 to review every token", c.TokenCacheTTL)
	}
	return nil
}

// signerState is everything Certify and the TLS handshake need, built once
// per change of the signer or the trust bundle and swapped atomically, so
// that a request sees one consistent signer, chain and bundle.
type signerState struct {
	signer *ca.KeyPair
	// chainDER follows every leaf: the intermediate and its chain, no root.
	chainDER [][]byte
	// roots is the trust bundle: the signer's roots, then older ones the
	// operator still publishes.
	roots     []*x509.Certificate
	bundleDER [][]byte
	// tls is the handshake configuration, with the roots as client CAs.
	tls *tls.Config
}

// Server is a control plane.
type Server struct {
	cfg    Config
	kube   kubernetes.Interface
	logger *slog.Logger
	now    func() time.Time

	// mu serializes loads and guards what they build state from.
	mu          sync.Mutex
	signer      *ca.KeyPair
	signerRoots []*x509.Certificate
	bundleRoots []*x509.Certificate
	loadErr     error
	state       atomic.Pointer[signerState]

	servingMu sync.Mutex
	serving   atomic.Pointer[servingCert]

	grpcServing atomic.Bool
	reviewer    *tokenReviewer

	registry  *prometheus.Registry
	notAfter  prometheus.Gauge
	loadCount *prometheus.CounterVec
	metrics   *identityMetrics
}

// New returns a control plane that has not loaded its signer yet. kube
// reviews the proxies' tokens and reads the trust bundle; without it
// Certify refuses every request.
func New(cfg Config, kube kubernetes.Interface, logger *slog.Logger) *Server {
	s := &Server{cfg: cfg, kube: kube, logger: logger, now: time.Now, registry: prometheus.NewRegistry()}
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
	s.metrics = newIdentityMetrics(s.registry)
	s.reviewer = newTokenReviewer(kube, cfg.TokenCacheTTL, s.metrics)
	return s
}

// Registry is the control plane's metrics registry, served on /metrics;
// other services of the control plane register theirs here.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// LoadSigner reads the signing intermediate from SignerDir. A failed load
// keeps the previous signer: a half-written rotation must not stop signing.
func (s *Server) LoadSigner() error {
	kp, roots, err := s.readSigner()
	s.mu.Lock()
	if err != nil {
		s.loadErr = err
		s.mu.Unlock()
		s.loadCount.WithLabelValues("error").Inc()
		return err
	}
	changed := s.signer == nil || !s.signer.Cert.Equal(kp.Cert) || !sameCerts(s.signerRoots, roots)
	s.loadErr = nil
	if changed {
		s.signer, s.signerRoots = kp, roots
		s.rebuildLocked()
	}
	s.mu.Unlock()
	s.notAfter.Set(float64(kp.Cert.NotAfter.Unix()))
	s.loadCount.WithLabelValues("ok").Inc()
	if changed {
		s.logger.Info("loaded signing intermediate", "subject", kp.Cert.Subject.CommonName, "notAfter", kp.Cert.NotAfter)
		// Sign the serving certificate now rather than in the next
		// handshake; a failure is retried there.
		if _, err := s.renewServing(); err != nil {
			s.logger.Error("signing the control plane's serving certificate", "error", err)
		}
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

// LoadTrustBundle reads the trust bundle the operator publishes in the
// mesh namespace, which also holds roots that were rotated out but may
// still have valid certificates under them: Certify hands them to proxies,
// and the gRPC server accepts client certificates under them. A missing
// ConfigMap leaves the signer's roots alone; a failed read keeps the last
// bundle.
func (s *Server) LoadTrustBundle(ctx context.Context) error {
	if s.kube == nil {
		return nil
	}
	var roots []*x509.Certificate
	cm, err := s.kube.CoreV1().ConfigMaps(s.cfg.Namespace).Get(ctx, trustBundleConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("reading ConfigMap %s/%s: %w", s.cfg.Namespace, trustBundleConfigMap, err)
	case cm.Data[trustBundleKey] != "":
		if roots, err = ca.ParseCertificates([]byte(cm.Data[trustBundleKey])); err != nil {
			return fmt.Errorf("ConfigMap %s/%s, key %s: %w", s.cfg.Namespace, trustBundleConfigMap, trustBundleKey, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !sameCerts(s.bundleRoots, roots) {
		s.bundleRoots = roots
		s.rebuildLocked()
		s.logger.Info("loaded trust bundle", "configMap", s.cfg.Namespace+"/"+trustBundleConfigMap, "roots", len(roots))
	}
	return nil
}

// rebuildLocked publishes a new signerState from the signer and the roots.
func (s *Server) rebuildLocked() {
	if s.signer == nil {
		return
	}
	now := s.now()
	st := &signerState{signer: s.signer}
	for _, c := range ca.IssuerChain(s.signer) {
		st.chainDER = append(st.chainDER, c.Raw)
	}
	pool := x509.NewCertPool()
	for _, r := range slices.Concat(s.signerRoots, s.bundleRoots) {
		if !now.Before(r.NotAfter) || slices.ContainsFunc(st.roots, r.Equal) {
			continue
		}
		st.roots = append(st.roots, r)
		st.bundleDER = append(st.bundleDER, r.Raw)
		pool.AddCert(r)
	}
	st.tls = s.handshakeConfig(pool)
	s.state.Store(st)
}

func sameCerts(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *x509.Certificate) bool { return bytes.Equal(x.Raw, y.Raw) })
}

// WatchSigner reloads the signer and the trust bundle every interval until
// ctx ends. The kubelet swaps a Secret volume's files atomically, so a poll
// sees old or new, never a mix.
func (s *Server) WatchSigner(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.LoadSigner(); err != nil {
			s.logger.Error("loading the signing intermediate", "dir", s.cfg.SignerDir, "error", err)
		}
		if err := s.LoadTrustBundle(ctx); err != nil && ctx.Err() == nil {
			s.logger.Error("loading the trust bundle", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Ready reports why the control plane cannot serve, or nil: it is ready
// when it holds a valid signer and its gRPC server is serving.
func (s *Server) Ready() error {
	s.mu.Lock()
	signer, loadErr := s.signer, s.loadErr
	s.mu.Unlock()
	switch {
	case signer == nil && loadErr != nil:
		return loadErr
	case signer == nil:
		return errors.New("the signing intermediate has not been loaded yet")
	case !s.now().Before(signer.Cert.NotAfter):
		return fmt.Errorf("the signing intermediate expired at %s", signer.Cert.NotAfter.UTC().Format(time.RFC3339))
	case !s.grpcServing.Load():
		return errors.New("the gRPC server is not serving")
	}
	return nil
}

// Handler serves /healthz (the process runs), /readyz (it can sign and
// serves gRPC), /metrics, and the dashboard's page at / (package dashboard).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	dashboard.Register(mux)
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
