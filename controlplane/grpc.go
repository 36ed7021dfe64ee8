package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/trellis-mesh/trellis/ca"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

const (
	// servingCertTTL is the life of the control plane's own certificate.
	// It is signed locally, so renewing costs nothing but a key and a
	// signature; short, so a replica that lost its signer stops being
	// trusted soon.
	servingCertTTL = time.Hour

	// handshakeTimeout bounds the TLS handshake and the HTTP/2 preface of a
	// new connection, so clients that connect and say nothing (or garbage)
	// do not hold a goroutine and a socket for long.
	handshakeTimeout = 10 * time.Second

	// KeepaliveMinTime is the shortest interval at which a proxy may ping the
	// control plane; a client that pings more often is disconnected
	// (GOAWAY too_many_pings), so proxies must use at least this.
	KeepaliveMinTime = 10 * time.Second
)

// keepaliveParams suit thousands of proxies, each holding a few long-lived
// Discovery streams.
var keepaliveParams = keepalive.ServerParameters{
	// Connections without a stream (a proxy that only renews its
	// certificate twice a day) are closed; the proxy reconnects when it
	// needs to.
	MaxConnectionIdle: 15 * time.Minute,
	// Streams are moved between replicas, after a scale-up or a rollout,
	// by ending connections after about half an hour (gRPC adds ±10%
	// jitter). After the GOAWAY, new calls go to a new connection; open
	// streams get the grace period, then are cut and the proxy watches
	// again, receiving the whole state.
	MaxConnectionAge:      30 * time.Minute,
	MaxConnectionAgeGrace: time.Minute,
	// A proxy whose pod vanished without closing its connection (node
	// lost) is detected within Time+Timeout and its streams released.
	Time:    30 * time.Second,
	Timeout: 10 * time.Second,
}

// servingCert is the control plane's TLS certificate and what it was
// signed with.
type servingCert struct {
	cert    *tls.Certificate
	signer  *ca.KeyPair
	renewAt time.Time
}

// servingNames are the DNS names proxies reach the control plane by.
func (s *Server) servingNames() []string {
	ns := s.cfg.Namespace
	return []string{
		ServiceName,
		ServiceName + "." + ns,
		ServiceName + "." + ns + ".svc",
		ServiceName + "." + ns + ".svc.cluster.local",
	}
}

// fresh reports whether sc may still be served as it is, given st.
func (s *Server) fresh(sc *servingCert, st *signerState) bool {
	return sc != nil && st != nil && sc.signer == st.signer && s.now().Before(sc.renewAt)
}

// getCertificate is the serving certificate for a handshake, renewed when
// it reached its renewal time or the signer changed.
func (s *Server) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if sc := s.serving.Load(); s.fresh(sc, s.state.Load()) {
		return sc.cert, nil
	}
	return s.renewServing()
}

// renewServing signs a new serving certificate with the current signer,
// unless another caller just did. When signing fails, a previous
// certificate is served for as long as it is valid.
func (s *Server) renewServing() (*tls.Certificate, error) {
	s.servingMu.Lock()
	defer s.servingMu.Unlock()
	st, old := s.state.Load(), s.serving.Load()
	if s.fresh(old, st) {
		return old.cert, nil
	}
	now := s.now()
	fallback := func(err error) (*tls.Certificate, error) {
		if old != nil && now.Before(old.cert.Leaf.NotAfter) {
			s.logger.Error("renewing the serving certificate; serving the previous one", "notAfter", old.cert.Leaf.NotAfter, "error", err)
			return old.cert, nil
		}
		return nil, err
	}
	if st == nil {
		return fallback(errors.New("no signing intermediate loaded yet"))
	}
	if !now.Before(st.signer.Cert.NotAfter) {
		return fallback(fmt.Errorf("the signing intermediate expired at %s", st.signer.Cert.NotAfter.UTC().Format(time.RFC3339)))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fallback(fmt.Errorf("generating the serving key: %w", err))
	}
	leaf, err := ca.SignServing(st.signer, key.Public(), s.servingNames(), servingCertTTL, now)
	if err != nil {
		return fallback(err)
	}
	cert := &tls.Certificate{Certificate: append([][]byte{leaf.Raw}, st.chainDER...), PrivateKey: key, Leaf: leaf}
	s.serving.Store(&servingCert{cert: cert, signer: st.signer, renewAt: ca.RenewalTime(leaf)})
	s.logger.Debug("signed the serving certificate", "notAfter", leaf.NotAfter)
	return cert, nil
}

// handshakeConfig is the TLS configuration of a handshake while roots are
// the mesh's roots. A client certificate is optional (a proxy calls Certify
// before it has one), but one that is sent must verify up to the roots and
// name a workload of the mesh's trust domain, or the handshake fails: what
// auth.FromContext then reads is always such a workload.
func (s *Server) handshakeConfig(roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		GetCertificate:   s.getCertificate,
		ClientAuth:       tls.VerifyClientCertIfGiven,
		ClientCAs:        roots,
		VerifyConnection: s.verifyClient,
	}
}

func (s *Server) verifyClient(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 {
		return nil
	}
	leaf := cs.VerifiedChains[0][0]
	if len(leaf.URIs) != 1 {
		return fmt.Errorf("client certificate has %d URI SANs: a mesh workload certificate has exactly one SPIFFE ID", len(leaf.URIs))
	}
	td, _, _, err := ca.ParseSPIFFEID(leaf.URIs[0].String())
	if err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}
	if td != s.cfg.TrustDomain {
		return fmt.Errorf("client certificate %s is for trust domain %q, not this mesh's %q", leaf.URIs[0], td, s.cfg.TrustDomain)
	}
	return nil
}

// TLSConfig is the server side TLS configuration of the gRPC API. Each
// handshake uses the signer and roots current at that moment, so a rotation
// needs no restart.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			st := s.state.Load()
			if st == nil {
				return nil, errors.New("the control plane has no signing intermediate yet")
			}
			return st.tls, nil
		},
	}
}

// GRPCServer returns the proxies' gRPC server, TLS with the control plane's
// own certificate and keepalive for long-lived streams, with the Identity
// service registered. Register the other services on it, then ServeGRPC.
// opts are appended to (and so override) the defaults.
func (s *Server) GRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	gs := grpc.NewServer(append([]grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(s.TLSConfig())),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.KeepaliveParams(keepaliveParams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: KeepaliveMinTime, PermitWithoutStream: true}),
		// Requests from proxies are small; this bounds what a client can
		// make the server buffer.
		grpc.MaxRecvMsgSize(256 << 10),
	}, opts...)...)
	s.RegisterIdentity(gs)
	return gs
}

// RegisterIdentity registers the Identity service on reg. GRPCServer does
// it already; this is for a server built otherwise.
func (s *Server) RegisterIdentity(reg grpc.ServiceRegistrar) {
	controlplanev1.RegisterIdentityServiceServer(reg, &identityServer{s: s})
}

// ServeGRPC serves gs on lis until ctx ends, and reports the control plane
// ready meanwhile (with a signer). When ctx ends it stops gracefully:
// GracefulStop refuses new calls and waits for running ones; after grace,
// Stop cancels what is left (long-lived streams, whose handlers must return
// when their context ends). It returns nil after a stop, or why Serve
// failed.
func (s *Server) ServeGRPC(ctx context.Context, gs *grpc.Server, lis net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	s.grpcServing.Store(true)
	go func() { errc <- gs.Serve(lis) }()
	select {
	case err := <-errc:
		s.grpcServing.Store(false)
		return fmt.Errorf("serving gRPC on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	s.grpcServing.Store(false)
	stopped := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		s.logger.Info("gRPC calls still running after the grace period; closing them", "grace", grace)
		gs.Stop()
		<-stopped
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serving gRPC on %s: %w", lis.Addr(), err)
	}
	return nil
}
