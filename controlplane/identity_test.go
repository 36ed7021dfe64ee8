package controlplane

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// checkStatus fails t unless err is a gRPC status with code whose message
// holds every |-separated part of msg.
func checkStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || err == nil {
		t.Fatalf("got %v, want a %s status", err, code)
	}
	if st.Code() != code {
		t.Fatalf("code %s (%s), want %s", st.Code(), st.Message(), code)
	}
	t.Logf("%s: %s", st.Code(), st.Message())
	for _, part := range strings.Split(msg, "|") {
		if !strings.Contains(st.Message(), part) {
			t.Fatalf("message %q does not contain %q", st.Message(), part)
		}
	}
}

// verifyLeaf checks a Certify answer: the chain verifies up to the trust
// bundle as a client and a server certificate for exactly wantID.
func verifyLeaf(t *testing.T, resp *controlplanev1.CertifyResponse, wantID string) (*x509.Certificate, [][]*x509.Certificate) {
	t.Helper()
	var chain []*x509.Certificate
	for _, der := range resp.GetChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	if len(chain) < 2 {
		t.Fatalf("chain has %d certificates, want the leaf and the intermediate", len(chain))
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	for _, der := range resp.GetTrustBundle() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		roots.AddCert(c)
	}
	for _, c := range chain[1:] {
		inters.AddCert(c)
	}
	leaf := chain[0]
	var verified [][]*x509.Certificate
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		v, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{usage}})
		if err != nil {
			t.Fatalf("leaf does not verify against the trust bundle for %v: %v", usage, err)
		}
		verified = v
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantID {
		t.Errorf("URIs %v, want [%s]", leaf.URIs, wantID)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("leaf has other SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if !resp.GetNotAfter().AsTime().Equal(leaf.NotAfter) {
		t.Errorf("not_after %v, leaf NotAfter %v", resp.GetNotAfter().AsTime(), leaf.NotAfter)
	}
	return leaf, verified
}

func TestCertify(t *testing.T) {
	h := startHarness(t, harnessOptions{})
	client := h.identity(t)
	ns := newNamespace(t)
	web := newWorkload(t, ns, "web")
	db := newWorkload(t, ns, "db")
	ctx := context.Background()

	t.Run("a valid request gets a 24 h certificate for its ServiceAccount", func(t *testing.T) {
		before := time.Now()
		resp, err := client.Certify(ctx, &controlplanev1.CertifyRequest{Csr: web.csr, Token: web.token(t, TokenAudience)})
		if err != nil {
			t.Fatal(err)
		}
		after := time.Now()
		leaf, chains := verifyLeaf(t, resp, web.id)
		if !chains[0][1].Equal(h.ca.issuer.Cert) || !chains[0][2].Equal(h.ca.root.Cert) {
			t.Error("the leaf does not chain through the issuer to the root")
		}
		if !web.key.PublicKey.Equal(leaf.PublicKey) {
			t.Error("the leaf is not for the CSR's key")
		}
		// Truncation to the second makes NotAfter up to a second early.
		if leaf.NotAfter.After(after.Add(24*time.Hour)) || leaf.NotAfter.Before(before.Add(24*time.Hour-time.Second)) {
			t.Errorf("NotAfter %v, want 24 h from now", leaf.NotAfter)
		}
		if leaf.NotAfter.After(h.ca.issuer.Cert.NotAfter) {
			t.Error("the leaf outlives its signer")
		}
		refresh := resp.GetRefreshAfter().AsTime()
		if refresh.Before(before.Add(24*time.Hour*4/10-time.Second)) || refresh.After(after.Add(12*time.Hour)) {
			t.Errorf("refresh_after %v, want between 40%% and 50%% of the life", refresh)
		}
		if n := len(resp.GetTrustBundle()); n != 1 {
			t.Errorf("trust bundle has %d roots, want 1", n)
		}
	})

	t.Run("a token of ServiceAccount A gets no certificate for B", func(t *testing.T) {
		_, err := client.Certify(ctx, &controlplanev1.CertifyRequest{Csr: db.csr, Token: web.token(t, TokenAudience)})
		checkStatus(t, err, codes.PermissionDenied, "asks for "+db.id+"|ServiceAccount "+ns+"/web|may have "+web.id+" only")
	})

	t.Run("a CSR for A's name in another namespace is refused", func(t *testing.T) {
		other := newNamespace(t)
		_, csr := newCSR(t, spiffeID(other, "web"))
		_, err := client.Certify(ctx, &controlplanev1.CertifyRequest{Csr: csr, Token: web.token(t, TokenAudience)})
		checkStatus(t, err, codes.PermissionDenied, "asks for "+spiffeID(other, "web"))
	})

	t.Run("a token for another audience is refused", func(t *testing.T) {
		_, err := client.Certify(ctx, &controlplanev1.CertifyRequest{Csr: web.csr, Token: web.token(t, "other")})
		checkStatus(t, err, codes.Unauthenticated, `does not accept the token for audience "trellis"`)
	})

	t.Run("an expired token is refused", func(t *testing.T) {
		_, err := client.Certify(ctx, &controlplanev1.CertifyRequest{Csr: web.csr, Token: web.expiredToken(t)})
		checkStatus(t, err, codes.Unauthenticated, "does not accept the token|expired")
	})

	t.Run("a token that is not a JWT is refused", func(t *testing.T) {
		_, err := client.Certify(ctx, &controlplanev1.CertifyRequest{Csr: web.csr, Token: "garbage"})
		checkStatus(t, err, codes.Unauthenticated, "does not accept the token")
	})

	t.Run("no token", func(t *testing.T) {
		_, err := client.Certify(ctx, &controlplanev1.CertifyRequest{Csr: web.csr})
		checkStatus(t, err, codes.Unauthenticated, "has no token")
	})

	t.Run("the token of a deleted ServiceAccount is refused", func(t *testing.T) {
		gone := newWorkload(t, ns, "gone")
		token := gone.token(t, TokenAudience)
		if err := kube.CoreV1().ServiceAccounts(ns).Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// The API server looks ServiceAccounts up in its informer cache,
		// which learns of the deletion a moment later.
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if _, err = client.Certify(ctx, &controlplanev1.CertifyRequest{Csr: gone.csr, Token: token}); err != nil {
				break
			}
		}
		checkStatus(t, err, codes.Unauthenticated, "does not accept the token")
	})

	t.Run("a token bound to a deleted object is refused", func(t *testing.T) {
		secret, err := kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{GenerateName: "bound-"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		token := requestToken(t, ns, "web", &authnv1.TokenRequestSpec{
			Audiences:      []string{TokenAudience},
			BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: secret.Name, UID: secret.UID},
		})
		if _, err := client.Certify(ctx, &controlplanev1.CertifyRequest{Csr: web.csr, Token: token}); err != nil {
			t.Fatalf("bound token refused while its Secret exists: %v", err)
		}
		if err := kube.CoreV1().Secrets(ns).Delete(ctx, secret.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if _, err = client.Certify(ctx, &controlplanev1.CertifyRequest{Csr: web.csr, Token: token}); err != nil {
				break
			}
		}
		checkStatus(t, err, codes.Unauthenticated, "does not accept the token")
	})

	t.Run("a CSR with extra SANs is refused", func(t *testing.T) {
		csr := csrFor(t, web.key, &x509.CertificateRequest{URIs: urls(t, web.id), DNSNames: []string{"web." + ns + ".svc"}})
		_, err := client.Certify(ctx, &controlplanev1.CertifyRequest{Csr: csr, Token: web.token(t, TokenAudience)})
		checkStatus(t, err, codes.InvalidArgument, "DNS names|remove every other subject alternative name")

		csr = csrFor(t, web.key, &x509.CertificateRequest{URIs: urls(t, web.id), IPAddresses: []net.IP{net.IPv4(10, 1, 2, 3)}})
		_, err = client.Certify(ctx, &controlplanev1.CertifyRequest{Csr: csr, Token: web.token(t, TokenAudience)})
		checkStatus(t, err, codes.InvalidArgument, "IP addresses")

		_, csr = newCSR(t, web.id, db.id)
		_, err = client.Certify(ctx, &controlplanev1.CertifyRequest{Csr: csr, Token: web.token(t, TokenAudience)})
		checkStatus(t, err, codes.InvalidArgument, "has 2 URI SANs")
	})

	t.Run("a garbage CSR is refused before the token is reviewed", func(t *testing.T) {
		reviews := counterValue(h.srv.metrics.reviews.rejected) + counterValue(h.srv.metrics.reviews.authenticated)
		_, err := client.Certify(ctx, &controlplanev1.CertifyRequest{Csr: []byte("nope"), Token: "garbage"})
		checkStatus(t, err, codes.InvalidArgument, "does not parse")
		if got := counterValue(h.srv.metrics.reviews.rejected) + counterValue(h.srv.metrics.reviews.authenticated); got != reviews {
			t.Error("a TokenReview was made for a request with a garbage CSR")
		}
	})

	t.Run("metrics count issued and refused certificates", func(t *testing.T) {
		m := h.srv.metrics
		if got := counterValue(m.issued); got < 2 {
			t.Errorf("issued %v, want at least 2", got)
		}
		for reason, atLeast := range map[string]float64{
			reasonWrongIdentity: 2, reasonInvalidToken: 4, reasonInvalidCSR: 4, reasonNoToken: 1,
		} {
			if got := counterValue(m.refused[reason]); got < atLeast {
				t.Errorf("refused{reason=%q} %v, want at least %v", reason, got, atLeast)
			}
		}
		if n := histogramCount(t, h.srv, "trellis_controlplane_certify_duration_seconds"); n < 10 {
			t.Errorf("Certify latency histogram counts %d calls, want every one", n)
		}
		_, body := get(t, h.srv.Handler(), "/metrics")
		for _, want := range []string{
			"trellis_controlplane_certificates_issued_total ",
			`trellis_controlplane_certificates_refused_total{reason="wrong_identity"} `,
			"trellis_controlplane_certify_duration_seconds_bucket",
			"trellis_controlplane_signer_not_after_seconds ",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics has no %s", want)
			}
		}
	})
}

func TestCertifyClampsToTheSigner(t *testing.T) {
	// An issuer with two hours left: the operator failed to rotate it.
	c := newTestCA(t, 2*time.Hour)
	h := startHarness(t, harnessOptions{ca: &c})
	w := newWorkload(t, newNamespace(t), "web")
	resp, err := h.identity(t).Certify(context.Background(), &controlplanev1.CertifyRequest{Csr: w.csr, Token: w.token(t, TokenAudience)})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := verifyLeaf(t, resp, w.id)
	if !leaf.NotAfter.Equal(c.issuer.Cert.NotAfter) {
		t.Errorf("NotAfter %v, want the signer's %v", leaf.NotAfter, c.issuer.Cert.NotAfter)
	}
	if refresh := resp.GetRefreshAfter().AsTime(); refresh.After(time.Now().Add(time.Hour)) {
		t.Errorf("refresh_after %v is past half of the remaining two hours", refresh)
	}

	t.Run("and is Unavailable once the signer expired", func(t *testing.T) {
		h.clock.Advance(2 * time.Hour)
		// No serving certificate can be valid any more either, so a proxy
		// cannot even connect; the refusal is seen from inside.
		_, _, err := h.srv.certify(context.Background(), &controlplanev1.CertifyRequest{Csr: w.csr, Token: w.token(t, TokenAudience)})
		checkStatus(t, err, codes.Unavailable, "expired at|rotate it")
		if _, err := h.srv.getCertificate(nil); err == nil {
			t.Error("a serving certificate past the signer's expiry")
		}
		if err := h.srv.Ready(); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Errorf("Ready() = %v with an expired signer", err)
		}
	})
}

func TestCertifyTTLFlag(t *testing.T) {
	h := startHarness(t, harnessOptions{ttl: 6 * time.Hour})
	w := newWorkload(t, newNamespace(t), "web")
	resp, err := h.identity(t).Certify(context.Background(), &controlplanev1.CertifyRequest{Csr: w.csr, Token: w.token(t, TokenAudience)})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := verifyLeaf(t, resp, w.id)
	if life := time.Until(leaf.NotAfter); life > 6*time.Hour || life < 6*time.Hour-time.Minute {
		t.Errorf("leaf lives %v more, want 6 h", life)
	}
}

func TestCertifyUnavailable(t *testing.T) {
	ns := newNamespace(t)
	w := newWorkload(t, ns, "web")

	t.Run("no signer", func(t *testing.T) {
		s := New(Config{Namespace: testNamespace, TrustDomain: testTrustDomain, SignerDir: t.TempDir()}, kube, discardLogger())
		_ = s.LoadSigner()
		_, _, err := s.certify(context.Background(), &controlplanev1.CertifyRequest{Csr: w.csr, Token: w.token(t, TokenAudience)})
		checkStatus(t, err, codes.Unavailable, "no signing intermediate|tls.crt|CAReady")
	})

	t.Run("the API server cannot be reached", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		_ = lis.Close()
		down, err := kubernetes.NewForConfig(&rest.Config{Host: "https://" + addr, Timeout: 2 * time.Second,
			TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
		if err != nil {
			t.Fatal(err)
		}
		h := startHarness(t, harnessOptions{kube: down})
		_, err = h.identity(t).Certify(context.Background(), &controlplanev1.CertifyRequest{Csr: w.csr, Token: w.token(t, TokenAudience)})
		checkStatus(t, err, codes.Unavailable, "TokenReview|retry later")
		if got := counterValue(h.srv.metrics.refused[reasonTokenReviewFailed]); got != 1 {
			t.Errorf("refused{reason=token_review_failed} %v, want 1", got)
		}
	})
}

func TestTokenCache(t *testing.T) {
	h := startHarness(t, harnessOptions{cacheTTL: time.Minute})
	client := h.identity(t)
	w := newWorkload(t, newNamespace(t), "web")
	token := w.token(t, TokenAudience)
	m := h.srv.metrics
	certify := func() {
		t.Helper()
		if _, err := client.Certify(context.Background(), &controlplanev1.CertifyRequest{Csr: w.csr, Token: token}); err != nil {
			t.Fatal(err)
		}
	}
	certify()
	certify()
	if a, c := counterValue(m.reviews.authenticated), counterValue(m.reviews.cached); a != 1 || c != 1 {
		t.Errorf("%v TokenReviews and %v cache hits, want 1 and 1", a, c)
	}
	h.clock.Advance(time.Minute)
	certify()
	if a := counterValue(m.reviews.authenticated); a != 2 {
		t.Errorf("%v TokenReviews after the cache TTL, want 2", a)
	}

	t.Run("a refused token is not remembered", func(t *testing.T) {
		other := w.token(t, "other")
		for range 2 {
			_, err := client.Certify(context.Background(), &controlplanev1.CertifyRequest{Csr: w.csr, Token: other})
			checkStatus(t, err, codes.Unauthenticated, "does not accept")
		}
		if r := counterValue(m.reviews.rejected); r != 2 {
			t.Errorf("%v rejections, want 2 TokenReviews", r)
		}
	})

	t.Run("an entry never outlives its token", func(t *testing.T) {
		r := newTokenReviewer(nil, time.Hour, m)
		now := time.Unix(1_800_000_000, 0)
		r.now = func() time.Time { return now }
		sa := serviceAccount{Namespace: "a", Name: "b"}
		r.remember([32]byte{1}, sa, fakeJWT(now.Add(10*time.Minute).Unix()))
		r.remember([32]byte{2}, sa, fakeJWT(now.Add(-time.Second).Unix()))
		r.remember([32]byte{3}, sa, "not.a-jwt")
		r.now = func() time.Time { return now.Add(10*time.Minute - time.Second) }
		if _, ok := r.cached([32]byte{1}); !ok {
			t.Error("a live token was forgotten")
		}
		r.now = func() time.Time { return now.Add(10 * time.Minute) }
		if _, ok := r.cached([32]byte{1}); ok {
			t.Error("a token was remembered past its exp")
		}
		for _, k := range [][32]byte{{2}, {3}} {
			if _, ok := r.cached(k); ok {
				t.Errorf("token %d cached although expired or unreadable", k[0])
			}
		}
	})
}

func TestSplitServiceAccountUsername(t *testing.T) {
	tests := map[string]struct {
		username string
		ns, name string
		ok       bool
	}{
		"ServiceAccount":     {"system:serviceaccount:shop:web", "shop", "web", true},
		"user":               {"alice", "", "", false},
		"node":               {"system:node:n1", "", "", false},
		"no name":            {"system:serviceaccount:shop:", "", "", false},
		"no namespace":       {"system:serviceaccount::web", "", "", false},
		"too many parts":     {"system:serviceaccount:shop:web:x", "", "", false},
		"prefix only":        {"system:serviceaccount:", "", "", false},
		"ServiceAccount grp": {"system:serviceaccounts:shop", "", "", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ns, n, ok := splitServiceAccountUsername(tc.username)
			if ns != tc.ns || n != tc.name || ok != tc.ok {
				t.Errorf("got %q %q %t, want %q %q %t", ns, n, ok, tc.ns, tc.name, tc.ok)
			}
		})
	}
}

func TestRefreshAfter(t *testing.T) {
	issued := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	tests := map[string]struct {
		life   time.Duration
		jitter float64
		want   time.Duration // after issued
	}{
		"half life without jitter":        {24 * time.Hour, 0, 12 * time.Hour},
		"half the jitter":                 {24 * time.Hour, 0.5, 12*time.Hour - 72*time.Minute},
		"most jitter is a tenth of life":  {24 * time.Hour, 0.9999999, 12*time.Hour - 144*time.Minute},
		"a clamped leaf, by its own life": {2 * time.Hour, 0.5, time.Hour - 6*time.Minute},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := refreshAfter(issued, issued.Add(tc.life), tc.jitter).Sub(issued)
			if d := got - tc.want; d < -10*time.Millisecond || d > 10*time.Millisecond {
				t.Errorf("refresh %v after issue, want %v", got, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Namespace: "trellis-system", TrustDomain: "cluster.local", WorkloadCertTTL: 24 * time.Hour}
	tests := map[string]struct {
		mutate  func(*Config)
		wantErr string
	}{
		"defaults":            {mutate: func(*Config) {}},
		"zero TTL is default": {mutate: func(c *Config) { c.WorkloadCertTTL = 0 }},
		"shortest TTL":        {mutate: func(c *Config) { c.WorkloadCertTTL = MinWorkloadCertTTL }},
		"longest TTL":         {mutate: func(c *Config) { c.WorkloadCertTTL = MaxWorkloadCertTTL }},
		"TTL too short":       {mutate: func(c *Config) { c.WorkloadCertTTL = time.Minute }, wantErr: "--workload-cert-ttl=1m0s is out of range"},
		"TTL too long":        {mutate: func(c *Config) { c.WorkloadCertTTL = 30 * 24 * time.Hour }, wantErr: "--workload-cert-ttl=720h0m0s is out of range"},
		"bad trust domain":    {mutate: func(c *Config) { c.TrustDomain = "Cluster.Local" }, wantErr: "--trust-domain"},
		"no namespace":        {mutate: func(c *Config) { c.Namespace = "" }, wantErr: "--namespace is empty"},
		"negative cache TTL":  {mutate: func(c *Config) { c.TokenCacheTTL = -time.Second }, wantErr: "--token-cache-ttl=-1s is negative"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := good
			tc.mutate(&c)
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// fakeJWT is a token-shaped string whose payload has exp; its signature is
// not valid, which is fine where only the expiry is read.
func fakeJWT(exp int64) string {
	return "eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":`+strconv.FormatInt(exp, 10)+`}`)) + ".sig"
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func histogramCount(t *testing.T, s *Server, name string) uint64 {
	t.Helper()
	families, err := s.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no histogram %s", name)
	return 0
}
