package controlplane

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/trellis-mesh/trellis/ca"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// TokenAudience is the audience of the proxies' ServiceAccount tokens
// (sidecar.TokenAudience); a token for any other audience is refused.
const TokenAudience = "trellis"

// Reasons a certificate is refused, the values of the reason label.
const (
	reasonNoSigner          = "no_signer"
	reasonSignerExpired     = "signer_expired"
	reasonNoToken           = "no_token"
	reasonInvalidCSR        = "invalid_csr"
	reasonInvalidToken      = "invalid_token"
	reasonNotServiceAccount = "not_service_account"
	reasonTokenReviewFailed = "token_review_failed"
	reasonWrongIdentity     = "wrong_identity"
	reasonSigningFailed     = "signing_failed"
)

var refusalReasons = []string{
	reasonNoSigner, reasonSignerExpired, reasonNoToken, reasonInvalidCSR, reasonInvalidToken,
	reasonNotServiceAccount, reasonTokenReviewFailed, reasonWrongIdentity, reasonSigningFailed,
}

// identityMetrics are pre-resolved, so a request does no label lookup.
type identityMetrics struct {
	issued   prometheus.Counter
	refused  map[string]prometheus.Counter // filled once, read-only after
	duration prometheus.Histogram
	reviews  struct{ cached, authenticated, rejected, failed prometheus.Counter }
}

func newIdentityMetrics(reg prometheus.Registerer) *identityMetrics {
	m := &identityMetrics{refused: make(map[string]prometheus.Counter, len(refusalReasons))}
	m.issued = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "trellis_controlplane_certificates_issued_total",
		Help: "Workload certificates signed by Certify.",
	})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_controlplane_certificates_refused_total",
		Help: "Certify requests refused, by reason.",
	}, []string{"reason"})
	for _, r := range refusalReasons {
		m.refused[r] = refused.WithLabelValues(r)
	}
	m.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "trellis_controlplane_certify_duration_seconds",
		Help:    "Time Certify takes, token review included, whatever the outcome.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms to 4 s
	})
	reviews := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_controlplane_token_reviews_total",
		Help: "ServiceAccount token checks by result: cached (no TokenReview), authenticated, rejected, failed (the API server could not answer).",
	}, []string{"result"})
	m.reviews.cached = reviews.WithLabelValues("cached")
	m.reviews.authenticated = reviews.WithLabelValues("authenticated")
	m.reviews.rejected = reviews.WithLabelValues("rejected")
	m.reviews.failed = reviews.WithLabelValues("failed")
	reg.MustRegister(m.issued, refused, m.duration, reviews)
	return m
}

// refusal is why Certify refused, as the proxy sees it (code and message)
// and as the metrics count it (reason).
type refusal struct {
	code   codes.Code
	reason string
	msg    string
}

func refuse(code codes.Code, reason, format string, args ...any) *refusal {
	return &refusal{code: code, reason: reason, msg: fmt.Sprintf(format, args...)}
}

func (r *refusal) Error() string { return r.msg }

// GRPCStatus makes a refusal a gRPC status wherever it is returned.
func (r *refusal) GRPCStatus() *status.Status { return status.New(r.code, r.msg) }

type identityServer struct {
	controlplanev1.UnimplementedIdentityServiceServer
	s *Server
}

func (is *identityServer) Certify(ctx context.Context, req *controlplanev1.CertifyRequest) (*controlplanev1.CertifyResponse, error) {
	s := is.s
	start := time.Now()
	resp, sa, err := s.certify(ctx, req)
	s.metrics.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		var r *refusal
		if !errors.As(err, &r) {
			r = refuse(codes.Internal, reasonSigningFailed, "%v", err)
		}
		s.metrics.refused[r.reason].Inc()
		s.logger.Info("refused a certificate", "reason", r.reason, "code", r.code.String(),
			"namespace", sa.Namespace, "serviceAccount", sa.Name, "pod", sa.Pod, "error", r.msg)
		return nil, r
	}
	s.metrics.issued.Inc()
	s.logger.Debug("issued a certificate", "namespace", sa.Namespace, "serviceAccount", sa.Name, "pod", sa.Pod,
		"notAfter", resp.GetNotAfter().AsTime())
	return resp, nil
}

// certify checks the request, cheapest first, and signs it. It returns the
// ServiceAccount the token was for, when the token got that far, for logs.
func (s *Server) certify(ctx context.Context, req *controlplanev1.CertifyRequest) (*controlplanev1.CertifyResponse, serviceAccount, error) {
	var sa serviceAccount
	st := s.state.Load()
	if st == nil {
		s.mu.Lock()
		loadErr := s.loadErr
		s.mu.Unlock()
		why := "not read yet"
		if loadErr != nil {
			why = loadErr.Error()
		}
		return nil, sa, refuse(codes.Unavailable, reasonNoSigner,
			"this control plane has no signing intermediate (%s): it reads it from %s, which the operator fills from the mesh's CA Secret; check the Mesh's CAReady condition, or retry another replica",
			why, s.cfg.SignerDir)
	}
	now := s.now()
	if !now.Before(st.signer.Cert.NotAfter) {
		return nil, sa, refuse(codes.Unavailable, reasonSignerExpired,
			"the signing intermediate %q expired at %s: the operator must rotate it; check the Mesh's CAReady condition",
			st.signer.Cert.Subject.CommonName, st.signer.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if req.GetToken() == "" {
		return nil, sa, refuse(codes.Unauthenticated, reasonNoToken,
			"the request has no token: send the pod's projected ServiceAccount token with audience %q", TokenAudience)
	}
	// The CSR is checked before the token: it costs no call to the API
	// server, so garbage is refused without one.
	csr, askedID, err := ca.CheckWorkloadCSR(req.GetCsr(), s.cfg.TrustDomain)
	if err != nil {
		return nil, sa, refuse(codes.InvalidArgument, reasonInvalidCSR, "%v", err)
	}
	sa, rerr := s.reviewer.review(ctx, req.GetToken())
	if rerr != nil {
		return nil, sa, rerr
	}
	id, err := ca.SPIFFEID(s.cfg.TrustDomain, sa.Namespace, sa.Name)
	if err != nil {
		return nil, sa, refuse(codes.PermissionDenied, reasonWrongIdentity,
			"ServiceAccount %s/%s has no SPIFFE ID: %v", sa.Namespace, sa.Name, err)
	}
	if askedID != id {
		return nil, sa, refuse(codes.PermissionDenied, reasonWrongIdentity,
			"the certificate signing request asks for %s, but the token is ServiceAccount %s/%s's, which may have %s only: put that ID in the request's URI SAN",
			askedID, sa.Namespace, sa.Name, id)
	}
	leaf, err := ca.SignWorkloadKey(st.signer, csr.PublicKey, id, s.cfg.WorkloadCertTTL, now)
	if err != nil {
		return nil, sa, refuse(codes.Internal, reasonSigningFailed, "signing the certificate for %s: %v", id, err)
	}
	chain := make([][]byte, 0, 1+len(st.chainDER))
	chain = append(append(chain, leaf.Raw), st.chainDER...)
	return &controlplanev1.CertifyResponse{
		Chain:        chain,
		TrustBundle:  st.bundleDER,
		NotAfter:     timestamppb.New(leaf.NotAfter),
		RefreshAfter: timestamppb.New(refreshAfter(now, leaf.NotAfter, rand.Float64())),
	}, sa, nil
}

// refreshAfter is when a certificate issued at issued and valid until
// notAfter should be replaced: at half its remaining life, less up to a
// tenth of it (jitter in [0, 1)), so pods started together do not all come
// back at the same moment. Half, not two thirds: a proxy that cannot reach
// the control plane then has as long again to keep trying before its
// certificate expires, and a leaf clamped to a signer about to expire is
// renewed while the operator rotates the signer.
func refreshAfter(issued, notAfter time.Time, jitter float64) time.Time {
	life := notAfter.Sub(issued)
	return issued.Add(life/2 - time.Duration(jitter*float64(life/10)))
}
