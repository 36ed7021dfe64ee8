package ca

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Anchor is a root in the trust bundle.
//
// The trust bundle keeps an old root until nothing it signed can still be
// valid. Leaves never outlive their issuer, so once every issuer a root was
// seen signing has expired, nothing it signed is valid: LastIssuerNotAfter
// records the latest NotAfter of those issuers.
type Anchor struct {
	Cert               *x509.Certificate
	LastIssuerNotAfter time.Time
}

// NextBundle computes the trust bundle at now.
//
// prev is the bundle as last stored (may be empty), current the roots of the
// active signing chain and issuer the active issuer certificate (may be nil).
// A root in current that directly signed issuer has its LastIssuerNotAfter
// raised to issuer's NotAfter; any other root in current keeps the value it
// had, or its own NotAfter when it is new, which is the safe guess when we
// never saw what it signed (e.g. through an intermediate).
//
// The result holds current roots first, in their order, then the retained
// old ones in prev's order, so the same input always gives the same bundle.
// An old root is retained while now is before both its LastIssuerNotAfter
// and its own NotAfter. Expired roots, current or not, are dropped: no
// verifier accepts them. Duplicates (same DER) collapse into one, keeping
// the latest LastIssuerNotAfter.
func NextBundle(prev []Anchor, current []*x509.Certificate, issuer *x509.Certificate, now time.Time) []Anchor {
	last := make(map[string]time.Time, len(prev))
	for _, a := range prev {
		if a.Cert == nil {
			continue
		}
		k := string(a.Cert.Raw)
		if t, ok := last[k]; !ok || a.LastIssuerNotAfter.After(t) {
			last[k] = a.LastIssuerNotAfter
		}
	}

	seen := make(map[string]bool, len(prev)+len(current))
	var out []Anchor
	for _, c := range current {
		if c == nil || seen[string(c.Raw)] {
			continue
		}
		seen[string(c.Raw)] = true
		if !now.Before(c.NotAfter) {
			continue
		}
		t, known := last[string(c.Raw)]
		if !known {
			t = c.NotAfter
		}
		if issuer != nil && signedBy(issuer, c) {
			if !known || issuer.NotAfter.After(t) {
				t = issuer.NotAfter
			}
		}
		out = append(out, Anchor{Cert: c, LastIssuerNotAfter: t})
	}
	for _, a := range prev {
		if a.Cert == nil || seen[string(a.Cert.Raw)] {
			continue
		}
		seen[string(a.Cert.Raw)] = true
		t := last[string(a.Cert.Raw)]
		if now.Before(minTime(t, a.Cert.NotAfter)) {
			out = append(out, Anchor{Cert: a.Cert, LastIssuerNotAfter: t})
		}
	}
	return out
}

func signedBy(c, parent *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, parent.RawSubject) && c.CheckSignatureFrom(parent) == nil
}

// anchorState is one entry of the stored state. The certificate itself lives
// in the PEM bundle proxies read; the state refers to it by fingerprint so
// the two cannot disagree about a certificate's content.
type anchorState struct {
	SHA256             string    `json:"sha256"`
	LastIssuerNotAfter time.Time `json:"lastIssuerNotAfter"`
}

// Fingerprint is the lowercase hex SHA-256 of c's DER, as stored in the
// bundle state.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// EncodeBundle serializes anchors for storage in a ConfigMap: the PEM bundle
// proxies read, and a JSON list of {"sha256", "lastIssuerNotAfter"
// (RFC 3339, UTC)} that carries the retention state across restarts.
func EncodeBundle(anchors []Anchor) (bundlePEM []byte, stateJSON []byte, err error) {
	certs := make([]*x509.Certificate, 0, len(anchors))
	state := make([]anchorState, 0, len(anchors))
	for i, a := range anchors {
		if a.Cert == nil {
			return nil, nil, fmt.Errorf("trust bundle anchor %d has no certificate", i)
		}
		certs = append(certs, a.Cert)
		state = append(state, anchorState{SHA256: Fingerprint(a.Cert), LastIssuerNotAfter: a.LastIssuerNotAfter.UTC()})
	}
	stateJSON, err = json.Marshal(state)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding trust bundle state: %w", err)
	}
	return EncodeCertificates(certs...), stateJSON, nil
}

// DecodeBundle reverses EncodeBundle. Empty bundlePEM means no bundle yet.
// A certificate without state (state lost, or a root added by hand) gets
// its own NotAfter as LastIssuerNotAfter: without knowing what it signed,
// keeping it until it expires is the only choice that cannot break TLS.
// State for certificates not in the bundle is ignored.
func DecodeBundle(bundlePEM, stateJSON []byte) ([]Anchor, error) {
	if len(bytes.TrimSpace(bundlePEM)) == 0 {
		return nil, nil
	}
	certs, err := ParseCertificates(bundlePEM)
	if err != nil {
		return nil, fmt.Errorf("trust bundle PEM: %w", err)
	}
	last := make(map[string]time.Time)
	if len(bytes.TrimSpace(stateJSON)) > 0 {
		var state []anchorState
		if err := json.Unmarshal(stateJSON, &state); err != nil {
			return nil, fmt.Errorf("trust bundle state is not a JSON list of {sha256, lastIssuerNotAfter}: %w; "+
				"remove it to fall back to keeping every root until it expires", err)
		}
		for _, s := range state {
			// A zero time would drop the root at once; treat it as
			// missing state instead.
			if s.LastIssuerNotAfter.IsZero() {
				continue
			}
			// EncodeBundle could not write such a time back.
			if y := s.LastIssuerNotAfter.UTC().Year(); y < 0 || y > 9999 {
				return nil, fmt.Errorf("trust bundle state: lastIssuerNotAfter of %s is out of range; remove the state to fall back to keeping every root until it expires", s.SHA256)
			}
			k := strings.ToLower(s.SHA256)
			if t, ok := last[k]; !ok || s.LastIssuerNotAfter.After(t) {
				last[k] = s.LastIssuerNotAfter
			}
		}
	}
	var anchors []Anchor
	for _, c := range dedupCerts(certs) {
		t, ok := last[Fingerprint(c)]
		if !ok {
			t = c.NotAfter
		}
		anchors = append(anchors, Anchor{Cert: c, LastIssuerNotAfter: t})
	}
	return anchors, nil
}
