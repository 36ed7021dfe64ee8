package identity

import (
	"context"
	"crypto/x509"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/ca"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

func TestFirstCertificate(t *testing.T) {
	cp := startControlPlane(t, time.Hour)
	tm := cp.manager(t, "web", cp.token("web"), nil)
	m := tm.Manager

	if m.ID() != spiffeID("web") {
		t.Errorf("ID() = %s, want %s", m.ID(), spiffeID("web"))
	}
	if !m.NotAfter().IsZero() {
		t.Errorf("NotAfter() before the first certificate = %s, want zero", m.NotAfter())
	}
	select {
	case <-m.Ready():
		t.Fatal("Ready is closed before Run")
	default:
	}
	if _, err := m.ServerTLS(nil).GetCertificate(nil); err == nil || !strings.Contains(err.Error(), "no workload certificate yet") {
		t.Errorf("GetCertificate before the first certificate: %v, want no workload certificate yet", err)
	}

	run(t, m)
	waitReady(t, m)

	if got, want := m.NotAfter(), time.Now().Add(time.Hour); got.Before(want.Add(-time.Minute)) || got.After(want) {
		t.Errorf("NotAfter() = %s, want about %s", got, want)
	}
	c, err := m.ServerTLS(nil).GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Leaf.URIs[0].String(); len(c.Leaf.URIs) != 1 || got != m.ID() {
		t.Errorf("the served certificate names %v, want %s", c.Leaf.URIs, m.ID())
	}
	if len(c.Certificate) != 2 {
		t.Errorf("the served chain has %d certificates, want the leaf and the issuer", len(c.Certificate))
	}

	// The request is what the control plane accepts, and the certificate
	// is for its key.
	cp.mu.Lock()
	csrDER := cp.csrs[0]
	cp.mu.Unlock()
	csr, id, err := ca.CheckWorkloadCSR(csrDER, trustDomain)
	if err != nil {
		t.Fatalf("the CSR does not pass ca.CheckWorkloadCSR: %v", err)
	}
	if id != m.ID() {
		t.Errorf("the CSR asks for %s, want %s", id, m.ID())
	}
	if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 || len(csr.Subject.Names) > 0 {
		t.Errorf("the CSR asks for more than its SPIFFE ID: %+v", csr)
	}
	if !m.key.PublicKey.Equal(c.Leaf.PublicKey) || !m.key.PublicKey.Equal(csr.PublicKey) {
		t.Error("the CSR or the certificate is not for the manager's key")
	}

	if got := metric(t, tm.reg, "trellis_proxy_certificate_requests_total", "result", "issued"); got != 1 {
		t.Errorf("issued = %v, want 1", got)
	}
	if got := metric(t, tm.reg, "trellis_proxy_certificate_requests_total", "result", "failed"); got != 0 {
		t.Errorf("failed = %v, want 0", got)
	}
	if got := metric(t, tm.reg, "trellis_proxy_certificate_expiry_timestamp_seconds"); got != float64(m.NotAfter().Unix()) {
		t.Errorf("expiry = %v, want %d", got, m.NotAfter().Unix())
	}
	// The file's root and the response's are the same one.
	if got := metric(t, tm.reg, "trellis_proxy_trust_bundle_roots"); got != 1 {
		t.Errorf("trust bundle roots = %v, want 1", got)
	}
	if !strings.Contains(tm.log.String(), "got a workload certificate") {
		t.Errorf("no log of the certificate:\n%s", tm.log)
	}
}

// A short-lived certificate is renewed, and the next handshake serves the
// new one.
func TestRenewal(t *testing.T) {
	cp := startControlPlane(t, 2*time.Second)
	server, client := cp.started(t, "server"), cp.started(t, "client")

	// Without a session cache every handshake is a full one, which is
	// where the server presents its certificate.
	cfg := client.ClientTLS(server.ID(), nil).Clone()
	cfg.ClientSessionCache = nil
	served := func() *x509.Certificate {
		srv, cli := handshake(t, server.ServerTLS(nil), cfg)
		if srv.err != nil || cli.err != nil {
			t.Fatalf("handshake: server %v, client %v", srv.err, cli.err)
		}
		return cli.state.PeerCertificates[0]
	}
	first := served()
	firstNotAfter := server.NotAfter()
	var renewed *x509.Certificate
	eventually(t, 5*time.Second, "the server still serves its first certificate", func() bool {
		renewed = served()
		return renewed.SerialNumber.Cmp(first.SerialNumber) != 0
	})
	// Certificate times are whole seconds, so a quick renewal may keep
	// the same NotAfter.
	if renewed.NotAfter.Before(firstNotAfter) {
		t.Errorf("the renewed certificate expires at %s, before the first (%s)", renewed.NotAfter, firstNotAfter)
	}
	if got := metric(t, server.reg, "trellis_proxy_certificate_requests_total", "result", "issued"); got < 2 {
		t.Errorf("issued = %v, want at least 2", got)
	}
	if got := metric(t, server.reg, "trellis_proxy_certificate_expiry_timestamp_seconds"); got < float64(firstNotAfter.Unix()) {
		t.Errorf("expiry = %v, want at least %d", got, firstNotAfter.Unix())
	}
}

// A refused token is retried with backoff and logged as such; a token
// that the kubelet rotates in is read on the next attempt.
func TestRefusedToken(t *testing.T) {
	cp := startControlPlane(t, time.Hour)
	tm := cp.manager(t, "web", "stolen-token", nil)
	run(t, tm.Manager)

	eventually(t, 5*time.Second, "fewer than 3 attempts", func() bool {
		return metric(t, tm.reg, "trellis_proxy_certificate_requests_total", "result", "failed") >= 3
	})
	select {
	case <-tm.Ready():
		t.Fatal("Ready is closed though every request was refused")
	default:
	}
	log := tm.log.String()
	for _, want := range []string{
		"could not get a workload certificate; retrying",
		"refused the ServiceAccount token read from " + tm.tokenFile,
		"TokenReview says it is not authenticated", // the control plane's own words
		"retryIn=",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not say %q:\n%s", want, log)
		}
	}
	// Without backoff, a loop would have made hundreds of calls by now.
	cp.mu.Lock()
	calls := len(cp.csrs)
	cp.mu.Unlock()
	if calls > 10 {
		t.Errorf("%d Certify calls within seconds: no backoff", calls)
	}

	writeFile(t, tm.tokenFile, []byte(cp.token("web")+"\n"))
	waitReady(t, tm.Manager)
}

// A response that does not fit is a failed attempt; the certificate held
// stays.
func TestResponseChecks(t *testing.T) {
	cp := startControlPlane(t, time.Hour)
	other := newTestCA(t)
	var answer func(req *controlplanev1.CertifyRequest) *controlplanev1.CertifyResponse
	tm := cp.manager(t, "web", "any", func(o *Options) {
		o.Certify = func(_ context.Context, req *controlplanev1.CertifyRequest) (*controlplanev1.CertifyResponse, error) {
			return answer(req), nil
		}
	})
	m := tm.Manager
	pub := m.key.Public()

	answer = func(*controlplanev1.CertifyRequest) *controlplanev1.CertifyResponse {
		return cp.sign(pub, m.ID(), time.Hour)
	}
	if _, err := m.renew(context.Background()); err != nil {
		t.Fatal(err)
	}
	held := m.cert.Load()

	cases := map[string]struct {
		resp    func() *controlplanev1.CertifyResponse
		wantErr string
	}{
		"no certificate": {
			resp:    func() *controlplanev1.CertifyResponse { return &controlplanev1.CertifyResponse{} },
			wantErr: "holds no certificate",
		},
		"garbage": {
			resp: func() *controlplanev1.CertifyResponse {
				return &controlplanev1.CertifyResponse{Chain: [][]byte{[]byte("garbage")}}
			},
			wantErr: "certificate 0 of the chain does not parse",
		},
		"another key": {
			resp:    func() *controlplanev1.CertifyResponse { return cp.sign(newKey(t).Public(), m.ID(), time.Hour) },
			wantErr: "another public key",
		},
		"another identity": {
			resp:    func() *controlplanev1.CertifyResponse { return cp.sign(pub, spiffeID("admin"), time.Hour) },
			wantErr: `names ["` + spiffeID("admin") + `"], want exactly ` + spiffeID("web"),
		},
		"foreign CA": {
			resp: func() *controlplanev1.CertifyResponse {
				leaf, err := ca.SignWorkloadKey(other.issuer, pub, m.ID(), time.Hour, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				return &controlplanev1.CertifyResponse{Chain: [][]byte{leaf.Raw, other.issuer.Cert.Raw}, TrustBundle: [][]byte{cp.ca.root.Cert.Raw}}
			},
			wantErr: "does not verify against the trust bundle",
		},
		"expired": {
			resp: func() *controlplanev1.CertifyResponse {
				leaf, err := ca.SignWorkloadKey(cp.ca.issuer, pub, m.ID(), time.Hour, time.Now().Add(-3*time.Hour))
				if err != nil {
					t.Fatal(err)
				}
				return &controlplanev1.CertifyResponse{Chain: [][]byte{leaf.Raw, cp.ca.issuer.Cert.Raw}}
			},
			wantErr: "expired",
		},
		"client auth only": {
			resp: func() *controlplanev1.CertifyResponse {
				c := cp.ca.crafted(t, m.key, []string{m.ID()}, x509.ExtKeyUsageClientAuth)
				return &controlplanev1.CertifyResponse{Chain: c.Certificate}
			},
			wantErr: "incompatible key usage",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			answer = func(*controlplanev1.CertifyRequest) *controlplanev1.CertifyResponse { return tc.resp() }
			_, err := m.renew(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("renew: %v, want an error containing %q", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), "the current one is kept") {
				t.Errorf("the error does not say the current certificate is kept: %v", err)
			}
			if m.cert.Load() != held {
				t.Error("the certificate held was replaced")
			}
		})
	}
	if got := metric(t, tm.reg, "trellis_proxy_certificate_requests_total", "result", "failed"); got != float64(len(cases)) {
		t.Errorf("failed = %v, want %d", got, len(cases))
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	good := func() Options {
		return Options{
			TrustDomain:     trustDomain,
			Namespace:       namespace,
			ServiceAccount:  "web",
			TokenFile:       "/var/run/trellis/token/token",
			TrustBundleFile: "/var/run/trellis/ca-bundle/ca.crt",
			Log:             slog.New(slog.DiscardHandler),
			Certify: func(context.Context, *controlplanev1.CertifyRequest) (*controlplanev1.CertifyResponse, error) {
				return nil, nil
			},
		}
	}
	cases := map[string]struct {
		edit    func(*Options)
		wantErr string
	}{
		"no trust domain":      {func(o *Options) { o.TrustDomain = "" }, "Options.TrustDomain"},
		"bad trust domain":     {func(o *Options) { o.TrustDomain = "Cluster.Local" }, "Options.TrustDomain"},
		"no namespace":         {func(o *Options) { o.Namespace = "" }, "Options.Namespace is empty"},
		"no service account":   {func(o *Options) { o.ServiceAccount = "" }, "Options.ServiceAccount is empty"},
		"bad service account":  {func(o *Options) { o.ServiceAccount = "a/sa/b" }, `ServiceAccount "a/sa/b"`},
		"no token file":        {func(o *Options) { o.TokenFile = "" }, "Options.TokenFile is empty"},
		"no trust bundle file": {func(o *Options) { o.TrustBundleFile = "" }, "Options.TrustBundleFile is empty"},
		"no Certify":           {func(o *Options) { o.Certify = nil }, "Options.Certify is nil"},
		"negative poll":        {func(o *Options) { o.TrustBundlePoll = -time.Second }, "Options.TrustBundlePoll"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			o := good()
			tc.edit(&o)
			if _, err := New(o); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("New: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}

	// Two managers cannot share a registry: their series would clash.
	o := good()
	o.Registerer = prometheus.NewRegistry()
	if _, err := New(o); err != nil {
		t.Fatal(err)
	}
	if _, err := New(o); err == nil || !strings.Contains(err.Error(), "Options.Registerer") {
		t.Errorf("second New on one registry: %v, want an error naming Options.Registerer", err)
	}
}

func TestRenewDelay(t *testing.T) {
	received := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter := received.Add(time.Hour)
	at := func(d time.Duration) time.Time { return received.Add(d) }
	cases := map[string]struct {
		notAfter time.Time
		refresh  time.Time // zero: not set
		jitter   float64
		want     time.Duration
	}{
		"half life":                  {notAfter: notAfter, jitter: 0.5, want: 30 * time.Minute},
		"half life, least jitter":    {notAfter: notAfter, jitter: 0, want: 27 * time.Minute},
		"half life, most jitter":     {notAfter: notAfter, jitter: 0.75, want: 31*time.Minute + 30*time.Second},
		"control plane's time":       {notAfter: notAfter, refresh: at(40 * time.Minute), jitter: 0.5, want: 40 * time.Minute},
		"control plane's, jittered":  {notAfter: notAfter, refresh: at(40 * time.Minute), jitter: 0, want: 36 * time.Minute},
		"capped at nine tenths":      {notAfter: notAfter, refresh: at(58 * time.Minute), jitter: 0.5, want: 54 * time.Minute},
		"refresh in the past":        {notAfter: notAfter, refresh: at(-time.Minute), jitter: 0.5, want: 30 * time.Minute},
		"refresh too soon":           {notAfter: notAfter, refresh: at(time.Second), jitter: 0.5, want: 30 * time.Minute},
		"refresh after expiry":       {notAfter: notAfter, refresh: at(2 * time.Hour), jitter: 0.5, want: 30 * time.Minute},
		"expired when received":      {notAfter: at(-time.Second), jitter: 0.5, want: 0},
		"two-second leaf":            {notAfter: at(2 * time.Second), jitter: 0.5, want: time.Second},
		"two-second leaf, refreshed": {notAfter: at(2 * time.Second), refresh: at(time.Second), jitter: 1, want: 1100 * time.Millisecond},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			// Float rounding may move the result by a nanosecond.
			if got := renewDelay(received, tc.notAfter, tc.refresh, tc.jitter); (got - tc.want).Abs() > time.Microsecond {
				t.Errorf("renewDelay = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	ceilings := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second,
		8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, ceiling := range ceilings {
		failures := i + 1
		if got := backoff(failures, 0); got != 0 {
			t.Errorf("backoff(%d, 0) = %s, want 0 (full jitter)", failures, got)
		}
		if got := backoff(failures, 0.5); got != ceiling/2 {
			t.Errorf("backoff(%d, 0.5) = %s, want %s", failures, got, ceiling/2)
		}
	}
	if got := backoff(1000, 0.999); got > backoffMax {
		t.Errorf("backoff(1000) = %s, want at most %s", got, backoffMax)
	}
}
