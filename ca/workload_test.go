package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

func makeCSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) *x509.CertificateRequest {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func TestSignWorkload(t *testing.T) {
	const id = "spiffe://cluster.local/ns/default/sa/web"
	root := mustRoot(t, 0, now.Add(-day))
	iss := mustIssuer(t, root, 0, now.Add(-time.Hour))
	withURI := func(c *x509.Certificate) *x509.Certificate { c.URIs = iss.Cert.URIs; return c }
	// freshIssuer started a minute ago, later than now-ClockSkew.
	freshIssuer := issue(t, withURI(caTemplate("fresh", now.Add(-time.Minute), now.Add(day))), root, nil)
	endingIssuer := issue(t, withURI(caTemplate("ending", now.Add(-day), now.Add(2*time.Hour))), root, nil)
	notCA := issue(t, withURI(leafTemplate("not a CA", now.Add(-day), now.Add(day))), root, nil)
	// A cert-manager hierarchy without SPIFFE names: root -> inter -> issuer.
	cmRoot := issue(t, caTemplate("cm root", now.Add(-day), now.Add(3650*day)), nil, nil)
	cmInter := issue(t, caTemplate("cm inter", now.Add(-day), now.Add(365*day)), cmRoot, nil)
	cmIssuer := issue(t, caTemplate("cm issuer", now.Add(-day), now.Add(90*day)), cmInter, nil)

	key := newECKey(t)
	csr := makeCSR(t, key, nil)
	badSig := makeCSR(t, key, nil)
	badSig.Signature[len(badSig.Signature)-1] ^= 0xff
	greedy := makeCSR(t, key, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "admin"},
		DNSNames:       []string{"evil.example"},
		EmailAddresses: []string{"a@b.c"},
		IPAddresses:    []net.IP{net.IPv4(10, 0, 0, 1)},
		URIs:           []*url.URL{mustURL(t, "spiffe://cluster.local/ns/kube-system/sa/admin")},
	})
	rsaCSR := makeCSR(t, rsaKey(), nil)

	tests := map[string]struct {
		issuer        *KeyPair
		root          *KeyPair // to verify the leaf against
		csr           *x509.CertificateRequest
		spiffeID      string
		ttl           time.Duration
		at            time.Time
		wantNotBefore time.Time
		wantNotAfter  time.Time
		wantChain     int // certificates in the chain PEM, leaf included
		wantErr       string
	}{
		"default ttl": {
			issuer: iss, root: root, csr: csr, spiffeID: id, at: now,
			wantNotBefore: now.Add(-ClockSkew), wantNotAfter: now.Add(DefaultWorkloadValidity), wantChain: 2,
		},
		"explicit ttl": {
			issuer: iss, root: root, csr: csr, spiffeID: id, ttl: time.Hour, at: now,
			wantNotBefore: now.Add(-ClockSkew), wantNotAfter: now.Add(time.Hour), wantChain: 2,
		},
		"clamped to the issuer's NotAfter": {
			issuer: endingIssuer, root: root, csr: csr, spiffeID: id, ttl: day, at: now,
			wantNotBefore: now.Add(-ClockSkew), wantNotAfter: now.Add(2 * time.Hour), wantChain: 2,
		},
		"NotBefore not before the issuer's": {
			issuer: freshIssuer, root: root, csr: csr, spiffeID: id, at: now,
			wantNotBefore: now.Add(-time.Minute), wantNotAfter: now.Add(day), wantChain: 2,
		},
		"only the SPIFFE ID from a CSR asking for more": {
			issuer: iss, root: root, csr: greedy, spiffeID: id, at: now,
			wantNotBefore: now.Add(-ClockSkew), wantNotAfter: now.Add(day), wantChain: 2,
		},
		"RSA key in the CSR": {
			issuer: iss, root: root, csr: rsaCSR, spiffeID: id, at: now,
			wantNotBefore: now.Add(-ClockSkew), wantNotAfter: now.Add(day), wantChain: 2,
		},
		"issuer without SPIFFE name, chain with intermediate": {
			issuer: cmIssuer, root: cmRoot, csr: csr, spiffeID: "spiffe://other.example/ns/a/sa/b", at: now,
			wantNotBefore: now.Add(-ClockSkew), wantNotAfter: now.Add(day), wantChain: 3,
		},
		"expired issuer": {
			issuer: endingIssuer, csr: csr, spiffeID: id, at: now.Add(2 * time.Hour),
			wantErr: `issuer CA "ending" expired at 2026-11-23T12:30:00Z|rotate the issuer`,
		},
		"bad CSR signature": {
			issuer: iss, csr: badSig, spiffeID: id, at: now,
			wantErr: "certificate signing request for " + id + " has an invalid signature",
		},
		"RSA key under 2048 bits": {
			issuer: iss, csr: &x509.CertificateRequest{PublicKey: &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 1023), E: 65537}}, spiffeID: id, at: now,
			wantErr: "has a 1024-bit RSA key: use at least 2048 bits",
		},
		"no CSR": {
			issuer: iss, csr: nil, spiffeID: id, at: now, wantErr: "certificate signing request for " + id + " is missing",
		},
		"SPIFFE ID in another trust domain": {
			issuer: iss, csr: csr, spiffeID: "spiffe://other.example/ns/a/sa/b", at: now,
			wantErr: `SPIFFE ID spiffe://other.example/ns/a/sa/b is in trust domain "other.example", but issuer CA`,
		},
		"SPIFFE ID without path": {
			issuer: iss, csr: csr, spiffeID: "spiffe://cluster.local", at: now, wantErr: "has no path",
		},
		"not a SPIFFE ID": {
			issuer: iss, csr: csr, spiffeID: "https://cluster.local/ns/a/sa/b", at: now, wantErr: "does not start with spiffe://",
		},
		"SPIFFE ID with dot-dot segment": {
			issuer: iss, csr: csr, spiffeID: "spiffe://cluster.local/ns/a/../b", at: now, wantErr: `name ".." is not allowed`,
		},
		"SPIFFE ID with query": {
			issuer: iss, csr: csr, spiffeID: "spiffe://cluster.local/ns/a?x=1", at: now, wantErr: `contains '?'`,
		},
		"issuer is not a CA": {
			issuer: notCA, csr: csr, spiffeID: id, at: now, wantErr: `issuer certificate "not a CA" is not a CA`,
		},
		"negative ttl": {
			issuer: iss, csr: csr, spiffeID: id, ttl: -time.Second, at: now, wantErr: "workload certificate TTL is -1s",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			leaf, chainPEM, err := SignWorkload(tc.issuer, tc.csr, tc.spiffeID, tc.ttl, tc.at)
			checkErr(t, err, tc.wantErr)
			if err != nil {
				return
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != tc.spiffeID {
				t.Errorf("URIs %v, want exactly [%s]", leaf.URIs, tc.spiffeID)
			}
			if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
				t.Errorf("leaf has other SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
			}
			if len(leaf.Subject.Names) != 0 {
				t.Errorf("leaf subject %v, want empty", leaf.Subject)
			}
			sanCritical := false
			for _, e := range leaf.Extensions {
				if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
					sanCritical = e.Critical
				}
			}
			if !sanCritical {
				t.Error("SAN extension is not critical although the subject is empty")
			}
			if leaf.IsCA || !leaf.BasicConstraintsValid {
				t.Error("leaf is a CA or lacks basic constraints")
			}
			if want := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment; leaf.KeyUsage != want {
				t.Errorf("key usage %v, want %v", leaf.KeyUsage, want)
			}
			if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
				t.Errorf("ext key usage %v, want server and client auth", leaf.ExtKeyUsage)
			}
			if !leaf.NotBefore.Equal(tc.wantNotBefore) || !leaf.NotAfter.Equal(tc.wantNotAfter) {
				t.Errorf("validity [%v, %v], want [%v, %v]", leaf.NotBefore, leaf.NotAfter, tc.wantNotBefore, tc.wantNotAfter)
			}
			if pub, ok := tc.csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(leaf.PublicKey) {
				t.Error("leaf public key is not the CSR's")
			}

			chain := mustParseCerts(t, chainPEM)
			if len(chain) != tc.wantChain || !chain[0].Equal(leaf) || !chain[1].Equal(tc.issuer.Cert) {
				t.Fatalf("chain has %d certificates, want %d starting with leaf and issuer", len(chain), tc.wantChain)
			}
			roots, inters := x509.NewCertPool(), x509.NewCertPool()
			roots.AddCert(tc.root.Cert)
			for _, c := range chain[1:] {
				if isSelfSigned(c) {
					t.Errorf("chain holds the self-signed %q", c.Subject.CommonName)
				}
				inters.AddCert(c)
			}
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: tc.at, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
					t.Errorf("leaf does not verify for %v: %v", usage, err)
				}
			}
		})
	}
}

func TestSPIFFEID(t *testing.T) {
	tests := map[string]struct {
		trustDomain, namespace, serviceAccount string
		want                                   string
		wantErr                                string
	}{
		"plain":                     {td, "default", "web", "spiffe://cluster.local/ns/default/sa/web", ""},
		"dots, dashes, underscores": {"a_b.example-1", "kube-system", "my.sa_1", "spiffe://a_b.example-1/ns/kube-system/sa/my.sa_1", ""},
		"empty trust domain":        {"", "default", "web", "", "trust domain is empty"},
		"uppercase trust domain":    {"Cluster.local", "default", "web", "", `trust domain "Cluster.local" contains 'C'`},
		"trust domain with port":    {"cluster.local:443", "default", "web", "", `contains ':'`},
		"too long trust domain":     {strings.Repeat("a", 256), "default", "web", "", "256 characters long: at most 255"},
		"empty namespace":           {td, "", "web", "", "namespace: name is empty"},
		"empty service account":     {td, "default", "", "", "service account: name is empty"},
		"namespace with a slash":    {td, "a/sa/b", "web", "", `namespace: name "a/sa/b" contains '/'`},
		"dot-dot service account":   {td, "default", "..", "", `service account: name ".." is not allowed`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := SPIFFEID(tc.trustDomain, tc.namespace, tc.serviceAccount)
			checkErr(t, err, tc.wantErr)
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if err == nil {
				if _, gotTD, err := parseWorkloadID(got); err != nil || gotTD != tc.trustDomain {
					t.Errorf("built ID does not parse back: %q %v", gotTD, err)
				}
			}
		})
	}
}

func TestSignWorkloadKey(t *testing.T) {
	const id = "spiffe://cluster.local/ns/shop/sa/web"
	root := mustRoot(t, 0, now.Add(-day))
	iss := mustIssuer(t, root, 0, now.Add(-time.Hour))
	ending := issue(t, func() *x509.Certificate {
		c := caTemplate("ending", now.Add(-day), now.Add(2*time.Hour))
		c.URIs = iss.Cert.URIs
		return c
	}(), root, nil)
	pub := newECKey(t).Public()

	tests := map[string]struct {
		issuer       *KeyPair
		pub          crypto.PublicKey
		id           string
		ttl          time.Duration
		at           time.Time
		wantNotAfter time.Time
		wantErr      string
	}{
		"ttl honoured":               {issuer: iss, pub: pub, id: id, ttl: 6 * time.Hour, at: now, wantNotAfter: now.Add(6 * time.Hour)},
		"zero ttl is the default":    {issuer: iss, pub: pub, id: id, at: now, wantNotAfter: now.Add(DefaultWorkloadValidity)},
		"clamped to the issuer":      {issuer: ending, pub: pub, id: id, ttl: day, at: now, wantNotAfter: ending.Cert.NotAfter},
		"issuer expired":             {issuer: ending, pub: pub, id: id, ttl: day, at: ending.Cert.NotAfter, wantErr: `issuer CA "ending" expired`},
		"no key":                     {issuer: iss, pub: nil, id: id, ttl: day, at: now, wantErr: "no public key"},
		"trust domain of another CA": {issuer: iss, pub: pub, id: "spiffe://other.example/ns/a/sa/b", at: now, wantErr: `is in trust domain "other.example"`},
		"negative ttl":               {issuer: iss, pub: pub, id: id, ttl: -time.Minute, at: now, wantErr: "workload certificate TTL is -1m0s"},
		"not an ID":                  {issuer: iss, pub: pub, id: "web", at: now, wantErr: "does not start with spiffe://"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			leaf, err := SignWorkloadKey(tc.issuer, tc.pub, tc.id, tc.ttl, tc.at)
			checkErr(t, err, tc.wantErr)
			if err != nil {
				return
			}
			if !leaf.NotAfter.Equal(tc.wantNotAfter) {
				t.Errorf("NotAfter %v, want %v", leaf.NotAfter, tc.wantNotAfter)
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != tc.id {
				t.Errorf("URIs %v, want [%s]", leaf.URIs, tc.id)
			}
			if err := leaf.CheckSignatureFrom(tc.issuer.Cert); err != nil {
				t.Errorf("not signed by the issuer: %v", err)
			}
		})
	}
}

func TestSignServing(t *testing.T) {
	// A cert-manager style chain root -> inter -> issuer, so IssuerChain has
	// an intermediate to keep and a root to drop.
	root := issue(t, caTemplate("root", now.Add(-day), now.Add(3650*day)), nil, nil)
	inter := issue(t, caTemplate("inter", now.Add(-day), now.Add(365*day)), root, nil)
	iss := issue(t, caTemplate("issuer", now.Add(-day), now.Add(90*day)), inter, nil)
	names := []string{"trellis-controlplane", "trellis-controlplane.trellis-system.svc"}
	key := newECKey(t)

	tests := map[string]struct {
		names        []string
		ttl          time.Duration
		at           time.Time
		wantNotAfter time.Time
		wantErr      string
	}{
		"an hour":                 {names: names, ttl: time.Hour, at: now, wantNotAfter: now.Add(time.Hour)},
		"clamped to the issuer":   {names: names, ttl: 365 * day, at: now, wantNotAfter: iss.Cert.NotAfter},
		"no names":                {ttl: time.Hour, at: now, wantErr: "at least one DNS name"},
		"a URL is not a DNS name": {names: []string{"https://x"}, ttl: time.Hour, at: now, wantErr: `DNS name "https://x" is not a host name`},
		"zero ttl":                {names: names, at: now, wantErr: "serving certificate TTL is 0s"},
		"issuer expired":          {names: names, ttl: time.Hour, at: iss.Cert.NotAfter, wantErr: `issuer CA "issuer" expired`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			leaf, err := SignServing(iss, key.Public(), tc.names, tc.ttl, tc.at)
			checkErr(t, err, tc.wantErr)
			if err != nil {
				return
			}
			if !leaf.NotAfter.Equal(tc.wantNotAfter) || !leaf.NotBefore.Equal(tc.at.Add(-ClockSkew)) {
				t.Errorf("validity [%v, %v], want [%v, %v]", leaf.NotBefore, leaf.NotAfter, tc.at.Add(-ClockSkew), tc.wantNotAfter)
			}
			if len(leaf.URIs) != 0 || leaf.IsCA {
				t.Errorf("URIs %v, IsCA %t: a serving certificate is a plain leaf", leaf.URIs, leaf.IsCA)
			}
			chain := IssuerChain(iss)
			if len(chain) != 2 || !chain[0].Equal(iss.Cert) || !chain[1].Equal(inter.Cert) {
				t.Fatalf("IssuerChain has %d certificates, want the issuer and the intermediate", len(chain))
			}
			roots, inters := x509.NewCertPool(), x509.NewCertPool()
			roots.AddCert(root.Cert)
			for _, c := range chain {
				inters.AddCert(c)
			}
			for _, n := range tc.names {
				if _, err := leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: roots, Intermediates: inters, CurrentTime: tc.at}); err != nil {
					t.Errorf("does not verify for %s: %v", n, err)
				}
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: tc.at,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
				t.Error("a serving certificate must not authenticate a client")
			}
		})
	}
}
