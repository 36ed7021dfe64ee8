package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"weak"

	"github.com/trellis-mesh/trellis/ca"
)

const (
	// maxClientConfigs bounds ClientTLS's cache. A proxy talks to a few
	// hundred identities at most; past the bound the cache is emptied and
	// refilled, which costs new configs, not correctness.
	maxClientConfigs = 4096
	// sessionCacheSize is how many TLS sessions to peers are kept for
	// resumption, over all identities.
	sessionCacheSize = 1024
)

// errNoCertificate is what a handshake that needs the workload certificate
// fails with before Run got the first one.
var errNoCertificate = errors.New("no workload certificate yet: the proxy has not got one from the control plane (its log says why)")

func (m *Manager) certificate() (*tls.Certificate, error) {
	if c := m.cert.Load(); c != nil {
		return c.tls, nil
	}
	return nil, errNoCertificate
}

// ServerTLS is the configuration of the proxy's mutual TLS listener: it
// serves the current certificate and accepts a client only with a
// certificate that verifies against the current roots for client auth and
// names exactly one SPIFFE ID of this trust domain. PeerID then says who
// the client is.
//
// The roots are given to crypto/tls per handshake, through
// GetConfigForClient, rather than checked in a callback, so that Go
// verifies the chain itself and fills ConnectionState.VerifiedChains, and
// so that resumed sessions are checked against the roots of the moment.
// That inner configuration carries nextProtos: a caller that adds
// protocols to the returned Config's NextProtos (as gRPC's
// credentials.NewTLS adds "h2") must pass them here instead.
func (m *Manager) ServerTLS(nextProtos []string) *tls.Config {
	protos := slices.Clone(nextProtos)
	type derived struct {
		trust *trustState
		cfg   *tls.Config
	}
	var last atomic.Pointer[derived]
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		NextProtos:     protos,
		GetCertificate: m.getCertificate,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			ts := m.trust.Load()
			if d := last.Load(); d != nil && d.trust == ts {
				return d.cfg, nil
			}
			cfg := &tls.Config{
				MinVersion:       tls.VersionTLS13,
				NextProtos:       protos,
				GetCertificate:   m.getCertificate,
				ClientAuth:       tls.RequireAndVerifyClientCert,
				ClientCAs:        ts.pool,
				VerifyConnection: m.verifyClient,
				Time:             m.now,
			}
			last.Store(&derived{trust: ts, cfg: cfg})
			return cfg, nil
		},
		Time: m.now,
	}
}

func (m *Manager) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return m.certificate()
}

// verifyClient runs after crypto/tls verified the client's chain.
func (m *Manager) verifyClient(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return errors.New("client certificate was not verified")
	}
	id, td, err := spiffeIDOf(cs.VerifiedChains[0][0])
	if err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}
	if td != m.trustDomain {
		return fmt.Errorf("client certificate %s is for trust domain %q, not this mesh's %q", id, td, m.trustDomain)
	}
	return nil
}

// ClientTLS is the configuration of a mutual TLS connection to the proxy
// of serverID: it presents the current certificate and accepts the server
// only when its chain verifies against the current roots for server auth
// and its one URI SAN is serverID.
//
// InsecureSkipVerify is set because crypto/tls would check a host name,
// and a workload certificate has none: the SPIFFE ID is the name. The
// whole check is in VerifyConnection instead, which crypto/tls runs on
// every handshake, resumed ones included.
//
// Configs are cached per (serverID, nextProtos) and share one session
// cache, so connections to a peer resume their TLS sessions. The returned
// Config is shared: Clone it before changing it.
func (m *Manager) ClientTLS(serverID string, nextProtos []string) *tls.Config {
	key := serverID + "\x00" + strings.Join(nextProtos, "\x00")
	m.clientMu.Lock()
	defer m.clientMu.Unlock()
	if cfg, ok := m.clients[key]; ok {
		return cfg
	}
	if len(m.clients) >= maxClientConfigs {
		clear(m.clients)
	}
	_, _, _, idErr := ca.ParseSPIFFEID(serverID)
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         slices.Clone(nextProtos),
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return m.certificate()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if idErr != nil {
				return fmt.Errorf("want server identity %q, which is not a workload SPIFFE ID: %w", serverID, idErr)
			}
			return m.verifyServer(cs, serverID)
		},
		// Sessions are keyed by address; the prefix keeps a session made
		// with one expected identity from being resumed with another.
		ClientSessionCache: prefixedSessionCache{prefix: key + "\x00", cache: m.sessions},
		Time:               m.now,
	}
	m.clients[key] = cfg
	return cfg
}

func (m *Manager) verifyServer(cs tls.ConnectionState, want string) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("server presented no certificate, want %s", want)
	}
	leaf := cs.PeerCertificates[0]
	if err := m.verifyChain(cs.PeerCertificates, x509.ExtKeyUsageServerAuth, ""); err != nil {
		return fmt.Errorf("server certificate %q: %w", uriStrings(leaf), err)
	}
	if len(leaf.URIs) != 1 {
		return fmt.Errorf("server presented %d URI SANs %q, want exactly one, %s", len(leaf.URIs), uriStrings(leaf), want)
	}
	if got := leaf.URIs[0].String(); got != want {
		return fmt.Errorf("server presented identity %s, want %s", got, want)
	}
	recordVerifiedServer(&cs.PeerCertificates[0], want)
	return nil
}

// ControlPlaneTLS is the configuration of the connection to the control
// plane, usable with grpc's credentials.NewTLS: the server must present a
// certificate for serverName (e.g. trellis-controlplane.trellis-system.svc)
// that verifies against the current roots. The verification is done in
// VerifyConnection, as in ClientTLS, because RootCAs would freeze the roots
// of the moment the Config was made.
//
// The workload certificate is presented when one is held, valid, and
// issued under a root the control plane asks for; otherwise none is, as
// the control plane accepts Certify without one. So an expired
// certificate, or one from a root the control plane has dropped, cannot
// lock the proxy out of getting a new one.
func (m *Manager) ControlPlaneTLS(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         serverName,
		InsecureSkipVerify: true,
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c := m.cert.Load()
			if c == nil || !m.now().Before(c.leaf.NotAfter) || cri.SupportsCertificate(c.tls) != nil {
				return &tls.Certificate{}, nil
			}
			return c.tls, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if serverName == "" {
				// An empty name would make x509 skip the host name check.
				return errors.New("ControlPlaneTLS was given no server name: pass the control plane's DNS name, e.g. trellis-controlplane.trellis-system.svc")
			}
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("control plane %s presented no certificate", serverName)
			}
			if err := m.verifyChain(cs.PeerCertificates, x509.ExtKeyUsageServerAuth, serverName); err != nil {
				return fmt.Errorf("control plane certificate for %s: %w", serverName, err)
			}
			return nil
		},
		Time: m.now,
	}
}

// verifyChain verifies certs (leaf first, then intermediates) against the
// current roots for usage and, unless it is "", dnsName.
func (m *Manager) verifyChain(certs []*x509.Certificate, usage x509.ExtKeyUsage, dnsName string) error {
	ts := m.trust.Load()
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         ts.pool,
		Intermediates: inter,
		DNSName:       dnsName,
		CurrentTime:   m.now(),
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return fmt.Errorf("%w%s", err, m.noRootsHint(ts))
	}
	return nil
}

// PeerID is the SPIFFE ID of the peer of a connection made with ServerTLS
// or ClientTLS, once its handshake is done: the one URI SAN of its
// verified certificate. It is false when the peer was not verified or its
// certificate does not name exactly one workload SPIFFE ID.
//
// On the server side the chain is in VerifiedChains. On the client side
// crypto/tls leaves VerifiedChains empty (ClientTLS verifies by itself), so
// ClientTLS records each verified connection's certificate list, weakly,
// and PeerID finds it there. The record is keyed by the connection's own
// list, not the certificate, which crypto/tls shares between connections:
// a connection made with another Config never matches.
func PeerID(cs tls.ConnectionState) (string, bool) {
	if len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
		id, _, err := spiffeIDOf(cs.VerifiedChains[0][0])
		return id, err == nil
	}
	if len(cs.PeerCertificates) > 0 {
		if id, ok := verifiedServers.Load(weak.Make(&cs.PeerCertificates[0])); ok {
			return id.(string), true
		}
	}
	return "", false
}

// verifiedServers maps the first element of a client connection's
// PeerCertificates, weakly, to the SPIFFE ID ClientTLS verified there. An
// entry goes when the list is collected; a weak pointer never matches a
// later allocation at the same address.
var verifiedServers sync.Map // weak.Pointer[*x509.Certificate] → string

func recordVerifiedServer(first **x509.Certificate, id string) {
	k := weak.Make(first)
	if _, loaded := verifiedServers.Swap(k, id); !loaded {
		runtime.AddCleanup(first, func(k weak.Pointer[*x509.Certificate]) { verifiedServers.Delete(k) }, k)
	}
}

// spiffeIDOf returns the one URI SAN of c when it is a workload SPIFFE ID,
// and its trust domain.
func spiffeIDOf(c *x509.Certificate) (id, trustDomain string, err error) {
	if len(c.URIs) != 1 {
		return "", "", fmt.Errorf("certificate has %d URI SANs %q: a mesh workload certificate has exactly one SPIFFE ID", len(c.URIs), uriStrings(c))
	}
	id = c.URIs[0].String()
	td, _, _, err := ca.ParseSPIFFEID(id)
	if err != nil {
		return "", "", err
	}
	return id, td, nil
}

func uriStrings(c *x509.Certificate) []string {
	s := make([]string, len(c.URIs))
	for i, u := range c.URIs {
		s[i] = u.String()
	}
	return s
}

// prefixedSessionCache is a view of a shared session cache whose keys are
// prefixed.
type prefixedSessionCache struct {
	prefix string
	cache  tls.ClientSessionCache
}

func (p prefixedSessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	return p.cache.Get(p.prefix + key)
}

func (p prefixedSessionCache) Put(key string, cs *tls.ClientSessionState) {
	p.cache.Put(p.prefix+key, cs)
}
