package ca

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
)

// Extensions a workload CSR may carry. SignWorkload never copies them (it
// sets its own key usages), so they are harmless; anything else a CSR asks
// for would be silently dropped, and a workload that asks for it expects
// something it will not get.
var (
	oidSubjectKeyID     = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
)

// CheckWorkloadCSR parses a DER PKCS #10 request from a workload and checks
// it against the mesh's policy, cheapest checks first and the signature
// last: an ECDSA P-256 key; exactly one URI SAN, a ServiceAccount SPIFFE ID
// in trustDomain; no DNS, IP or e-mail SAN; no extension beyond subject
// key ID, key usage, extended key usage, basic constraints with CA false,
// and the SANs; and a signature made with the request's own key, which
// proves the workload holds it. The subject is ignored: workload
// certificates have none.
//
// It returns the request and the SPIFFE ID it asks for. Whether the
// workload may have that ID is the caller's decision.
func CheckWorkloadCSR(der []byte, trustDomain string) (*x509.CertificateRequest, string, error) {
	if len(der) == 0 {
		return nil, "", errors.New("the certificate signing request is empty: send a PKCS #10 request, DER-encoded")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, "", fmt.Errorf("the certificate signing request does not parse as DER PKCS #10: %w", err)
	}
	if err := checkWorkloadKey(csr); err != nil {
		return nil, "", err
	}
	var extra []string
	if len(csr.DNSNames) > 0 {
		extra = append(extra, fmt.Sprintf("DNS names %q", csr.DNSNames))
	}
	if len(csr.IPAddresses) > 0 {
		extra = append(extra, fmt.Sprintf("IP addresses %q", csr.IPAddresses))
	}
	if len(csr.EmailAddresses) > 0 {
		extra = append(extra, fmt.Sprintf("e-mail addresses %q", csr.EmailAddresses))
	}
	if len(extra) > 0 {
		return nil, "", fmt.Errorf("the certificate signing request asks for %s: a workload certificate holds only its SPIFFE ID; remove every other subject alternative name",
			strings.Join(extra, ", "))
	}
	if len(csr.URIs) != 1 {
		uris := make([]string, len(csr.URIs))
		for i, u := range csr.URIs {
			uris[i] = u.String()
		}
		return nil, "", fmt.Errorf("the certificate signing request has %d URI SANs %q: it must have exactly one, spiffe://%s/ns/<namespace>/sa/<service account>",
			len(csr.URIs), uris, trustDomain)
	}
	id := csr.URIs[0].String()
	td, _, _, err := ParseSPIFFEID(id)
	if err != nil {
		return nil, "", fmt.Errorf("the certificate signing request's URI SAN: %w", err)
	}
	if td != trustDomain {
		return nil, "", fmt.Errorf("the certificate signing request asks for %s, in trust domain %q, but this mesh's trust domain is %q: ask for spiffe://%s/ns/<namespace>/sa/<service account>",
			id, td, trustDomain, trustDomain)
	}
	for _, ext := range csr.Extensions {
		if err := checkRequestedExtension(ext.Id, ext.Value); err != nil {
			return nil, "", err
		}
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, "", fmt.Errorf("the certificate signing request's signature does not verify: %w; sign it with the key it carries", err)
	}
	return csr, id, nil
}

func checkWorkloadKey(csr *x509.CertificateRequest) error {
	const fix = "generate an ECDSA P-256 key (elliptic.P256)"
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("the certificate signing request has an ECDSA %s key: the mesh signs P-256 keys only; %s", k.Curve.Params().Name, fix)
		}
		return nil
	case *rsa.PublicKey:
		return fmt.Errorf("the certificate signing request has a %d-bit RSA key: the mesh signs ECDSA P-256 keys only; %s", k.N.BitLen(), fix)
	case ed25519.PublicKey:
		return fmt.Errorf("the certificate signing request has an Ed25519 key: the mesh signs ECDSA P-256 keys only; %s", fix)
	default:
		return fmt.Errorf("the certificate signing request has a %T key: the mesh signs ECDSA P-256 keys only; %s", k, fix)
	}
}

func checkRequestedExtension(id asn1.ObjectIdentifier, value []byte) error {
	switch {
	case id.Equal(oidSubjectAltName), id.Equal(oidSubjectKeyID), id.Equal(oidKeyUsage), id.Equal(oidExtKeyUsage):
		return nil
	case id.Equal(oidBasicConstraints):
		var bc struct {
			IsCA       bool `asn1:"optional"`
			MaxPathLen int  `asn1:"optional,default:-1"`
		}
		if rest, err := asn1.Unmarshal(value, &bc); err != nil || len(rest) > 0 {
			return errors.New("the certificate signing request's basic constraints extension does not parse: remove it")
		}
		if bc.IsCA {
			return errors.New("the certificate signing request asks to be a CA (basic constraints CA:TRUE): workloads get leaf certificates only; remove the extension")
		}
		return nil
	}
	return fmt.Errorf("the certificate signing request asks for extension %s, which a workload certificate does not carry: "+
		"request only the SPIFFE ID as a URI SAN", id)
}
