package ca

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"
)

func TestParseIssued(t *testing.T) {
	// A cert-manager style hierarchy: root -> intermediate -> mesh issuer.
	root := issue(t, caTemplate("cm root", now.Add(-30*day), now.Add(3650*day)), nil, nil)
	inter := issue(t, caTemplate("cm intermediate", now.Add(-30*day), now.Add(365*day)), root, nil)
	iss := issue(t, caTemplate("mesh issuer", now.Add(-day), now.Add(90*day)), inter, nil)
	otherRoot := issue(t, caTemplate("other root", now.Add(-30*day), now.Add(3650*day)), nil, nil)
	selfSigned := issue(t, caTemplate("self-signed issuer", now.Add(-day), now.Add(90*day)), nil, nil)
	leaf := issue(t, leafTemplate("leaf", now.Add(-day), now.Add(90*day)), inter, nil)
	noCertSign := issue(t, func() *x509.Certificate {
		c := caTemplate("no cert sign", now.Add(-day), now.Add(90*day))
		c.KeyUsage = 0
		return c
	}(), inter, nil)
	expired := issue(t, caTemplate("expired issuer", now.Add(-10*day), now), inter, nil)
	future := issue(t, caTemplate("future issuer", now.Add(time.Hour), now.Add(90*day)), inter, nil)
	slightlyAhead := issue(t, caTemplate("skewed issuer", now.Add(2*time.Minute), now.Add(90*day)), inter, nil)
	rsaIssuer := issue(t, caTemplate("rsa issuer", now.Add(-day), now.Add(90*day)), inter, rsaKey())

	tlsCrt := concat(iss.CertPEM, inter.CertPEM)
	good := map[string][]byte{IssuerCertKey: tlsCrt, IssuerKeyKey: iss.KeyPEM, BundleKey: root.CertPEM}

	tests := map[string]struct {
		data         map[string][]byte
		wantIssuer   *KeyPair   // the certificate expected as issuer
		wantRoots    []*KeyPair // the certificates expected as roots, in order
		wantChain    int        // number of certificates expected in the issuer's Chain
		wantErr      string
		wantMismatch bool // the error must wrap ErrKeyMismatch
	}{
		"chain with ca.crt": {
			data: good, wantIssuer: iss, wantRoots: []*KeyPair{root}, wantChain: 1,
		},
		"SEC1 tls.key": {
			data:       with(good, map[string][]byte{IssuerKeyKey: sec1PEM(t, ecKeyOf(t, iss))}),
			wantIssuer: iss, wantRoots: []*KeyPair{root}, wantChain: 1,
		},
		"RSA issuer with PKCS#1 tls.key": {
			data:       with(good, map[string][]byte{IssuerCertKey: concat(rsaIssuer.CertPEM, inter.CertPEM), IssuerKeyKey: pkcs1PEM(rsaKey())}),
			wantIssuer: rsaIssuer, wantRoots: []*KeyPair{root}, wantChain: 1,
		},
		"ca.crt deduplicated, every root returned": {
			data:       with(good, map[string][]byte{BundleKey: concat(root.CertPEM, otherRoot.CertPEM, root.CertPEM)}),
			wantIssuer: iss, wantRoots: []*KeyPair{root, otherRoot}, wantChain: 1,
		},
		"no ca.crt, tls.crt ends with a self-signed root": {
			data:       with(good, map[string][]byte{IssuerCertKey: iss.FullChainPEM(), BundleKey: nil}),
			wantIssuer: iss, wantRoots: []*KeyPair{root}, wantChain: 2,
		},
		"no ca.crt, self-signed issuer": {
			data:       map[string][]byte{IssuerCertKey: selfSigned.CertPEM, IssuerKeyKey: selfSigned.KeyPEM},
			wantIssuer: selfSigned, wantRoots: []*KeyPair{selfSigned}, wantChain: 0,
		},
		"NotBefore within the clock skew": {
			data:       with(good, map[string][]byte{IssuerCertKey: concat(slightlyAhead.CertPEM, inter.CertPEM), IssuerKeyKey: slightlyAhead.KeyPEM}),
			wantIssuer: slightlyAhead, wantRoots: []*KeyPair{root}, wantChain: 1,
		},
		"no ca.crt and no root in tls.crt": {
			data:    with(good, map[string][]byte{BundleKey: nil}),
			wantErr: "ca.crt is missing and tls.crt does not end with a self-signed root|use a cert-manager issuer that sets ca.crt",
		},
		"tls.crt is not a CA": {
			data:    with(good, map[string][]byte{IssuerCertKey: concat(leaf.CertPEM, inter.CertPEM), IssuerKeyKey: leaf.KeyPEM}),
			wantErr: `tls.crt ("leaf") is not a CA certificate (IsCA=false|set spec.isCA: true`,
		},
		"tls.crt is a CA without cert sign usage": {
			data:    with(good, map[string][]byte{IssuerCertKey: concat(noCertSign.CertPEM, inter.CertPEM), IssuerKeyKey: noCertSign.KeyPEM}),
			wantErr: "is not a CA certificate (IsCA=true, cert sign usage=false)",
		},
		"expired tls.crt": {
			data:    with(good, map[string][]byte{IssuerCertKey: concat(expired.CertPEM, inter.CertPEM), IssuerKeyKey: expired.KeyPEM}),
			wantErr: `tls.crt ("expired issuer") expired at 2026-11-23T10:30:00Z|check the Certificate's status`,
		},
		"tls.crt not valid for another hour": {
			data:    with(good, map[string][]byte{IssuerCertKey: concat(future.CertPEM, inter.CertPEM), IssuerKeyKey: future.KeyPEM}),
			wantErr: "is not valid until 2026-11-23T11:30:00Z|check the clocks",
		},
		"tls.key of another certificate": {
			data:    with(good, map[string][]byte{IssuerKeyKey: otherRoot.KeyPEM}),
			wantErr: "tls.key does not belong to tls.crt", wantMismatch: true,
		},
		"tls.crt from a foreign root": {
			data:    with(good, map[string][]byte{BundleKey: otherRoot.CertPEM}),
			wantErr: `tls.crt ("mesh issuer") does not verify up to ca.crt|whose root is in ca.crt`,
		},
		"tls.crt missing its intermediate": {
			data:    with(good, map[string][]byte{IssuerCertKey: iss.CertPEM}),
			wantErr: "does not verify up to ca.crt",
		},
		"tls.crt missing": {
			data:    with(good, map[string][]byte{IssuerCertKey: nil}),
			wantErr: "tls.crt is missing or empty|wait for cert-manager",
		},
		"tls.key missing": {
			data:    with(good, map[string][]byte{IssuerKeyKey: nil}),
			wantErr: "tls.key is missing or empty",
		},
		"garbage tls.crt": {
			data:    with(good, map[string][]byte{IssuerCertKey: []byte("garbage")}),
			wantErr: "tls.crt: no CERTIFICATE PEM block",
		},
		"garbage tls.key": {
			data:    with(good, map[string][]byte{IssuerKeyKey: []byte("garbage")}),
			wantErr: "tls.key: no private key PEM block",
		},
		"garbage ca.crt": {
			data:    with(good, map[string][]byte{BundleKey: []byte("garbage")}),
			wantErr: "ca.crt: no CERTIFICATE PEM block",
		},
		"nil data": {
			data:    nil,
			wantErr: "tls.crt is missing",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, roots, err := ParseIssued(tc.data, now)
			checkErr(t, err, tc.wantErr)
			if tc.wantMismatch != errors.Is(err, ErrKeyMismatch) {
				t.Errorf("errors.Is(err, ErrKeyMismatch) = %t, want %t", !tc.wantMismatch, tc.wantMismatch)
			}
			if err != nil {
				if got != nil || roots != nil {
					t.Error("results returned with an error")
				}
				return
			}
			if !got.Cert.Equal(tc.wantIssuer.Cert) || !keyMatches(got.Cert, got.Key) {
				t.Error("issuer is not the expected certificate with its key")
			}
			if len(got.Chain) != tc.wantChain {
				t.Errorf("issuer Chain has %d certificates, want %d", len(got.Chain), tc.wantChain)
			}
			if len(roots) != len(tc.wantRoots) {
				t.Fatalf("got %d roots, want %d", len(roots), len(tc.wantRoots))
			}
			for i := range roots {
				if !roots[i].Equal(tc.wantRoots[i].Cert) {
					t.Errorf("root %d is %q, want %q", i, roots[i].Subject.CommonName, tc.wantRoots[i].Cert.Subject.CommonName)
				}
			}
		})
	}
}
