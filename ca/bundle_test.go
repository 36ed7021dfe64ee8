package ca

import (
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// wantAnchor is an expected bundle entry.
type wantAnchor struct {
	root *KeyPair
	last time.Time // expected LastIssuerNotAfter
}

func checkAnchors(t *testing.T, got []Anchor, want []wantAnchor) {
	t.Helper()
	if len(got) != len(want) {
		names := make([]string, len(got))
		for i, a := range got {
			names[i] = a.Cert.Subject.CommonName
		}
		t.Fatalf("got %d anchors %q, want %d", len(got), names, len(want))
	}
	for i := range want {
		if !got[i].Cert.Equal(want[i].root.Cert) {
			t.Errorf("anchor %d is %q, want %q", i, got[i].Cert.Subject.CommonName, want[i].root.Cert.Subject.CommonName)
		}
		if !got[i].LastIssuerNotAfter.Equal(want[i].last) {
			t.Errorf("anchor %d LastIssuerNotAfter %v, want %v", i, got[i].LastIssuerNotAfter, want[i].last)
		}
	}
}

func TestNextBundle(t *testing.T) {
	// r1 is the old root, made seven years ago; i1 its last issuer. r2
	// replaced it today and signed i2.
	r1 := issue(t, caTemplate("r1", now.AddDate(-7, 0, 0), now.AddDate(3, 0, 0)), nil, nil)
	i1 := issue(t, caTemplate("i1", now.Add(-100*day), now.Add(265*day)), r1, nil)
	i1later := issue(t, caTemplate("i1 later", now, now.Add(300*day)), r1, nil)
	r2 := issue(t, caTemplate("r2", now.Add(-time.Hour), now.AddDate(10, 0, 0)), nil, nil)
	i2 := issue(t, caTemplate("i2", now.Add(-time.Hour), now.Add(365*day)), r2, nil)
	expiredRoot := issue(t, caTemplate("expired", now.Add(-2*day), now.Add(-day)), nil, nil)
	// cmRoot signs the issuer only through an intermediate.
	cmRoot := issue(t, caTemplate("cm root", now.Add(-day), now.AddDate(5, 0, 0)), nil, nil)
	cmInter := issue(t, caTemplate("cm inter", now.Add(-day), now.AddDate(1, 0, 0)), cmRoot, nil)
	cmIssuer := issue(t, caTemplate("cm issuer", now.Add(-day), now.Add(90*day)), cmInter, nil)

	a := func(kp *KeyPair, last time.Time) Anchor { return Anchor{Cert: kp.Cert, LastIssuerNotAfter: last} }
	rotated := []Anchor{a(r2, i2.Cert.NotAfter), a(r1, i1.Cert.NotAfter)}

	tests := map[string]struct {
		prev    []Anchor
		current []*KeyPair
		issuer  *KeyPair // nil for none
		at      time.Time
		want    []wantAnchor
	}{
		"first bundle": {
			current: []*KeyPair{r1}, issuer: i1, at: now,
			want: []wantAnchor{{r1, i1.Cert.NotAfter}},
		},
		"rotation keeps the old root": {
			prev: []Anchor{a(r1, i1.Cert.NotAfter)}, current: []*KeyPair{r2}, issuer: i2, at: now,
			want: []wantAnchor{{r2, i2.Cert.NotAfter}, {r1, i1.Cert.NotAfter}},
		},
		"old root kept until just before its last issuer's NotAfter": {
			prev: rotated, current: []*KeyPair{r2}, issuer: i2, at: i1.Cert.NotAfter.Add(-time.Second),
			want: []wantAnchor{{r2, i2.Cert.NotAfter}, {r1, i1.Cert.NotAfter}},
		},
		"old root dropped at its last issuer's NotAfter": {
			prev: rotated, current: []*KeyPair{r2}, issuer: i2, at: i1.Cert.NotAfter,
			want: []wantAnchor{{r2, i2.Cert.NotAfter}},
		},
		"old root dropped at its own NotAfter even if an issuer outlived it": {
			prev: []Anchor{a(r1, r1.Cert.NotAfter.Add(365*day))}, current: []*KeyPair{r2}, issuer: i2, at: r1.Cert.NotAfter,
			want: []wantAnchor{{r2, i2.Cert.NotAfter}},
		},
		"new root added next to the signing one": {
			prev: []Anchor{a(r1, i1.Cert.NotAfter)}, current: []*KeyPair{r1, r2}, issuer: i1, at: now,
			want: []wantAnchor{{r1, i1.Cert.NotAfter}, {r2, r2.Cert.NotAfter}},
		},
		"later issuer raises LastIssuerNotAfter": {
			prev: []Anchor{a(r1, i1.Cert.NotAfter)}, current: []*KeyPair{r1}, issuer: i1later, at: now,
			want: []wantAnchor{{r1, i1later.Cert.NotAfter}},
		},
		"earlier issuer does not lower LastIssuerNotAfter": {
			prev: []Anchor{a(r1, i1later.Cert.NotAfter)}, current: []*KeyPair{r1}, issuer: i1, at: now,
			want: []wantAnchor{{r1, i1later.Cert.NotAfter}},
		},
		"current root that did not sign the issuer keeps its value": {
			prev: []Anchor{a(r2, i2.Cert.NotAfter), a(r1, i1.Cert.NotAfter)}, current: []*KeyPair{r2, r1}, issuer: i1later, at: now,
			want: []wantAnchor{{r2, i2.Cert.NotAfter}, {r1, i1later.Cert.NotAfter}},
		},
		"root signing through an intermediate gets its own NotAfter": {
			current: []*KeyPair{cmRoot}, issuer: cmIssuer, at: now,
			want: []wantAnchor{{cmRoot, cmRoot.Cert.NotAfter}},
		},
		"duplicates collapse, keeping the latest LastIssuerNotAfter": {
			prev:    []Anchor{a(r1, i1.Cert.NotAfter), a(r2, i2.Cert.NotAfter), a(r1, i1later.Cert.NotAfter)},
			current: []*KeyPair{r2, r2}, issuer: i2, at: now,
			want: []wantAnchor{{r2, i2.Cert.NotAfter}, {r1, i1later.Cert.NotAfter}},
		},
		"expired current root dropped": {
			current: []*KeyPair{expiredRoot, r2}, issuer: i2, at: now,
			want: []wantAnchor{{r2, i2.Cert.NotAfter}},
		},
		"expired old root dropped": {
			prev:    []Anchor{a(expiredRoot, now.Add(day))},
			current: []*KeyPair{r2}, issuer: i2, at: now,
			want: []wantAnchor{{r2, i2.Cert.NotAfter}},
		},
		"no issuer": {
			current: []*KeyPair{r2}, at: now,
			want: []wantAnchor{{r2, r2.Cert.NotAfter}},
		},
		"nil entries ignored": {
			prev: []Anchor{{}, a(r1, i1.Cert.NotAfter)}, current: []*KeyPair{nil, r2}, issuer: i2, at: now,
			want: []wantAnchor{{r2, i2.Cert.NotAfter}, {r1, i1.Cert.NotAfter}},
		},
		"nothing at all": {
			at: now, want: nil,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var current []*x509.Certificate
			for _, kp := range tc.current {
				if kp == nil {
					current = append(current, nil)
				} else {
					current = append(current, kp.Cert)
				}
			}
			var issuer *x509.Certificate
			if tc.issuer != nil {
				issuer = tc.issuer.Cert
			}
			got := NextBundle(tc.prev, current, issuer, tc.at)
			checkAnchors(t, got, tc.want)

			// What was stored must come back as it was.
			pemBytes, state, err := EncodeBundle(got)
			if err != nil {
				t.Fatal(err)
			}
			back, err := DecodeBundle(pemBytes, state)
			if err != nil {
				t.Fatal(err)
			}
			checkAnchors(t, back, tc.want)
		})
	}
}

func TestEncodeBundle(t *testing.T) {
	r1 := mustRoot(t, 0, now)
	r2 := mustRoot(t, 0, now)
	last := time.Date(2027, 5, 1, 12, 0, 0, 0, time.FixedZone("CEST", 2*3600))

	pemBytes, state, err := EncodeBundle([]Anchor{{Cert: r1.Cert, LastIssuerNotAfter: last}, {Cert: r2.Cert, LastIssuerNotAfter: r2.Cert.NotAfter}})
	if err != nil {
		t.Fatal(err)
	}
	if string(pemBytes) != string(r1.CertPEM)+string(r2.CertPEM) {
		t.Error("bundle PEM is not the roots in order")
	}
	var doc []map[string]string
	if err := json.Unmarshal(state, &doc); err != nil {
		t.Fatalf("state is not a JSON list of string maps: %v\n%s", err, state)
	}
	if len(doc) != 2 || doc[0]["sha256"] != Fingerprint(r1.Cert) || doc[0]["lastIssuerNotAfter"] != "2027-05-01T10:00:00Z" ||
		doc[1]["sha256"] != Fingerprint(r2.Cert) || doc[1]["lastIssuerNotAfter"] != "2036-11-20T10:30:00Z" {
		t.Errorf("state %s", state)
	}

	if _, _, err := EncodeBundle([]Anchor{{Cert: r1.Cert}, {}}); err == nil || !strings.Contains(err.Error(), "anchor 1 has no certificate") {
		t.Errorf("nil certificate: got error %v", err)
	}
}

func TestDecodeBundle(t *testing.T) {
	r1 := mustRoot(t, 0, now)
	r2 := mustRoot(t, 0, now)
	last := now.Add(30 * day)
	state := func(entries ...string) []byte { return []byte("[" + strings.Join(entries, ",") + "]") }
	entry := func(fp string, t time.Time) string {
		return `{"sha256":"` + fp + `","lastIssuerNotAfter":"` + t.Format(time.RFC3339) + `"}`
	}
	bundle := concat(r1.CertPEM, r2.CertPEM)

	tests := map[string]struct {
		bundle, state []byte
		want          []wantAnchor
		wantErr       string
	}{
		"no bundle yet":       {bundle: nil, state: state(entry(Fingerprint(r1.Cert), last)), want: nil},
		"whitespace bundle":   {bundle: []byte("\n \n"), want: nil},
		"state for each root": {bundle: bundle, state: state(entry(Fingerprint(r2.Cert), last), entry(Fingerprint(r1.Cert), last.Add(time.Hour))), want: []wantAnchor{{r1, last.Add(time.Hour)}, {r2, last}}},
		"no state":            {bundle: bundle, state: nil, want: []wantAnchor{{r1, r1.Cert.NotAfter}, {r2, r2.Cert.NotAfter}}},
		"state for one root only": {
			bundle: bundle, state: state(entry(Fingerprint(r2.Cert), last)),
			want: []wantAnchor{{r1, r1.Cert.NotAfter}, {r2, last}},
		},
		"state for an unknown certificate ignored": {
			bundle: r1.CertPEM, state: state(entry(Fingerprint(r2.Cert), last)),
			want: []wantAnchor{{r1, r1.Cert.NotAfter}},
		},
		"uppercase fingerprint": {
			bundle: r1.CertPEM, state: state(entry(strings.ToUpper(Fingerprint(r1.Cert)), last)),
			want: []wantAnchor{{r1, last}},
		},
		"entry without a time counts as missing": {
			bundle: r1.CertPEM, state: state(`{"sha256":"` + Fingerprint(r1.Cert) + `"}`),
			want: []wantAnchor{{r1, r1.Cert.NotAfter}},
		},
		"duplicate certificates collapse": {
			bundle: concat(r1.CertPEM, r1.CertPEM), want: []wantAnchor{{r1, r1.Cert.NotAfter}},
		},
		"state that is not JSON": {
			bundle: bundle, state: []byte("{"), wantErr: "trust bundle state is not a JSON list|remove it to fall back",
		},
		"state with a bad time": {
			bundle: bundle, state: state(`{"sha256":"ab","lastIssuerNotAfter":"tomorrow"}`), wantErr: "trust bundle state",
		},
		"state with a time that cannot be written back": {
			bundle: bundle, state: state(`{"sha256":"ab","lastIssuerNotAfter":"0000-01-01T00:00:00+01:00"}`), wantErr: "lastIssuerNotAfter of ab is out of range",
		},
		"bundle that is not PEM": {
			bundle: []byte("garbage"), wantErr: "trust bundle PEM: no CERTIFICATE PEM block",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := DecodeBundle(tc.bundle, tc.state)
			checkErr(t, err, tc.wantErr)
			if err != nil {
				return
			}
			checkAnchors(t, got, tc.want)
		})
	}
}
