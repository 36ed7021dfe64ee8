package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
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
	if csr == nil {
		return nil, nil, fmt.Errorf("certificate signing request for %s is missing", spiffeID)
	}
	if k, ok := csr.PublicKey.(*rsa.PublicKey); ok && k.N.BitLen() < minRSABits {
		return nil, nil, fmt.Errorf("certificate signing request for %s has a %d-bit RSA key: use at least %d bits, or ECDSA P-256", spiffeID, k.N.BitLen(), minRSABits)
	}
	if err := checkSigner(issuer, "issuer"); err != nil {
		return nil, nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("certificate signing request for %s has an invalid signature: %w; the workload must sign it with the key it asks a certificate for", spiffeID, err)
	}
	leaf, err := SignWorkloadKey(issuer, csr.PublicKey, spiffeID, ttl, now)
	if err != nil {
		return nil, nil, err
	}
	return leaf, EncodeCertificates(append([]*x509.Certificate{leaf}, IssuerChain(issuer)...)...), nil
}

// SignWorkloadKey is SignWorkload for a caller that has already checked
// the request, with CheckWorkloadCSR, and so proved that the workload holds
// the private key of pub; it does not check the signature again. It
// returns the leaf alone; IssuerChain is what to serve after it.
func SignWorkloadKey(issuer *KeyPair, pub crypto.PublicKey, spiffeID string, ttl time.Duration, now time.Time) (*x509.Certificate, error) {
	id, td, err := parseWorkloadID(spiffeID)
	if err != nil {
		return nil, err
	}
	if err := checkSigner(issuer, "issuer"); err != nil {
		return nil, err
	}
	if tds := spiffeTrustDomains(issuer.Cert); len(tds) > 0 && !slices.Contains(tds, td) {
		return nil, fmt.Errorf("SPIFFE ID %s is in trust domain %q, but issuer CA %q serves %q: use an ID in the mesh's trust domain",
			spiffeID, td, issuer.Cert.Subject.CommonName, tds)
	}
	ttl, err = validityOrDefault("workload certificate TTL", ttl, DefaultWorkloadValidity)
	if err != nil {
		return nil, err
	}
	return signLeaf(issuer, pub, &x509.Certificate{
		// The subject stays empty, as the X509-SVID spec recommends; Go then
		// marks the SAN extension critical, as RFC 5280 requires.
		URIs:        []*url.URL{id},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, spiffeID, ttl, now)
}

// SignServing signs a TLS server certificate for dnsNames with pub: what
// the control plane presents to proxies, which check it against the mesh's
// roots. Validity follows the rules of SignWorkload; a zero ttl is an error,
// because a server certificate has no sensible default life.
func SignServing(issuer *KeyPair, pub crypto.PublicKey, dnsNames []string, ttl time.Duration, now time.Time) (*x509.Certificate, error) {
	if len(dnsNames) == 0 {
		return nil, errors.New("a serving certificate needs at least one DNS name")
	}
	for _, n := range dnsNames {
		if n == "" || strings.ContainsAny(n, " /:*") {
			return nil, fmt.Errorf("DNS name %q is not a host name: use names such as trellis-controlplane.trellis-system.svc", n)
		}
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("serving certificate TTL is %s: it must be positive", ttl)
	}
	if err := checkSigner(issuer, "issuer"); err != nil {
		return nil, err
	}
	return signLeaf(issuer, pub, &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{organization}, CommonName: dnsNames[0]},
		DNSNames:    slices.Clone(dnsNames),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, dnsNames[0], ttl, now)
}

// IssuerChain is what a leaf signed by issuer is served with: the issuer
// and the intermediates of its Chain, without a self-signed root, which
// peers must already hold and would ignore.
func IssuerChain(issuer *KeyPair) []*x509.Certificate {
	chain := []*x509.Certificate{issuer.Cert}
	for _, c := range issuer.Chain {
		if !isSelfSigned(c) {
			chain = append(chain, c)
		}
	}
	return chain
}

// signLeaf completes tmpl (serial, validity, basic constraints), signs it
// for pub with issuer and parses the result. subject names the certificate
// in errors.
func signLeaf(issuer *KeyPair, pub crypto.PublicKey, tmpl *x509.Certificate, subject string, ttl time.Duration, now time.Time) (*x509.Certificate, error) {
	if !now.Before(issuer.Cert.NotAfter) {
		return nil, fmt.Errorf("issuer CA %q expired at %s: rotate the issuer before signing workload certificates",
			issuer.Cert.Subject.CommonName, formatTime(issuer.Cert.NotAfter))
	}
	if pub == nil {
		return nil, fmt.Errorf("no public key to sign a certificate for %s", subject)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = maxTime(now.Add(-ClockSkew), issuer.Cert.NotBefore)
	tmpl.NotAfter = minTime(now.Add(ttl), issuer.Cert.NotAfter)
	if !tmpl.NotBefore.Before(tmpl.NotAfter) {
		return nil, fmt.Errorf("issuer CA %q is not valid until %s: check the clock", issuer.Cert.Subject.CommonName, formatTime(issuer.Cert.NotBefore))
	}
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer.Cert, pub, issuer.Key)
	if err != nil {
		return nil, fmt.Errorf("signing certificate for %s: %w", subject, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the certificate just signed for %s: %w", subject, err)
	}
	return leaf, nil
}
