package identity

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/trellis-mesh/trellis/ca"
	"github.com/trellis-mesh/trellis/sidecar"
)

// trustState is the trust bundle at one moment. It is never changed once
// published: a change publishes a new one, so a handshake sees one
// consistent set of roots.
type trustState struct {
	file []*x509.Certificate // from TrustBundleFile
	resp []*x509.Certificate // from the last accepted CertifyResponse
	pool *x509.CertPool      // both
	n    int                 // distinct roots in pool
}

func newTrustState(file, resp []*x509.Certificate) *trustState {
	ts := &trustState{file: file, resp: resp, pool: x509.NewCertPool()}
	seen := make(map[string]bool, len(file)+len(resp))
	for _, list := range [][]*x509.Certificate{file, resp} {
		for _, c := range list {
			if seen[string(c.Raw)] {
				continue
			}
			seen[string(c.Raw)] = true
			ts.pool.AddCert(c)
			ts.n++
		}
	}
	return ts
}

func (ts *trustState) withResponse(resp []*x509.Certificate) *trustState {
	return newTrustState(ts.file, resp)
}

// Roots is the current trust bundle: the roots of TrustBundleFile and of
// the last certificate response. The pool is shared: do not add to it.
func (m *Manager) Roots() *x509.CertPool { return m.trust.Load().pool }

// setResponseRoots replaces the roots that came with the previous
// certificate. They come over a connection verified against the roots
// held, from the party that signs the mesh's certificates, and may hold a
// new root before the kubelet has updated the file.
func (m *Manager) setResponseRoots(roots []*x509.Certificate) {
	m.trustMu.Lock()
	defer m.trustMu.Unlock()
	m.publishTrust(m.trust.Load().withResponse(roots))
}

// publishTrust makes ts current; trustMu must be held.
func (m *Manager) publishTrust(ts *trustState) {
	m.trust.Store(ts)
	m.metrics.roots.Set(float64(ts.n))
}

// pollTrustBundle reads TrustBundleFile every poll until ctx ends.
func (m *Manager) pollTrustBundle(ctx context.Context) {
	t := time.NewTicker(m.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.reloadTrustBundle()
		}
	}
}

// reloadTrustBundle reads TrustBundleFile and, when its content changed
// and parses, makes its roots current. A file that cannot be read or does
// not parse leaves the roots held as they are: dropping them would break
// every connection, while a stale root only delays a rotation. A problem
// is logged when it starts, not at every poll.
func (m *Manager) reloadTrustBundle() {
	data, err := os.ReadFile(m.bundleFile)
	m.trustMu.Lock()
	defer m.trustMu.Unlock()
	if err != nil {
		why := fmt.Sprintf("reading the trust bundle: %v; the pod needs the trellis-ca-bundle ConfigMap mounted at %s", err, sidecar.TrustBundleDir)
		if why != m.readErr {
			m.readErr = why
			m.log.Error("keeping the roots held", "file", m.bundleFile, "rootsHeld", m.trust.Load().n, "error", why)
		}
		return
	}
	m.readErr = ""
	sum := sha256.Sum256(data)
	if m.bundleRead && sum == m.bundleSum {
		return
	}
	m.bundleRead, m.bundleSum = true, sum
	roots, err := ca.ParseCertificates(data)
	if err != nil {
		m.parseErr = fmt.Sprintf("the trust bundle is malformed: %v; the operator writes it from the Mesh's CA: check the Mesh's CAReady condition", err)
		m.log.Error("keeping the roots held", "file", m.bundleFile, "rootsHeld", m.trust.Load().n, "error", m.parseErr)
		return
	}
	m.parseErr = ""
	ts := newTrustState(roots, m.trust.Load().resp)
	m.publishTrust(ts)
	m.log.Info("loaded the trust bundle", "file", m.bundleFile, "roots", len(roots), "rootsHeld", ts.n)
}

// noRootsHint says why the trust bundle is empty, for handshake errors;
// "" when it is not.
func (m *Manager) noRootsHint(ts *trustState) string {
	if ts.n > 0 {
		return ""
	}
	m.trustMu.Lock()
	why := cmp.Or(m.readErr, m.parseErr)
	m.trustMu.Unlock()
	if why == "" {
		why = "not read yet"
	}
	return fmt.Sprintf(" (no roots held: %s: %s)", m.bundleFile, why)
}
