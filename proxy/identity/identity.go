package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net/url"
	"os"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trellis-mesh/trellis/ca"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/sidecar"
)

const (
	// DefaultTrustBundlePoll is how often the trust bundle file is read
	// when Options.TrustBundlePoll is zero. The kubelet refreshes a
	// ConfigMap volume within about a minute, so a few seconds more cost
	// nothing and reading a small file that often costs little.
	DefaultTrustBundlePoll = 10 * time.Second

	// Retries after a failed Certify wait a random time up to a ceiling
	// that doubles from backoffBase to backoffMax ("full jitter"), so that
	// the proxies of a cluster that lost its control plane come back
	// spread out rather than all at once.
	backoffBase = 250 * time.Millisecond
	backoffMax  = 30 * time.Second

	// certifyTimeout bounds one Certify call, so a control plane that
	// accepted the connection and hangs does not stall renewal.
	certifyTimeout = 30 * time.Second

	// renewJitter spreads renewals by up to ±10%, so pods started together
	// do not renew together forever.
	renewJitter = 0.1
)

// Options configure a Manager.
type Options struct {
	// TrustDomain, Namespace and ServiceAccount are the pod's; its SPIFFE
	// ID is ca.SPIFFEID(TrustDomain, Namespace, ServiceAccount).
	TrustDomain, Namespace, ServiceAccount string
	// TokenFile is the projected ServiceAccount token (audience
	// "trellis"). It is read anew for every Certify call, because the
	// kubelet rotates it.
	TokenFile string
	// TrustBundleFile holds the mesh's roots, PEM (the ca.crt key of the
	// mounted trellis-ca-bundle ConfigMap); several during a rotation.
	TrustBundleFile string
	// TrustBundlePoll is how often TrustBundleFile is read for changes;
	// DefaultTrustBundlePoll when zero.
	TrustBundlePoll time.Duration
	// Certify calls the control plane; in the proxy,
	// controlplanev1.NewIdentityServiceClient(conn).Certify over a
	// connection made with ControlPlaneTLS.
	Certify func(ctx context.Context, req *controlplanev1.CertifyRequest) (*controlplanev1.CertifyResponse, error)
	// Log is for failures and renewals; slog.Default when nil.
	Log *slog.Logger
	// Now is the clock of certificate checks and renewal times; time.Now
	// when nil. Waits use real timers whatever it says.
	Now func() time.Time
	// Registerer gets the metrics; none are exported when nil.
	Registerer prometheus.Registerer
}

// Manager holds the workload's key, certificate and trust bundle. Its zero
// value is not usable; call New, then Run.
type Manager struct {
	id          string
	trustDomain string
	namespace   string
	sa          string
	tokenFile   string
	bundleFile  string
	poll        time.Duration
	certify     func(context.Context, *controlplanev1.CertifyRequest) (*controlplanev1.CertifyResponse, error)
	log         *slog.Logger
	now         func() time.Time
	metrics     metrics

	// The key lives as long as the process and every renewal sends the
	// same request: the key never leaves memory, and a restarted proxy
	// gets a new one.
	key *ecdsa.PrivateKey
	csr []byte

	cert      atomic.Pointer[workloadCert] // nil until the first certificate
	ready     chan struct{}
	readyOnce sync.Once

	trust      atomic.Pointer[trustState]
	trustMu    sync.Mutex // serializes changes of trust and guards what follows
	bundleRead bool       // whether bundleSum is set
	bundleSum  [32]byte   // SHA-256 of the TrustBundleFile content last parsed
	readErr    string     // why TrustBundleFile could not be read, "" when it could
	parseErr   string     // why its content last read did not parse, "" when it did

	clientMu sync.Mutex
	clients  map[string]*tls.Config
	sessions tls.ClientSessionCache
}

// workloadCert is a certificate the control plane signed for the key.
type workloadCert struct {
	tls  *tls.Certificate // chain and key, Leaf set
	leaf *x509.Certificate
}

// New checks o, generates the key and builds the certificate request.
// Call Run to get a certificate.
func New(o Options) (*Manager, error) {
	id, err := spiffeIDFromOptions(o)
	if err != nil {
		return nil, err
	}
	switch {
	case o.TokenFile == "":
		return nil, fmt.Errorf("identity: Options.TokenFile is empty: set it to the projected ServiceAccount token, %s",
			path.Join(sidecar.TokenDir, sidecar.TokenFile))
	case o.TrustBundleFile == "":
		return nil, fmt.Errorf("identity: Options.TrustBundleFile is empty: set it to the mesh's roots, %s",
			path.Join(sidecar.TrustBundleDir, sidecar.TrustBundleFile))
	case o.Certify == nil:
		return nil, errors.New("identity: Options.Certify is nil: pass the Certify method of an IdentityService client connected with ControlPlaneTLS")
	case o.TrustBundlePoll < 0:
		return nil, fmt.Errorf("identity: Options.TrustBundlePoll is %s: it must be positive, or zero for %s", o.TrustBundlePoll, DefaultTrustBundlePoll)
	}
	m := &Manager{
		id:          id,
		trustDomain: o.TrustDomain,
		namespace:   o.Namespace,
		sa:          o.ServiceAccount,
		tokenFile:   o.TokenFile,
		bundleFile:  o.TrustBundleFile,
		poll:        o.TrustBundlePoll,
		certify:     o.Certify,
		log:         o.Log,
		now:         o.Now,
		ready:       make(chan struct{}),
		clients:     make(map[string]*tls.Config),
		sessions:    tls.NewLRUClientSessionCache(sessionCacheSize),
	}
	if m.poll == 0 {
		m.poll = DefaultTrustBundlePoll
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.metrics, err = newMetrics(o.Registerer); err != nil {
		return nil, err
	}
	if m.key, m.csr, err = newKeyAndCSR(id, o.TrustDomain); err != nil {
		return nil, err
	}
	m.trust.Store(newTrustState(nil, nil))
	// A bundle that cannot be read yet is not fatal: Run keeps reading it,
	// and every handshake that needs it says what is missing.
	m.reloadTrustBundle()
	return m, nil
}

// spiffeIDFromOptions checks the identity fields one by one, so the error
// names the one to fix.
func spiffeIDFromOptions(o Options) (string, error) {
	if err := ca.ValidateTrustDomain(o.TrustDomain); err != nil {
		return "", fmt.Errorf("identity: Options.TrustDomain (%s): %w", sidecar.EnvTrustDomain, err)
	}
	if o.Namespace == "" {
		return "", fmt.Errorf("identity: Options.Namespace is empty: set it to the pod's namespace (%s)", sidecar.EnvPodNamespace)
	}
	if o.ServiceAccount == "" {
		return "", fmt.Errorf("identity: Options.ServiceAccount is empty: set it to the pod's ServiceAccount (%s)", sidecar.EnvServiceAccount)
	}
	id, err := ca.SPIFFEID(o.TrustDomain, o.Namespace, o.ServiceAccount)
	if err != nil {
		return "", fmt.Errorf("identity: Options.Namespace %q and ServiceAccount %q do not make a SPIFFE ID: %w", o.Namespace, o.ServiceAccount, err)
	}
	return id, nil
}

// newKeyAndCSR makes the workload key and the request the control plane
// signs: the SPIFFE ID as its only URI SAN and nothing else, which is all
// ca.CheckWorkloadCSR accepts. The request is checked here with that same
// function, so a request the control plane would refuse fails at start-up
// rather than at every Certify.
func newKeyAndCSR(id, trustDomain string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: generating the workload key: %w", err)
	}
	u, err := url.Parse(id)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: SPIFFE ID %s: %w", id, err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: building the certificate signing request for %s: %w", id, err)
	}
	if _, _, err := ca.CheckWorkloadCSR(csr, trustDomain); err != nil {
		return nil, nil, fmt.Errorf("identity: the certificate signing request for %s would be refused: %w", id, err)
	}
	return key, csr, nil
}

// ID is the workload's SPIFFE ID.
func (m *Manager) ID() string { return m.id }

// Ready is closed once the first certificate is held.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// NotAfter is when the current certificate expires; zero before the first.
func (m *Manager) NotAfter() time.Time {
	if c := m.cert.Load(); c != nil {
		return c.leaf.NotAfter
	}
	return time.Time{}
}

// Run gets a certificate and renews it until ctx ends, and follows the
// trust bundle file meanwhile. A failed Certify is retried with backoff;
// the current certificate is served until a new one replaces it. Call it
// once.
func (m *Manager) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { m.pollTrustBundle(ctx) })

	failures := 0
	for {
		wait, err := m.renew(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			wait = backoff(failures, mathrand.Float64())
			attrs := []any{"id", m.id, "attempt", failures, "retryIn", wait.Round(time.Millisecond), "error", err}
			if c := m.cert.Load(); c != nil {
				attrs = append(attrs, "currentNotAfter", c.leaf.NotAfter)
			}
			m.log.Warn("could not get a workload certificate; retrying", attrs...)
		} else {
			failures = 0
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// renew asks for a certificate once and, when it gets a good one, makes it
// current. It returns how long to wait before the next renewal.
func (m *Manager) renew(ctx context.Context) (time.Duration, error) {
	wc, roots, resp, err := m.request(ctx)
	if err != nil {
		m.metrics.failed.Inc()
		return 0, err
	}
	received := m.now()
	m.setResponseRoots(roots)
	m.cert.Store(wc)
	m.metrics.issued.Inc()
	m.metrics.expiry.Set(float64(wc.leaf.NotAfter.Unix()))

	var refresh time.Time
	if ts := resp.GetRefreshAfter(); ts != nil && ts.IsValid() {
		refresh = ts.AsTime()
	}
	wait := renewDelay(received, wc.leaf.NotAfter, refresh, mathrand.Float64())
	m.log.Info("got a workload certificate", "id", m.id, "notAfter", wc.leaf.NotAfter, "renewIn", wait.Round(time.Millisecond))
	m.readyOnce.Do(func() { close(m.ready) })
	return wait, nil
}

// request calls Certify and checks the answer. It returns the certificate
// and the response's roots, or why neither is usable.
func (m *Manager) request(ctx context.Context) (*workloadCert, []*x509.Certificate, *controlplanev1.CertifyResponse, error) {
	token, err := m.readToken()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, certifyTimeout)
	defer cancel()
	resp, err := m.certify(ctx, &controlplanev1.CertifyRequest{Csr: m.csr, Token: token})
	if err != nil {
		return nil, nil, nil, m.explainCertifyError(err)
	}
	wc, roots, err := m.checkResponse(resp)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("the control plane's certificate for %s is unusable, so the current one is kept: %w", m.id, err)
	}
	return wc, roots, resp, nil
}

func (m *Manager) readToken() (string, error) {
	b, err := os.ReadFile(m.tokenFile)
	if err != nil {
		return "", fmt.Errorf("reading the ServiceAccount token: %w; the pod needs the projected token volume %s mounted at %s", err, sidecar.TokenVolumeName, sidecar.TokenDir)
	}
	token := string(bytes.TrimSpace(b))
	if token == "" {
		return "", fmt.Errorf("the ServiceAccount token file %s is empty: the kubelet has not written the projected token yet", m.tokenFile)
	}
	return token, nil
}

// explainCertifyError says what a refusal means for the proxy, so the log
// line points at the token, the request or the control plane.
func (m *Manager) explainCertifyError(err error) error {
	switch status.Code(err) {
	case codes.Unauthenticated:
		return fmt.Errorf("the control plane refused the ServiceAccount token read from %s (it must be the pod's projected token, audience %q): %w",
			m.tokenFile, sidecar.TokenAudience, err)
	case codes.PermissionDenied:
		return fmt.Errorf("the control plane refused to certify %s with the token read from %s (it must be ServiceAccount %s/%s's): %w",
			m.id, m.tokenFile, m.namespace, m.sa, err)
	case codes.InvalidArgument:
		return fmt.Errorf("the control plane refused the certificate signing request: %w", err)
	case codes.Unavailable:
		return fmt.Errorf("the control plane is unavailable (unreachable, or without a signer): %w", err)
	case codes.DeadlineExceeded:
		return fmt.Errorf("the control plane did not answer within %s: %w", certifyTimeout, err)
	}
	return fmt.Errorf("calling Certify: %w", err)
}

// checkResponse accepts a certificate only when it is for this key and
// this ID, usable for both ends of mutual TLS, and verifies against the
// roots it would be served with (the file's and the response's): anything
// else would be a certificate peers refuse, so keeping the previous one is
// better.
func (m *Manager) checkResponse(resp *controlplanev1.CertifyResponse) (*workloadCert, []*x509.Certificate, error) {
	if len(resp.GetChain()) == 0 {
		return nil, nil, errors.New("the response holds no certificate")
	}
	chain := make([]*x509.Certificate, len(resp.GetChain()))
	for i, der := range resp.GetChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("certificate %d of the chain does not parse: %w", i, err)
		}
		chain[i] = c
	}
	roots := make([]*x509.Certificate, len(resp.GetTrustBundle()))
	for i, der := range resp.GetTrustBundle() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("root %d of the trust bundle does not parse: %w", i, err)
		}
		roots[i] = c
	}
	leaf := chain[0]
	if !m.key.PublicKey.Equal(leaf.PublicKey) {
		return nil, nil, errors.New("the certificate is for another public key than this proxy's")
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != m.id {
		return nil, nil, fmt.Errorf("the certificate names %q, want exactly %s", uriStrings(leaf), m.id)
	}
	pool := m.trust.Load().withResponse(roots).pool
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots:         pool,
			Intermediates: inter,
			CurrentTime:   m.now(),
			KeyUsages:     []x509.ExtKeyUsage{usage},
		}); err != nil {
			return nil, nil, fmt.Errorf("the certificate does not verify against the trust bundle: %w", err)
		}
	}
	return &workloadCert{
		tls:  &tls.Certificate{Certificate: resp.GetChain(), PrivateKey: m.key, Leaf: leaf},
		leaf: leaf,
	}, roots, nil
}

// renewDelay is how long after received to ask for the next certificate,
// for a leaf valid until notAfter that the control plane asked to refresh
// at refresh (zero when it did not say). jitter is in [0, 1).
//
// The control plane's time is taken when it falls in the leaf's life after
// its first tenth: earlier would have the proxy ask again and again. Else
// it is half the life left, which leaves as long again to retry before the
// leaf expires. Either way it is moved by up to ±10% and never later than
// nine tenths of the life. The life is counted from received, not from
// NotBefore, which the signer backdates for clock skew.
func renewDelay(received, notAfter, refresh time.Time, jitter float64) time.Duration {
	life := notAfter.Sub(received)
	if life <= 0 {
		return 0
	}
	base := life / 2
	if !refresh.IsZero() {
		if d := refresh.Sub(received); d >= life/10 && d < life {
			base = d
		}
	}
	d := time.Duration(float64(base) * (1 + renewJitter*(2*jitter-1)))
	return min(d, life-life/10)
}

// backoff is the wait before retry number failures (from 1): a random
// time, jitter in [0, 1), below a ceiling that doubles from backoffBase up
// to backoffMax.
func backoff(failures int, jitter float64) time.Duration {
	ceiling := backoffMax
	if failures <= 20 { // beyond, the shift would overflow; backoffMax holds anyway
		ceiling = min(backoffBase<<(max(failures, 1)-1), backoffMax)
	}
	return time.Duration(jitter * float64(ceiling))
}

// sleep waits for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
