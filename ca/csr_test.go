package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net"
	"net/url"
	"testing"
)

func csrDER(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func basicConstraints(t testing.TB, isCA bool) pkix.Extension {
	t.Helper()
	v, err := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{isCA})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidBasicConstraints, Value: v}
}

func TestCheckWorkloadCSR(t *testing.T) {
	const id = "spiffe://cluster.local/ns/shop/sa/web"
	key := newECKey(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	uris := func(ids ...string) []*url.URL {
		var out []*url.URL
		for _, s := range ids {
			out = append(out, mustURL(t, s))
		}
		return out
	}
	good := csrDER(t, key, &x509.CertificateRequest{URIs: uris(id)})
	// The signature is the last bytes of the DER: flipping one breaks it
	// and nothing else.
	badSig := append([]byte(nil), good...)
	badSig[len(badSig)-1] ^= 0x01

	tests := map[string]struct {
		der     []byte
		wantID  string // when no error
		wantErr string // |-separated parts of the error
	}{
		"plain SPIFFE ID": {der: good, wantID: id},
		"subject is ignored": {
			der:    csrDER(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "web"}, URIs: uris(id)}),
			wantID: id,
		},
		"basic constraints CA false is harmless": {
			der:    csrDER(t, key, &x509.CertificateRequest{URIs: uris(id), ExtraExtensions: []pkix.Extension{basicConstraints(t, false)}}),
			wantID: id,
		},
		"empty":   {der: nil, wantErr: "is empty"},
		"garbage": {der: []byte("not a CSR"), wantErr: "does not parse as DER PKCS #10"},
		"extra DNS SAN": {
			der:     csrDER(t, key, &x509.CertificateRequest{URIs: uris(id), DNSNames: []string{"web.shop.svc"}}),
			wantErr: `DNS names ["web.shop.svc"]|remove every other subject alternative name`,
		},
		"IP SAN": {
			der:     csrDER(t, key, &x509.CertificateRequest{URIs: uris(id), IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}),
			wantErr: `IP addresses ["10.0.0.1"]`,
		},
		"e-mail SAN": {
			der:     csrDER(t, key, &x509.CertificateRequest{URIs: uris(id), EmailAddresses: []string{"a@example.com"}}),
			wantErr: `e-mail addresses ["a@example.com"]`,
		},
		"two URIs": {
			der:     csrDER(t, key, &x509.CertificateRequest{URIs: uris(id, "spiffe://cluster.local/ns/kube-system/sa/admin")}),
			wantErr: "has 2 URI SANs|exactly one",
		},
		"no URI": {
			der:     csrDER(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}}),
			wantErr: "has 0 URI SANs",
		},
		"RSA key": {
			der:     csrDER(t, rsaKey(), &x509.CertificateRequest{URIs: uris(id)}),
			wantErr: "2048-bit RSA key|ECDSA P-256 keys only",
		},
		"P-384 key": {
			der:     csrDER(t, p384, &x509.CertificateRequest{URIs: uris(id)}),
			wantErr: "ECDSA P-384 key|P-256 keys only",
		},
		"Ed25519 key": {
			der:     csrDER(t, edKey, &x509.CertificateRequest{URIs: uris(id)}),
			wantErr: "Ed25519 key",
		},
		"wrong trust domain": {
			der:     csrDER(t, key, &x509.CertificateRequest{URIs: uris("spiffe://other.example/ns/shop/sa/web")}),
			wantErr: `in trust domain "other.example", but this mesh's trust domain is "cluster.local"`,
		},
		"not a ServiceAccount ID": {
			der:     csrDER(t, key, &x509.CertificateRequest{URIs: uris("spiffe://cluster.local/shop/web")}),
			wantErr: "URI SAN|does not name a ServiceAccount",
		},
		"not a SPIFFE URI": {
			der:     csrDER(t, key, &x509.CertificateRequest{URIs: uris("https://cluster.local/ns/shop/sa/web")}),
			wantErr: "does not start with spiffe://",
		},
		"percent-encoded path": {
			der:     csrDER(t, key, &x509.CertificateRequest{URIs: uris("spiffe://cluster.local/ns/shop%2Fsa/sa/web")}),
			wantErr: "contains '%'",
		},
		"asks to be a CA": {
			der:     csrDER(t, key, &x509.CertificateRequest{URIs: uris(id), ExtraExtensions: []pkix.Extension{basicConstraints(t, true)}}),
			wantErr: "asks to be a CA",
		},
		"other extension": {
			der: csrDER(t, key, &x509.CertificateRequest{URIs: uris(id), ExtraExtensions: []pkix.Extension{
				{Id: asn1.ObjectIdentifier{2, 5, 29, 30}, Value: []byte{0x30, 0x00}}, // name constraints
			}}),
			wantErr: "asks for extension 2.5.29.30",
		},
		"bad signature": {der: badSig, wantErr: "signature does not verify|sign it with the key it carries"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			csr, got, err := CheckWorkloadCSR(tc.der, td)
			checkErr(t, err, tc.wantErr)
			if err != nil {
				if csr != nil || got != "" {
					t.Errorf("returned %v, %q with an error", csr, got)
				}
				return
			}
			if got != tc.wantID {
				t.Errorf("ID %q, want %q", got, tc.wantID)
			}
			if !key.PublicKey.Equal(csr.PublicKey) {
				t.Error("the returned request does not carry the key")
			}
		})
	}
}

func TestParseSPIFFEID(t *testing.T) {
	tests := map[string]struct {
		id         string
		td, ns, sa string
		wantErr    string
	}{
		"workload":           {id: "spiffe://cluster.local/ns/shop/sa/web", td: "cluster.local", ns: "shop", sa: "web"},
		"other trust domain": {id: "spiffe://example.org/ns/a/sa/b", td: "example.org", ns: "a", sa: "b"},
		"trust domain only":  {id: "spiffe://cluster.local", wantErr: "has no path"},
		"short path":         {id: "spiffe://cluster.local/ns/shop", wantErr: "does not name a ServiceAccount"},
		"long path":          {id: "spiffe://cluster.local/ns/shop/sa/web/x", wantErr: "does not name a ServiceAccount"},
		"swapped keywords":   {id: "spiffe://cluster.local/sa/web/ns/shop", wantErr: "does not name a ServiceAccount"},
		"trailing slash":     {id: "spiffe://cluster.local/ns/shop/sa/web/", wantErr: "name is empty"},
		"port":               {id: "spiffe://cluster.local:8443/ns/shop/sa/web", wantErr: "contains ':'"},
		"user info":          {id: "spiffe://me@cluster.local/ns/shop/sa/web", wantErr: "contains '@'"},
		"query":              {id: "spiffe://cluster.local/ns/shop/sa/web?x", wantErr: "contains '?'"},
		"uppercase scheme":   {id: "SPIFFE://cluster.local/ns/shop/sa/web", wantErr: "does not start with spiffe://"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			gotTD, ns, sa, err := ParseSPIFFEID(tc.id)
			checkErr(t, err, tc.wantErr)
			if gotTD != tc.td || ns != tc.ns || sa != tc.sa {
				t.Errorf("got %q %q %q, want %q %q %q", gotTD, ns, sa, tc.td, tc.ns, tc.sa)
			}
			if err == nil {
				if back, err := SPIFFEID(gotTD, ns, sa); err != nil || back != tc.id {
					t.Errorf("SPIFFEID builds %q (%v) back, want %q", back, err, tc.id)
				}
			}
		})
	}
}
