package ca

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"net/url"
	"slices"
	"time"
)

// minRSABits is the smallest RSA workload key accepted; smaller keys are
// breakable and rejected by current TLS stacks anyway.
const minRSABits = 2048

// SignWorkload signs a workload certificate for spiffeID with the public key
// of csr, after checking the CSR's signature. Everything else the CSR asks
// for (subject, SANs, extensions) is ignored: the identity is spiffeID and
// nothing else.
//
// The leaf never outlives the issuer: NotAfter is the earlier of now+ttl and
// the issuer's NotAfter, and NotBefore is now-ClockSkew but not before the
// issuer's NotBefore. A zero ttl means DefaultWorkloadValidity. When the
// issuer carries spiffe URI SANs, spiffeID must be in one of their trust
// domains, so an issuer cannot mint identities for another mesh.
//
// It returns the leaf and the chain PEM to serve with it: the leaf, the
// issuer and the intermediates of the issuer's Chain, but no self-signed
// root, which peers must already hold and would ignore.
func SignWorkload(issuer *KeyPair, csr *x509.CertificateRequest, spiffeID string, ttl time.Duration, now time.Time) (*x509.Certificate, []byte, error) {
	if err := checkSigner(issuer, "issuer"); err != nil {
		return nil, nil, err
	}
	ttl, err := validityOrDefault("workload certificate TTL", ttl, DefaultWorkloadValidity)
	if err != nil {
		return nil, nil, err
	}
	if !now.Before(issuer.Cert.NotAfter) {
		return nil, nil, fmt.Errorf("issuer CA %q expired at %s: rotate the issuer before signing workload certificates",
			issuer.Cert.Subject.CommonName, formatTime(issuer.Cert.NotAfter))
	}
	if csr == nil {
		return nil, nil, fmt.Errorf("certificate signing request for %s is missing", spiffeID)
	}
	if k, ok := csr.PublicKey.(*rsa.PublicKey); ok && k.N.BitLen() < minRSABits {
		return nil, nil, fmt.Errorf("certificate signing request for %s has a %d-bit RSA key: use at least %d bits, or ECDSA P-256", spiffeID, k.N.BitLen(), minRSABits)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("certificate signing request for %s has an invalid signature: %w; the workload must sign it with the key it asks a certificate for", spiffeID, err)
	}
	id, td, err := parseWorkloadID(spiffeID)
	if err != nil {
		return nil, nil, err
	}
	if tds := spiffeTrustDomains(issuer.Cert); len(tds) > 0 && !slices.Contains(tds, td) {
		return nil, nil, fmt.Errorf("SPIFFE ID %s is in trust domain %q, but issuer CA %q serves %q: use an ID in the mesh's trust domain",
			spiffeID, td, issuer.Cert.Subject.CommonName, tds)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	notBefore := maxTime(now.Add(-ClockSkew), issuer.Cert.NotBefore)
	notAfter := minTime(now.Add(ttl), issuer.Cert.NotAfter)
	if !notBefore.Before(notAfter) {
		return nil, nil, fmt.Errorf("issuer CA %q is not valid until %s: check the clock", issuer.Cert.Subject.CommonName, formatTime(issuer.Cert.NotBefore))
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The subject stays empty, as the X509-SVID spec recommends; Go then
		// marks the SAN extension critical, as RFC 5280 requires.
		URIs:                  []*url.URL{id},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer.Cert, csr.PublicKey, issuer.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing workload certificate for %s: %w", spiffeID, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing the workload certificate just signed: %w", err)
	}
	chain := []*x509.Certificate{leaf, issuer.Cert}
	for _, c := range issuer.Chain {
		if !isSelfSigned(c) {
			chain = append(chain, c)
		}
	}
	return leaf, EncodeCertificates(chain...), nil
}
