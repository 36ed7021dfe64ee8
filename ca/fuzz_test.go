package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"maps"
	"net/url"
	"testing"
)

func FuzzParseCertificates(f *testing.F) {
	root := mustRoot(f, 0, now)
	iss := mustIssuer(f, root, 0, now)
	full := iss.FullChainPEM()
	f.Add(full)
	f.Add(full[:len(full)/2])
	f.Add(append([]byte("# comment\n"), root.CertPEM...))
	f.Add(iss.KeyPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		certs, err := ParseCertificates(in)
		if err != nil {
			return
		}
		if len(certs) == 0 {
			t.Fatal("no error and no certificates")
		}
		again, err := ParseCertificates(EncodeCertificates(certs...))
		if err != nil || len(again) != len(certs) {
			t.Fatalf("re-encoded certificates do not parse back: %v", err)
		}
		for i := range certs {
			if !again[i].Equal(certs[i]) {
				t.Fatalf("certificate %d changed in a round trip", i)
			}
		}
	})
}

func FuzzParseIssued(f *testing.F) {
	root := issue(f, caTemplate("root", now.Add(-day), now.Add(3650*day)), nil, nil)
	inter := issue(f, caTemplate("inter", now.Add(-day), now.Add(365*day)), root, nil)
	iss := issue(f, caTemplate("issuer", now.Add(-day), now.Add(90*day)), inter, nil)
	f.Add(concat(iss.CertPEM, inter.CertPEM), iss.KeyPEM, root.CertPEM)
	f.Add(iss.FullChainPEM(), sec1PEM(f, ecKeyOf(f, iss)), []byte(nil))
	f.Add(iss.CertPEM, root.KeyPEM, []byte("garbage"))
	f.Fuzz(func(t *testing.T, tlsCrt, tlsKey, caCrt []byte) {
		issuer, roots, err := ParseIssued(map[string][]byte{IssuerCertKey: tlsCrt, IssuerKeyKey: tlsKey, BundleKey: caCrt}, now)
		if err != nil {
			return
		}
		if !isCA(issuer.Cert) || !keyMatches(issuer.Cert, issuer.Key) || len(roots) == 0 {
			t.Fatal("accepted an issuer that is not a CA with its key and a root")
		}
	})
}

func FuzzDecodeBundle(f *testing.F) {
	r1, r2 := mustRoot(f, 0, now), mustRoot(f, 0, now)
	pemBytes, state, err := EncodeBundle([]Anchor{{Cert: r1.Cert, LastIssuerNotAfter: now}, {Cert: r2.Cert, LastIssuerNotAfter: now.Add(day)}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pemBytes, state)
	f.Add(pemBytes, []byte(`[{"sha256":"00","lastIssuerNotAfter":"0001-01-01T00:00:00Z"}]`))
	f.Add([]byte{}, []byte("{"))
	f.Fuzz(func(t *testing.T, bundle, state []byte) {
		anchors, err := DecodeBundle(bundle, state)
		if err != nil {
			return
		}
		p, s, err := EncodeBundle(anchors)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeBundle(p, s)
		if err != nil || len(again) != len(anchors) {
			t.Fatalf("encoded bundle does not decode back: %v", err)
		}
		for i := range anchors {
			if !again[i].Cert.Equal(anchors[i].Cert) || !again[i].LastIssuerNotAfter.Equal(anchors[i].LastIssuerNotAfter) {
				t.Fatalf("anchor %d changed in a round trip", i)
			}
		}
	})
}

func FuzzEnsureBuiltin(f *testing.F) {
	base, err := EnsureBuiltin(nil, BuiltinConfig{TrustDomain: td}, now)
	if err != nil {
		f.Fatal(err)
	}
	d := base.Data
	f.Add(d[RootCertKey], d[RootKeyKey], d[IssuerCertKey], d[IssuerKeyKey], d[BundleKey])
	f.Add(d[RootCertKey], d[RootKeyKey], d[RootCertKey], d[RootKeyKey], []byte(nil))
	f.Add([]byte("x"), []byte(nil), d[IssuerCertKey], d[IssuerKeyKey], d[BundleKey])
	cfg := BuiltinConfig{TrustDomain: td}
	f.Fuzz(func(t *testing.T, rootCrt, rootKey, tlsCrt, tlsKey, caCrt []byte) {
		in := map[string][]byte{RootCertKey: rootCrt, RootKeyKey: rootKey, IssuerCertKey: tlsCrt, IssuerKeyKey: tlsKey, BundleKey: caCrt}
		res, err := EnsureBuiltin(in, cfg, now)
		if err != nil {
			t.Fatal(err)
		}
		checkBuiltinData(t, res, td, now)
		if len(res.Actions) == 0 && !maps.EqualFunc(res.Data, in, bytes.Equal) {
			t.Fatal("data changed without an action")
		}
	})
}

// FuzzCheckWorkloadCSR feeds the control plane's CSR check what a proxy,
// or anyone who reaches the port, could send.
func FuzzCheckWorkloadCSR(f *testing.F) {
	key := newECKey(f)
	f.Add(csrDER(f, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL(f, "spiffe://cluster.local/ns/a/sa/b")}}))
	f.Add(csrDER(f, key, &x509.CertificateRequest{DNSNames: []string{"x"}, URIs: []*url.URL{mustURL(f, "spiffe://cluster.local/ns/a/sa/b")}}))
	f.Add(csrDER(f, rsaKey(), &x509.CertificateRequest{}))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, id, err := CheckWorkloadCSR(der, td)
		if err != nil {
			return
		}
		gotTD, _, _, err := ParseSPIFFEID(id)
		if err != nil || gotTD != td {
			t.Fatalf("accepted ID %q (%v) outside trust domain %s", id, err, td)
		}
		if len(csr.URIs) != 1 || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) != 0 {
			t.Fatal("accepted a CSR with other SANs")
		}
		if k, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
			t.Fatalf("accepted a %T key", csr.PublicKey)
		}
		if csr.CheckSignature() != nil {
			t.Fatal("accepted a bad signature")
		}
	})
}
