package ca

import (
	"bytes"
	"crypto/x509"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// with returns a copy of data with changes applied; a nil value deletes.
func with(data map[string][]byte, changes map[string][]byte) map[string][]byte {
	out := maps.Clone(data)
	for k, v := range changes {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

func TestEnsureBuiltin(t *testing.T) {
	cfg := BuiltinConfig{TrustDomain: td}
	base, err := EnsureBuiltin(nil, cfg, now)
	if err != nil {
		t.Fatal(err)
	}
	// A key the operator does not own, which must survive every rewrite.
	base.Data["note"] = []byte("kept")
	baseRoot, baseIssuer := base.Root, base.Issuer
	year := 365 * day

	foreignIssuer := mustIssuer(t, mustRoot(t, 0, now), 0, now)
	otherKey := mustRoot(t, day, now).KeyPEM
	notCAIssuer := issue(t, func() *x509.Certificate {
		c := leafTemplate("not a CA", now, now.Add(day))
		c.URIs = baseIssuer.Cert.URIs
		return c
	}(), baseRoot, nil)
	longIssuer := issue(t, func() *x509.Certificate {
		c := caTemplate("outlives root", now, baseRoot.Cert.NotAfter.Add(day))
		c.URIs = baseIssuer.Cert.URIs
		return c
	}(), baseRoot, nil)
	// A root of two hours: an hour before its end it is not yet due for
	// renewal by the two-thirds rule but can no longer sign an issuer.
	shortRoot := issue(t, caTemplate("short root", now.Add(-5*time.Minute), now.Add(115*time.Minute)), nil, nil)

	tests := map[string]struct {
		data                                 map[string][]byte
		cfg                                  BuiltinConfig // cfg when zero
		at                                   time.Time
		wantActions                          []string  // each action must start with the matching prefix, in order
		keepRoot                             bool      // the root of data is kept
		keepIssuer                           bool      // the issuer of data is kept
		unchanged                            bool      // Data is data, byte for byte
		wantRootNotAfter, wantIssuerNotAfter time.Time // checked when set
		wantNextCheck                        time.Time // checked when set
	}{
		"nil data creates root and issuer": {
			data: nil, at: now,
			wantActions:        []string{"created root CA, valid until 2036-11-20T10:30:00Z", "issued issuer under the new root, valid until 2027-11-23T10:30:00Z"},
			wantRootNotAfter:   now.Add(DefaultRootValidity),
			wantIssuerNotAfter: now.Add(DefaultIssuerValidity),
		},
		"empty data with custom validities": {
			data: map[string][]byte{}, cfg: BuiltinConfig{TrustDomain: td, RootValidity: 30 * day, IssuerValidity: 2 * day}, at: now,
			wantActions:        []string{"created root CA", "issued issuer under the new root"},
			wantRootNotAfter:   now.Add(30 * day),
			wantIssuerNotAfter: now.Add(2 * day),
		},
		"issuer longer than root is clamped": {
			data: nil, cfg: BuiltinConfig{TrustDomain: td, RootValidity: 3 * time.Hour, IssuerValidity: day}, at: now,
			wantActions:        []string{"created root CA", "issued issuer under the new root"},
			wantIssuerNotAfter: now.Add(3 * time.Hour),
		},
		"unchanged data is returned byte for byte": {
			data: base.Data, at: now.Add(time.Hour),
			keepRoot: true, keepIssuer: true, unchanged: true,
		},
		"issuer at 60% of its life is kept": {
			data: base.Data, at: now.Add(year * 6 / 10),
			keepRoot: true, keepIssuer: true, unchanged: true,
		},
		"issuer at 70% of its life is rotated, root kept": {
			data: base.Data, at: now.Add(year * 7 / 10),
			wantActions: []string{"rotated issuer: a third of its life remained; new issuer valid until 2028-08-04T22:30:00Z"},
			keepRoot:    true,
		},
		"expired issuer is replaced": {
			data: base.Data, at: baseIssuer.Cert.NotAfter,
			wantActions: []string{"replaced issuer: it expired at 2027-11-23T10:30:00Z; new issuer valid until"},
			keepRoot:    true,
		},
		"root at 70% of its life is rotated and the issuer re-issued under it": {
			data: base.Data, at: now.Add(DefaultRootValidity * 7 / 10),
			wantActions: []string{"rotated root: a third of its life remained; new root valid until", "issued issuer under the new root"},
		},
		"expired root is rotated": {
			data: base.Data, at: baseRoot.Cert.NotAfter.Add(time.Second),
			wantActions: []string{"rotated root: it expired at 2036-11-20T10:30:00Z", "issued issuer under the new root"},
		},
		"root with less than an hour left is rotated": {
			data: map[string][]byte{RootCertKey: shortRoot.CertPEM, RootKeyKey: shortRoot.KeyPEM}, at: now.Add(time.Hour),
			wantActions: []string{"rotated root: less than 1h0m0s of its life remained", "issued issuer under the new root"},
		},
		"root shorter than three hours is looked at an hour before its end": {
			data: map[string][]byte{RootCertKey: shortRoot.CertPEM, RootKeyKey: shortRoot.KeyPEM, BundleKey: shortRoot.CertPEM}, at: now,
			wantActions:        []string{"issued issuer, valid until 2026-11-23T12:25:00Z"},
			keepRoot:           true,
			wantIssuerNotAfter: shortRoot.Cert.NotAfter,
			wantNextCheck:      now.Add(55 * time.Minute),
		},
		"annotated root.crt is kept as it is": {
			data: with(base.Data, map[string][]byte{RootCertKey: concat([]byte("# trellis root\n"), base.Data[RootCertKey])}), at: now,
			keepRoot: true, keepIssuer: true, unchanged: true,
		},
		"garbage in root.crt re-creates the CA": {
			data: with(base.Data, map[string][]byte{RootCertKey: []byte("garbage")}), at: now,
			wantActions: []string{"re-created CA: Secret held unparsable data in root.crt (no CERTIFICATE PEM block found); new root valid until", "issued issuer under the new root"},
		},
		"percent signs in stored data reach the action verbatim": {
			data: with(base.Data, map[string][]byte{RootCertKey: []byte("-----BEGIN %s%d-----\nAAAA\n-----END %s%d-----\n")}), at: now,
			wantActions: []string{`re-created CA: Secret held unparsable data in root.crt (PEM block 1 is "%s%d", want CERTIFICATE); new root valid until 2036`, "issued issuer under the new root"},
		},
		"two certificates in root.crt re-create the CA": {
			data: with(base.Data, map[string][]byte{RootCertKey: base.Data[IssuerCertKey]}), at: now,
			wantActions: []string{"re-created CA: root.crt held 2 certificates instead of only the root", "issued issuer under the new root"},
		},
		"root.crt that is not a self-signed CA re-creates the CA": {
			data: with(base.Data, map[string][]byte{RootCertKey: baseIssuer.CertPEM, RootKeyKey: baseIssuer.KeyPEM}), at: now,
			wantActions: []string{"re-created CA: root.crt held a certificate that is not a self-signed CA", "issued issuer under the new root"},
		},
		"root.key not matching root.crt re-creates the CA": {
			data: with(base.Data, map[string][]byte{RootKeyKey: otherKey}), at: now,
			wantActions: []string{"re-created CA: root.key does not match root.crt", "issued issuer under the new root"},
		},
		"missing root.key re-creates the CA": {
			data: with(base.Data, map[string][]byte{RootKeyKey: nil}), at: now,
			wantActions: []string{"re-created CA: Secret has no root.key", "issued issuer under the new root"},
		},
		"unparsable root.key re-creates the CA": {
			data: with(base.Data, map[string][]byte{RootKeyKey: []byte("x")}), at: now,
			wantActions: []string{"re-created CA: Secret held unparsable data in root.key (no private key PEM block", "issued issuer under the new root"},
		},
		"missing issuer is issued": {
			data: with(base.Data, map[string][]byte{IssuerCertKey: nil, IssuerKeyKey: nil}), at: now,
			wantActions: []string{"issued issuer, valid until 2027-11-23T10:30:00Z"},
			keepRoot:    true,
		},
		"tls.key not matching tls.crt replaces the issuer": {
			data: with(base.Data, map[string][]byte{IssuerKeyKey: otherKey}), at: now,
			wantActions: []string{"replaced issuer: tls.key does not match tls.crt; new issuer valid until"},
			keepRoot:    true,
		},
		"missing tls.key replaces the issuer": {
			data: with(base.Data, map[string][]byte{IssuerKeyKey: nil}), at: now,
			wantActions: []string{"replaced issuer: Secret has no tls.key"},
			keepRoot:    true,
		},
		"garbage in tls.crt replaces the issuer": {
			data: with(base.Data, map[string][]byte{IssuerCertKey: []byte("-----BEGIN CERTIFICATE-----\nAAAA")}), at: now,
			wantActions: []string{"replaced issuer: Secret held unparsable data in tls.crt (PEM block 1 is malformed"},
			keepRoot:    true,
		},
		"issuer signed by a foreign root is replaced": {
			data: with(base.Data, map[string][]byte{IssuerCertKey: foreignIssuer.FullChainPEM(), IssuerKeyKey: foreignIssuer.KeyPEM}), at: now,
			wantActions: []string{"replaced issuer: it was not signed by the root"},
			keepRoot:    true,
		},
		"issuer that is not a CA is replaced": {
			data: with(base.Data, map[string][]byte{IssuerCertKey: notCAIssuer.FullChainPEM(), IssuerKeyKey: notCAIssuer.KeyPEM}), at: now,
			wantActions: []string{"replaced issuer: tls.crt held a certificate that is not a CA"},
			keepRoot:    true,
		},
		"issuer outliving the root is replaced": {
			data: with(base.Data, map[string][]byte{IssuerCertKey: longIssuer.FullChainPEM(), IssuerKeyKey: longIssuer.KeyPEM}), at: now,
			wantActions: []string{"replaced issuer: it outlives the root"},
			keepRoot:    true,
		},
		"trust domain change re-issues the issuer and keeps the root": {
			data: base.Data, cfg: BuiltinConfig{TrustDomain: "new.example"}, at: now,
			wantActions: []string{"replaced issuer: its URI SAN is spiffe://cluster.local, want spiffe://new.example"},
			keepRoot:    true,
		},
		"missing ca.crt is rewritten without re-issuing": {
			data: with(base.Data, map[string][]byte{BundleKey: nil}), at: now,
			wantActions: []string{"rewrote ca.crt to hold the current root and issuer"},
			keepRoot:    true, keepIssuer: true,
		},
		"tls.crt without the root is rewritten without re-issuing": {
			data: with(base.Data, map[string][]byte{IssuerCertKey: baseIssuer.CertPEM}), at: now,
			wantActions: []string{"rewrote tls.crt to hold the current root and issuer"},
			keepRoot:    true, keepIssuer: true,
		},
		"SEC1 tls.key is accepted as it is": {
			data: with(base.Data, map[string][]byte{IssuerKeyKey: sec1PEM(t, ecKeyOf(t, baseIssuer))}), at: now,
			keepRoot: true, keepIssuer: true, unchanged: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := tc.cfg
			if c == (BuiltinConfig{}) {
				c = cfg
			}
			res, err := EnsureBuiltin(tc.data, c, tc.at)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Actions) != len(tc.wantActions) {
				t.Fatalf("actions %q, want %d starting with %q", res.Actions, len(tc.wantActions), tc.wantActions)
			}
			for i, want := range tc.wantActions {
				if !strings.HasPrefix(res.Actions[i], want) {
					t.Errorf("action %d is %q, want it to start with %q", i, res.Actions[i], want)
				}
			}
			checkBuiltinData(t, res, c.TrustDomain, tc.at)

			if tc.data != nil && tc.data["note"] != nil && !bytes.Equal(res.Data["note"], tc.data["note"]) {
				t.Error("a key the operator does not own was lost")
			}
			if tc.unchanged {
				if !maps.EqualFunc(res.Data, tc.data, bytes.Equal) {
					t.Error("Data differs from the input although nothing had to change")
				}
			} else if maps.EqualFunc(res.Data, tc.data, bytes.Equal) {
				t.Error("Data equals the input although something had to change")
			}
			if oldRoot, _ := loadRoot(tc.data); oldRoot != nil {
				if kept := res.Root.Cert.Equal(oldRoot.Cert) && bytes.Equal(res.Data[RootKeyKey], tc.data[RootKeyKey]); kept != tc.keepRoot {
					t.Errorf("root kept = %t, want %t", kept, tc.keepRoot)
				}
			} else if tc.keepRoot {
				t.Fatal("bad test: keepRoot without a usable root in data")
			}
			if old, err := ParseCertificates(tc.data[IssuerCertKey]); err == nil {
				if kept := res.Issuer.Cert.Equal(old[0]) && bytes.Equal(res.Data[IssuerKeyKey], tc.data[IssuerKeyKey]); kept != tc.keepIssuer {
					t.Errorf("issuer kept = %t, want %t", kept, tc.keepIssuer)
				}
			} else if tc.keepIssuer {
				t.Fatal("bad test: keepIssuer without an issuer in data")
			}
			if !tc.wantRootNotAfter.IsZero() && !res.Root.Cert.NotAfter.Equal(tc.wantRootNotAfter) {
				t.Errorf("root NotAfter %v, want %v", res.Root.Cert.NotAfter, tc.wantRootNotAfter)
			}
			if !tc.wantNextCheck.IsZero() && !res.NextCheck.Equal(tc.wantNextCheck) {
				t.Errorf("NextCheck %v, want %v", res.NextCheck, tc.wantNextCheck)
			}
			if !tc.wantIssuerNotAfter.IsZero() && !res.Issuer.Cert.NotAfter.Equal(tc.wantIssuerNotAfter) {
				t.Errorf("issuer NotAfter %v, want %v", res.Issuer.Cert.NotAfter, tc.wantIssuerNotAfter)
			}

			// Whatever was decided must be stable: asked again at the same
			// time, nothing changes.
			again, err := EnsureBuiltin(res.Data, c, tc.at)
			if err != nil {
				t.Fatal(err)
			}
			if len(again.Actions) != 0 || !maps.EqualFunc(again.Data, res.Data, bytes.Equal) {
				t.Errorf("second pass changed the data: %q", again.Actions)
			}
		})
	}
}

// checkBuiltinData asserts the invariants of every EnsureBuiltin result.
func checkBuiltinData(t *testing.T, res *BuiltinResult, trustDomain string, at time.Time) {
	t.Helper()
	root, issuer := res.Root.Cert, res.Issuer.Cert
	if got := mustParseCerts(t, res.Data[RootCertKey]); len(got) != 1 || !got[0].Equal(root) {
		t.Error("root.crt does not hold exactly Root")
	}
	if got := mustParseCerts(t, res.Data[BundleKey]); len(got) != 1 || !got[0].Equal(root) {
		t.Error("ca.crt does not hold exactly Root")
	}
	if got := mustParseCerts(t, res.Data[IssuerCertKey]); len(got) != 2 || !got[0].Equal(issuer) || !got[1].Equal(root) {
		t.Error("tls.crt is not Issuer followed by Root")
	}
	if _, err := ParseKeyPair(res.Data[RootCertKey], res.Data[RootKeyKey]); err != nil {
		t.Errorf("root.crt/root.key: %v", err)
	}
	if _, err := ParseKeyPair(res.Data[IssuerCertKey], res.Data[IssuerKeyKey]); err != nil {
		t.Errorf("tls.crt/tls.key: %v", err)
	}
	if err := issuer.CheckSignatureFrom(root); err != nil {
		t.Errorf("issuer not signed by root: %v", err)
	}
	if len(res.Issuer.Chain) != 1 || !res.Issuer.Chain[0].Equal(root) {
		t.Error("Issuer.Chain is not [Root]")
	}
	if len(issuer.URIs) != 1 || issuer.URIs[0].String() != "spiffe://"+trustDomain {
		t.Errorf("issuer URIs %v, want spiffe://%s", issuer.URIs, trustDomain)
	}
	if NeedsRenewal(root, at) || NeedsRenewal(issuer, at) {
		t.Error("result already needs renewal")
	}
	wantNext := slices.MinFunc([]time.Time{RenewalTime(root), RenewalTime(issuer), root.NotAfter.Add(-MinSignerRemaining)}, time.Time.Compare)
	if !res.NextCheck.Equal(wantNext) || !res.NextCheck.After(at) {
		t.Errorf("NextCheck %v, want %v (after %v)", res.NextCheck, wantNext, at)
	}
}

func TestEnsureBuiltinConfig(t *testing.T) {
	tests := map[string]struct {
		cfg     BuiltinConfig
		wantErr string
	}{
		"defaults":                  {cfg: BuiltinConfig{TrustDomain: td}},
		"shortest accepted":         {cfg: BuiltinConfig{TrustDomain: td, RootValidity: MinBuiltinRootValidity, IssuerValidity: MinBuiltinIssuerValidity}},
		"no trust domain":           {cfg: BuiltinConfig{}, wantErr: "builtin CA config: trust domain is empty"},
		"bad trust domain":          {cfg: BuiltinConfig{TrustDomain: "a/b"}, wantErr: `trust domain "a/b" contains '/'`},
		"negative root validity":    {cfg: BuiltinConfig{TrustDomain: td, RootValidity: -time.Hour}, wantErr: "RootValidity is -1h0m0s"},
		"negative issuer validity":  {cfg: BuiltinConfig{TrustDomain: td, IssuerValidity: -time.Hour}, wantErr: "IssuerValidity is -1h0m0s"},
		"root validity too short":   {cfg: BuiltinConfig{TrustDomain: td, RootValidity: 2 * time.Hour}, wantErr: "RootValidity 2h0m0s is too short: set it to at least 3h0m0s"},
		"issuer validity too short": {cfg: BuiltinConfig{TrustDomain: td, IssuerValidity: time.Minute}, wantErr: "IssuerValidity 1m0s is too short: set it to at least 1h0m0s"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			res, err := EnsureBuiltin(nil, tc.cfg, now)
			checkErr(t, err, tc.wantErr)
			if err == nil && res.Root == nil {
				t.Error("no root created")
			}
		})
	}
}
