package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"
)

func TestNewRoot(t *testing.T) {
	tests := map[string]struct {
		trustDomain  string
		validity     time.Duration
		wantNotAfter time.Time // ignored when wantErr is set
		wantErr      string
	}{
		"explicit validity": {
			trustDomain: td, validity: 48 * time.Hour, wantNotAfter: now.Add(48 * time.Hour),
		},
		"zero validity means the default": {
			trustDomain: td, wantNotAfter: now.Add(DefaultRootValidity),
		},
		"negative validity": {
			trustDomain: td, validity: -time.Hour, wantErr: "root validity is -1h0m0s|positive",
		},
		"invalid trust domain": {
			trustDomain: "Cluster.Local", wantErr: `trust domain "Cluster.Local" contains 'C'`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			root, err := NewRoot(tc.trustDomain, tc.validity, now)
			checkErr(t, err, tc.wantErr)
			if err != nil {
				return
			}
			c := root.Cert
			pub, ok := c.PublicKey.(*ecdsa.PublicKey)
			if !ok || pub.Curve != elliptic.P256() {
				t.Errorf("public key is %T, want ECDSA P-256", c.PublicKey)
			}
			if !c.BasicConstraintsValid || !c.IsCA || c.MaxPathLen != 1 {
				t.Errorf("basic constraints valid=%t CA=%t maxPathLen=%d, want true true 1", c.BasicConstraintsValid, c.IsCA, c.MaxPathLen)
			}
			if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature; c.KeyUsage != want {
				t.Errorf("key usage %v, want %v", c.KeyUsage, want)
			}
			if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://"+td {
				t.Errorf("URIs %v, want [spiffe://%s]", c.URIs, td)
			}
			if c.Subject.CommonName != "Trellis root CA "+td || len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != "trellis" {
				t.Errorf("subject %v", c.Subject)
			}
			if !c.NotBefore.Equal(now.Add(-ClockSkew)) || !c.NotAfter.Equal(tc.wantNotAfter) {
				t.Errorf("validity [%v, %v], want [%v, %v]", c.NotBefore, c.NotAfter, now.Add(-ClockSkew), tc.wantNotAfter)
			}
			if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %v is not a positive 128-bit number", c.SerialNumber)
			}
			if len(c.SubjectKeyId) != 20 {
				t.Errorf("subject key id %x, want 20 bytes", c.SubjectKeyId)
			}
			if err := c.CheckSignatureFrom(c); err != nil {
				t.Errorf("root is not self-signed: %v", err)
			}
			if !keyMatches(c, root.Key) {
				t.Error("key does not match the certificate")
			}
			if got := mustParseCerts(t, root.CertPEM); len(got) != 1 || !got[0].Equal(c) {
				t.Error("CertPEM does not hold exactly the certificate")
			}
			if b, _ := pem.Decode(root.KeyPEM); b == nil || b.Type != "PRIVATE KEY" {
				t.Errorf("KeyPEM is not a PKCS#8 PRIVATE KEY block")
			}
		})
	}
}

func TestNewRootSerialsDiffer(t *testing.T) {
	a, b := mustRoot(t, day, now), mustRoot(t, day, now)
	if a.Cert.SerialNumber.Cmp(b.Cert.SerialNumber) == 0 {
		t.Fatal("two roots got the same serial number")
	}
}

func TestNewIssuer(t *testing.T) {
	root := mustRoot(t, 10*day, now)
	rootKeyMismatch := *root
	rootKeyMismatch.Key = newECKey(t)
	notCA := issue(t, leafTemplate("leaf", now.Add(-time.Hour), now.Add(10*day)), root, nil)

	tests := map[string]struct {
		root         *KeyPair
		validity     time.Duration
		at           time.Time
		wantNotAfter time.Time // ignored when wantErr is set
		wantErr      string
	}{
		"within the root's life": {
			root: root, validity: 2 * day, at: now, wantNotAfter: now.Add(2 * day),
		},
		"clamped to the root's NotAfter": {
			root: root, validity: 30 * day, at: now, wantNotAfter: root.Cert.NotAfter,
		},
		"zero validity means the default, clamped": {
			root: root, at: now, wantNotAfter: root.Cert.NotAfter,
		},
		"root with just over an hour left": {
			root: root, validity: day, at: root.Cert.NotAfter.Add(-time.Hour - time.Second), wantNotAfter: root.Cert.NotAfter,
		},
		"root with less than an hour left": {
			root: root, validity: day, at: root.Cert.NotAfter.Add(-59 * time.Minute), wantErr: "only 59m0s from now|rotate the root first",
		},
		"expired root": {
			root: root, validity: day, at: root.Cert.NotAfter, wantErr: "expired at|rotate the root",
		},
		"root key does not match": {
			root: &rootKeyMismatch, validity: day, at: now, wantErr: "root: private key does not match",
		},
		"signer is not a CA": {
			root: notCA, validity: day, at: now, wantErr: `root certificate "leaf" is not a CA`,
		},
		"nil root": {
			root: nil, validity: day, at: now, wantErr: "root key pair is missing",
		},
		"negative validity": {
			root: root, validity: -1, at: now, wantErr: "issuer validity",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			iss, err := NewIssuer(tc.root, td, tc.validity, tc.at)
			checkErr(t, err, tc.wantErr)
			if err != nil {
				return
			}
			c := iss.Cert
			pub, ok := c.PublicKey.(*ecdsa.PublicKey)
			if !ok || pub.Curve != elliptic.P256() {
				t.Errorf("public key is %T, want ECDSA P-256", c.PublicKey)
			}
			if !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero {
				t.Errorf("CA=%t maxPathLen=%d zero=%t, want true 0 true", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
			}
			if c.KeyUsage&x509.KeyUsageCertSign == 0 {
				t.Error("issuer lacks cert sign usage")
			}
			if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://"+td {
				t.Errorf("URIs %v, want [spiffe://%s]", c.URIs, td)
			}
			if !c.NotAfter.Equal(tc.wantNotAfter) {
				t.Errorf("NotAfter %v, want %v", c.NotAfter, tc.wantNotAfter)
			}
			if want := maxTime(tc.at.Add(-ClockSkew), root.Cert.NotBefore); !c.NotBefore.Equal(want) {
				t.Errorf("NotBefore %v, want %v", c.NotBefore, want)
			}
			if err := c.CheckSignatureFrom(root.Cert); err != nil {
				t.Errorf("issuer not signed by root: %v", err)
			}
			if !bytes.Equal(c.AuthorityKeyId, root.Cert.SubjectKeyId) || len(c.SubjectKeyId) == 0 {
				t.Errorf("key ids: authority %x (root %x), subject %x", c.AuthorityKeyId, root.Cert.SubjectKeyId, c.SubjectKeyId)
			}
			if len(iss.Chain) != 1 || !iss.Chain[0].Equal(root.Cert) {
				t.Errorf("Chain is %d certificates, want [root]", len(iss.Chain))
			}
			if got := mustParseCerts(t, iss.FullChainPEM()); len(got) != 2 || !got[0].Equal(c) || !got[1].Equal(root.Cert) {
				t.Error("FullChainPEM is not issuer followed by root")
			}
		})
	}
}

func TestParseKeyPair(t *testing.T) {
	root := mustRoot(t, 10*day, now)
	iss := mustIssuer(t, root, day, now)
	ecKey := iss.Key.(*ecdsa.PrivateKey)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edCert := issue(t, caTemplate("ed", now, now.Add(day)), nil, edKey)
	rsaCert := issue(t, caTemplate("rsa", now, now.Add(day)), nil, rsaKey())
	ecParams := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: []byte{1}})

	tests := map[string]struct {
		certPEM, keyPEM []byte
		wantChain       int // number of certificates expected in Chain
		wantErr         string
		wantMismatch    bool // the error must wrap ErrKeyMismatch
	}{
		"PKCS#8 EC key":                {certPEM: iss.CertPEM, keyPEM: iss.KeyPEM},
		"SEC1 EC key":                  {certPEM: iss.CertPEM, keyPEM: sec1PEM(t, ecKey)},
		"SEC1 EC key after parameters": {certPEM: iss.CertPEM, keyPEM: concat(ecParams, sec1PEM(t, ecKey))},
		"PKCS#1 RSA key":               {certPEM: rsaCert.CertPEM, keyPEM: pkcs1PEM(rsaKey())},
		"PKCS#8 Ed25519 key":           {certPEM: edCert.CertPEM, keyPEM: edCert.KeyPEM},
		"chain after the certificate":  {certPEM: iss.FullChainPEM(), keyPEM: iss.KeyPEM, wantChain: 1},
		"key of another certificate": {
			certPEM: iss.CertPEM, keyPEM: root.KeyPEM, wantErr: "does not match", wantMismatch: true,
		},
		"encrypted key": {
			certPEM: iss.CertPEM, keyPEM: encrypted, wantErr: "private key: EC PRIVATE KEY block is encrypted",
		},
		"no key block": {
			certPEM: iss.CertPEM, keyPEM: []byte("not a key"), wantErr: "private key: no private key PEM block",
		},
		"certificate where the key should be": {
			certPEM: iss.CertPEM, keyPEM: iss.CertPEM, wantErr: `private key: PEM block is "CERTIFICATE"`,
		},
		"corrupt key DER": {
			certPEM: iss.CertPEM, keyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), wantErr: "private key: PRIVATE KEY block:",
		},
		"garbage certificate": {
			certPEM: []byte("garbage"), keyPEM: iss.KeyPEM, wantErr: "certificate: no CERTIFICATE PEM block",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			kp, err := ParseKeyPair(tc.certPEM, tc.keyPEM)
			checkErr(t, err, tc.wantErr)
			if tc.wantMismatch != errors.Is(err, ErrKeyMismatch) {
				t.Errorf("errors.Is(err, ErrKeyMismatch) = %t, want %t", !tc.wantMismatch, tc.wantMismatch)
			}
			if err != nil {
				return
			}
			if len(kp.Chain) != tc.wantChain {
				t.Errorf("Chain has %d certificates, want %d", len(kp.Chain), tc.wantChain)
			}
			if !keyMatches(kp.Cert, kp.Key) {
				t.Error("returned key does not match returned certificate")
			}
			// KeyPEM is normalized to PKCS#8 whatever came in.
			b, _ := pem.Decode(kp.KeyPEM)
			if b == nil || b.Type != "PRIVATE KEY" {
				t.Fatal("KeyPEM is not a PRIVATE KEY block")
			}
			again, err := ParseKeyPair(kp.CertPEM, kp.KeyPEM)
			if err != nil || !again.Cert.Equal(kp.Cert) {
				t.Errorf("CertPEM/KeyPEM do not parse back: %v", err)
			}
		})
	}
}

func TestParseCertificates(t *testing.T) {
	a := mustRoot(t, day, now)
	b := mustRoot(t, day, now)
	full := string(a.CertPEM)
	truncated := full[:len(full)/2]

	tests := map[string]struct {
		in      string
		want    []*KeyPair // expected certificates, in order
		wantErr string
	}{
		"one":                      {in: full, want: []*KeyPair{a}},
		"two in order":             {in: string(b.CertPEM) + full, want: []*KeyPair{b, a}},
		"text between blocks":      {in: "# root a\n" + full + "subject=b\n" + string(b.CertPEM), want: []*KeyPair{a, b}},
		"empty":                    {in: "", wantErr: "no CERTIFICATE PEM block"},
		"garbage":                  {in: "hello\x00world", wantErr: "no CERTIFICATE PEM block"},
		"truncated last block":     {in: full + truncated, wantErr: "PEM block 2 is malformed"},
		"truncated block skipped":  {in: truncated + "\n" + full, wantErr: "PEM block 1 is malformed"},
		"another block type":       {in: full + string(a.KeyPEM), wantErr: `PEM block 2 is "PRIVATE KEY", want CERTIFICATE`},
		"certificate DER is wrong": {in: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0}})), wantErr: "PEM block 1:"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseCertificates([]byte(tc.in))
			checkErr(t, err, tc.wantErr)
			if err != nil {
				return
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d certificates, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if !got[i].Equal(tc.want[i].Cert) {
					t.Errorf("certificate %d differs", i)
				}
			}
		})
	}
}

func TestEncodeCertificates(t *testing.T) {
	a, b := mustRoot(t, day, now), mustRoot(t, day, now)
	tests := map[string]struct {
		in   []*KeyPair // nil entries become nil certificates
		want string
	}{
		"none":           {want: ""},
		"one":            {in: []*KeyPair{a}, want: string(a.CertPEM)},
		"order kept":     {in: []*KeyPair{b, a}, want: string(b.CertPEM) + string(a.CertPEM)},
		"nil is skipped": {in: []*KeyPair{a, nil, b}, want: string(a.CertPEM) + string(b.CertPEM)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var certs []*x509.Certificate
			for _, kp := range tc.in {
				if kp == nil {
					certs = append(certs, nil)
				} else {
					certs = append(certs, kp.Cert)
				}
			}
			if got := string(EncodeCertificates(certs...)); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRenewalTime(t *testing.T) {
	tests := map[string]struct {
		notBefore, notAfter time.Time
	}{
		"three hours": {notBefore: now, notAfter: now.Add(3 * time.Hour)},
		"a year":      {notBefore: now, notAfter: now.Add(365 * day)},
		// 2*life overflows time.Duration here.
		"two centuries": {notBefore: now, notAfter: now.AddDate(200, 0, 0)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := &x509.Certificate{NotBefore: tc.notBefore, NotAfter: tc.notAfter}
			got := RenewalTime(c)
			want := tc.notBefore.Add(tc.notAfter.Sub(tc.notBefore) / 3 * 2)
			// Rounding of the thirds may differ by a nanosecond or two.
			if d := got.Sub(want); d < 0 || d > 2 {
				t.Errorf("RenewalTime = %v, want %v", got, want)
			}
		})
	}
}

func TestNeedsRenewal(t *testing.T) {
	c := &x509.Certificate{NotBefore: now, NotAfter: now.Add(3 * time.Hour)}
	tests := map[string]struct {
		at   time.Time
		want bool
	}{
		"just issued":                {at: now, want: false},
		"just before two thirds":     {at: now.Add(2*time.Hour - time.Nanosecond), want: false},
		"exactly at two thirds":      {at: now.Add(2 * time.Hour), want: true},
		"expired":                    {at: now.Add(4 * time.Hour), want: true},
		"clock behind the NotBefore": {at: now.Add(-time.Hour), want: false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := NeedsRenewal(c, tc.at); got != tc.want {
				t.Errorf("NeedsRenewal = %t, want %t", got, tc.want)
			}
		})
	}
}
