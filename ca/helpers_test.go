package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// now is the fixed present of every test; certificates are built around it.
var now = time.Date(2026, 11, 23, 10, 30, 0, 0, time.UTC)

const td = "cluster.local"

const day = 24 * time.Hour

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rsaKey is the one RSA key of the tests: generating RSA keys is slow.
var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// caTemplate is a CA certificate template valid over [nb, na).
func caTemplate(cn string, nb, na time.Time) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             nb,
		NotAfter:              na,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

// leafTemplate is a non-CA certificate template valid over [nb, na).
func leafTemplate(cn string, nb, na time.Time) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             nb,
		NotAfter:              na,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
}

// issue signs tmpl for key (a fresh P-256 key when nil) with parent, or
// self-signs it when parent is nil. The result's Chain is parent's Cert and
// Chain, as a cert-manager tls.crt would hold.
func issue(t testing.TB, tmpl *x509.Certificate, parent *KeyPair, key crypto.Signer) *KeyPair {
	t.Helper()
	if key == nil {
		key = newECKey(t)
	}
	if tmpl.SerialNumber == nil {
		s, err := randomSerial()
		if err != nil {
			t.Fatal(err)
		}
		tmpl.SerialNumber = s
	}
	parentCert, parentKey := tmpl, key
	var chain []*x509.Certificate
	if parent != nil {
		parentCert, parentKey = parent.Cert, parent.Key
		chain = append([]*x509.Certificate{parent.Cert}, parent.Chain...)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := newKeyPair(cert, key, chain)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func mustRoot(t testing.TB, validity time.Duration, at time.Time) *KeyPair {
	t.Helper()
	r, err := NewRoot(td, validity, at)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustIssuer(t testing.TB, root *KeyPair, validity time.Duration, at time.Time) *KeyPair {
	t.Helper()
	i, err := NewIssuer(root, td, validity, at)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func mustParseCerts(t testing.TB, b []byte) []*x509.Certificate {
	t.Helper()
	c, err := ParseCertificates(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sec1PEM(t testing.TB, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func pkcs1PEM(k *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

func concat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// checkErr fails t unless err is nil when wantErr is empty, or contains
// every |-separated part of wantErr otherwise.
func checkErr(t testing.TB, err error, wantErr string) {
	t.Helper()
	if wantErr == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("got no error, want one containing %q", wantErr)
	}
	for _, part := range strings.Split(wantErr, "|") {
		if !strings.Contains(err.Error(), part) {
			t.Fatalf("error %q does not contain %q", err, part)
		}
	}
}

func ecKeyOf(t testing.TB, kp *KeyPair) *ecdsa.PrivateKey {
	t.Helper()
	k, ok := kp.Key.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("key is %T, want ECDSA", kp.Key)
	}
	return k
}
