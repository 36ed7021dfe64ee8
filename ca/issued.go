package ca

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"time"
)

// ParseIssued reads the Secret cert-manager writes for a Certificate with
// isCA: true, to be used as the mesh's issuer: tls.crt (the issuer,
// possibly followed by its chain), tls.key and ca.crt (the issuing CA's
// root or roots).
//
// When ca.crt is absent, the last certificate of tls.crt is taken as the
// root if it is self-signed. The issuer must be a CA, verify up to one of the
// roots through the chain in tls.crt, and not be expired at now. An issuer
// whose NotBefore is at most ClockSkew after now is accepted, because
// cert-manager does not backdate and our clock may be behind its.
//
// The returned issuer's Chain is what followed it in tls.crt; roots are all
// of ca.crt (or the self-signed last certificate), deduplicated.
func ParseIssued(data map[string][]byte, now time.Time) (issuer *KeyPair, roots []*x509.Certificate, err error) {
	if len(data[IssuerCertKey]) == 0 {
		return nil, nil, fmt.Errorf("%s is missing or empty: wait for cert-manager to issue the Certificate, or check its status if it does not", IssuerCertKey)
	}
	certs, err := ParseCertificates(data[IssuerCertKey])
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", IssuerCertKey, err)
	}
	if len(data[IssuerKeyKey]) == 0 {
		return nil, nil, fmt.Errorf("%s is missing or empty: the Secret must hold the issuer's private key next to %s", IssuerKeyKey, IssuerCertKey)
	}
	key, err := parsePrivateKey(data[IssuerKeyKey])
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", IssuerKeyKey, err)
	}
	cert := certs[0]
	if !keyMatches(cert, key) {
		return nil, nil, fmt.Errorf("%s does not belong to %s: %w; the Secret was probably edited by hand: delete it so cert-manager issues a fresh pair", IssuerKeyKey, IssuerCertKey, ErrKeyMismatch)
	}
	if !isCA(cert) {
		return nil, nil, fmt.Errorf("%s (%q) is not a CA certificate (IsCA=%t, cert sign usage=%t): set spec.isCA: true on the cert-manager Certificate",
			IssuerCertKey, cert.Subject.CommonName, cert.BasicConstraintsValid && cert.IsCA, cert.KeyUsage&x509.KeyUsageCertSign != 0)
	}
	if !now.Before(cert.NotAfter) {
		return nil, nil, fmt.Errorf("%s (%q) expired at %s: cert-manager has not renewed it; check the Certificate's status and its issuer",
			IssuerCertKey, cert.Subject.CommonName, formatTime(cert.NotAfter))
	}
	if cert.NotBefore.After(now.Add(ClockSkew)) {
		return nil, nil, fmt.Errorf("%s (%q) is not valid until %s: check the clocks of the nodes running cert-manager and the operator",
			IssuerCertKey, cert.Subject.CommonName, formatTime(cert.NotBefore))
	}
	chain := certs[1:]

	if len(data[BundleKey]) > 0 {
		if roots, err = ParseCertificates(data[BundleKey]); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", BundleKey, err)
		}
	} else if last := certs[len(certs)-1]; isSelfSigned(last) {
		roots = []*x509.Certificate{last}
	} else {
		return nil, nil, fmt.Errorf("%s is missing and %s does not end with a self-signed root, so the mesh cannot know which root to trust: "+
			"use a cert-manager issuer that sets %s (the CA and SelfSigned issuers do)", BundleKey, IssuerCertKey, BundleKey)
	}
	roots = dedupCerts(roots)

	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range chain {
		inter.AddCert(c)
	}
	_, err = cert.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		// Verify at the issuer's start when it is within ClockSkew ahead.
		CurrentTime: maxTime(now, cert.NotBefore),
		// The issuer is judged as a CA, not as a TLS endpoint.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		src := BundleKey
		if len(data[BundleKey]) == 0 {
			src = "the root at the end of " + IssuerCertKey
		}
		return nil, nil, fmt.Errorf("%s (%q) does not verify up to %s: %w; the Certificate must be issued by the CA whose root is in %s (re-issue it if its issuer changed)",
			IssuerCertKey, cert.Subject.CommonName, src, err, BundleKey)
	}

	kp, err := newKeyPair(cert, key, chain)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", IssuerKeyKey, err)
	}
	return kp, roots, nil
}

func dedupCerts(certs []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range certs {
		if c == nil {
			continue
		}
		dup := false
		for _, o := range out {
			if bytes.Equal(o.Raw, c.Raw) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, c)
		}
	}
	return out
}
