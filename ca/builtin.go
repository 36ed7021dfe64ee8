package ca

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"
)

// RenewalTime is when c should be replaced: once a third of its life
// remains. A third leaves time to retry a failed rotation many times, and for
// every peer to pick up the new certificate, before the old one expires.
func RenewalTime(c *x509.Certificate) time.Time {
	life := c.NotAfter.Sub(c.NotBefore)
	// life - life/3 rather than 2*life/3: the product overflows for
	// certificates valid for more than about 146 years.
	return c.NotBefore.Add(life - life/3)
}

// NeedsRenewal reports whether c has reached its RenewalTime at now.
func NeedsRenewal(c *x509.Certificate, now time.Time) bool {
	return !now.Before(RenewalTime(c))
}

// Shortest validities EnsureBuiltin accepts. Below them its own result would
// already need rotating: a root must keep MinSignerRemaining in the last
// third of its life, and an issuer shorter than an hour would churn every
// workload certificate for no benefit.
const (
	MinBuiltinRootValidity   = 3 * MinSignerRemaining
	MinBuiltinIssuerValidity = time.Hour
)

// BuiltinConfig configures the builtin CA. Zero validities select the
// defaults.
type BuiltinConfig struct {
	TrustDomain    string
	RootValidity   time.Duration
	IssuerValidity time.Duration
}

func (c BuiltinConfig) withDefaults() (BuiltinConfig, error) {
	if err := ValidateTrustDomain(c.TrustDomain); err != nil {
		return c, err
	}
	var err error
	if c.RootValidity, err = validityOrDefault("RootValidity", c.RootValidity, DefaultRootValidity); err != nil {
		return c, err
	}
	if c.IssuerValidity, err = validityOrDefault("IssuerValidity", c.IssuerValidity, DefaultIssuerValidity); err != nil {
		return c, err
	}
	if c.RootValidity < MinBuiltinRootValidity {
		return c, fmt.Errorf("RootValidity %s is too short: set it to at least %s", c.RootValidity, MinBuiltinRootValidity)
	}
	if c.IssuerValidity < MinBuiltinIssuerValidity {
		return c, fmt.Errorf("IssuerValidity %s is too short: set it to at least %s", c.IssuerValidity, MinBuiltinIssuerValidity)
	}
	return c, nil
}

// BuiltinResult is what the builtin CA Secret must hold now.
type BuiltinResult struct {
	// Data is the complete Secret data. Keys this package does not own are
	// carried over. When nothing had to change, every value is
	// byte-for-byte the input, so the caller can skip the update.
	Data   map[string][]byte
	Root   *KeyPair
	Issuer *KeyPair // Chain is [Root.Cert]
	// Actions says what changed and why, one sentence each, for Events;
	// empty when nothing changed.
	Actions []string
	// NextCheck is when EnsureBuiltin must run again at the latest: the
	// earliest moment the root or the issuer will need rotating.
	NextCheck time.Time
}

// EnsureBuiltin decides what the builtin CA Secret must hold at now, given
// what it holds (nil or empty when it does not exist).
//
// The root is created when missing or unusable (unparsable, not a
// self-signed CA, key missing or not matching) and rotated when
// NeedsRenewal, expired, or with less than MinSignerRemaining left. The
// issuer is (re)issued whenever the root was, and when it is missing,
// unusable, not signed by the root, for another trust domain, expired,
// outliving the root, or NeedsRenewal. A trust domain change keeps the root:
// the root's URI SAN does not constrain what it verifies, so workloads keep
// trusting each other during the change, and the next root rotation picks up
// the new name.
func EnsureBuiltin(data map[string][]byte, cfg BuiltinConfig, now time.Time) (*BuiltinResult, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("builtin CA config: %w", err)
	}
	// Action texts end with "valid until " and get the new NotAfter
	// appended; they are not format strings because they embed parse errors
	// of stored data, which may contain '%'.
	var actions []string

	root, rootProblem := loadRoot(data)
	rootNew := true
	var rootAction string
	switch {
	case root == nil && rootProblem == "":
		rootAction = "created root CA, valid until "
	case root == nil:
		rootAction = "re-created CA: " + rootProblem + "; new root valid until "
	default:
		if why := rootRotationReason(root.Cert, now); why != "" {
			rootAction = "rotated root: " + why + "; new root valid until "
		} else {
			rootNew = false
		}
	}
	if rootNew {
		if root, err = NewRoot(cfg.TrustDomain, cfg.RootValidity, now); err != nil {
			return nil, err
		}
		actions = append(actions, rootAction+formatTime(root.Cert.NotAfter))
	}

	var issuer *KeyPair
	var issuerAction string
	if rootNew {
		issuerAction = "issued issuer under the new root, valid until "
	} else {
		var problem string
		issuer, problem = loadIssuer(data, root.Cert, cfg.TrustDomain, now)
		switch {
		case issuer == nil && problem == "":
			issuerAction = "issued issuer, valid until "
		case issuer == nil:
			issuerAction = "replaced issuer: " + problem + "; new issuer valid until "
		case NeedsRenewal(issuer.Cert, now):
			issuerAction = "rotated issuer: a third of its life remained; new issuer valid until "
		}
	}
	issuerNew := issuerAction != ""
	if issuerNew {
		if issuer, err = NewIssuer(root, cfg.TrustDomain, cfg.IssuerValidity, now); err != nil {
			return nil, err
		}
		actions = append(actions, issuerAction+formatTime(issuer.Cert.NotAfter))
	}

	out := make(map[string][]byte, len(data)+5)
	for k, v := range data {
		out[k] = bytes.Clone(v)
	}
	// Stored values are compared by meaning, not bytes, so that PEM written
	// by an older Go version or by hand is not rewritten on every pass.
	var repaired []string
	for _, e := range []struct {
		key   string
		certs []*x509.Certificate // the certificates the value must hold, or nil for a key
		priv  *KeyPair            // whose private key the value must hold
		fresh bool                // the value belongs to a newly made key pair, so rewriting it is expected
	}{
		{key: RootCertKey, certs: []*x509.Certificate{root.Cert}, fresh: rootNew},
		{key: RootKeyKey, priv: root, fresh: rootNew},
		{key: IssuerCertKey, certs: []*x509.Certificate{issuer.Cert, root.Cert}, fresh: issuerNew},
		{key: IssuerKeyKey, priv: issuer, fresh: issuerNew},
		{key: BundleKey, certs: []*x509.Certificate{root.Cert}, fresh: rootNew},
	} {
		if e.certs != nil {
			if e.fresh || !holdsCertificates(data[e.key], e.certs) {
				out[e.key] = EncodeCertificates(e.certs...)
			}
		} else if e.fresh || !holdsKey(data[e.key], e.priv.Key) {
			out[e.key] = bytes.Clone(e.priv.KeyPEM)
		}
		if !e.fresh && !bytes.Equal(out[e.key], data[e.key]) {
			repaired = append(repaired, e.key)
		}
	}
	if len(repaired) > 0 {
		actions = append(actions, fmt.Sprintf("rewrote %s to hold the current root and issuer", strings.Join(repaired, ", ")))
	}

	return &BuiltinResult{
		Data:    out,
		Root:    root,
		Issuer:  issuer,
		Actions: actions,
		NextCheck: slices.MinFunc([]time.Time{
			RenewalTime(root.Cert),
			root.Cert.NotAfter.Add(-MinSignerRemaining),
			RenewalTime(issuer.Cert),
		}, time.Time.Compare),
	}, nil
}

// loadRoot returns the usable root held by data; or nil and "" when there is
// none; or nil and why the one there cannot be used.
func loadRoot(data map[string][]byte) (*KeyPair, string) {
	certPEM := data[RootCertKey]
	if len(certPEM) == 0 {
		return nil, ""
	}
	certs, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Sprintf("Secret held unparsable data in %s (%v)", RootCertKey, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Sprintf("%s held %d certificates instead of only the root", RootCertKey, len(certs))
	}
	cert := certs[0]
	if !isCA(cert) || !isSelfSigned(cert) {
		return nil, fmt.Sprintf("%s held a certificate that is not a self-signed CA", RootCertKey)
	}
	if len(data[RootKeyKey]) == 0 {
		return nil, fmt.Sprintf("Secret has no %s", RootKeyKey)
	}
	key, err := parsePrivateKey(data[RootKeyKey])
	if err != nil {
		return nil, fmt.Sprintf("Secret held unparsable data in %s (%v)", RootKeyKey, err)
	}
	if !keyMatches(cert, key) {
		return nil, fmt.Sprintf("%s does not match %s", RootKeyKey, RootCertKey)
	}
	kp, err := newKeyPair(cert, key, nil)
	if err != nil {
		return nil, fmt.Sprintf("%s cannot be used (%v)", RootKeyKey, err)
	}
	return kp, ""
}

func rootRotationReason(c *x509.Certificate, now time.Time) string {
	switch {
	case !now.Before(c.NotAfter):
		return "it expired at " + formatTime(c.NotAfter)
	case NeedsRenewal(c, now):
		return "a third of its life remained"
	case c.NotAfter.Sub(now) < MinSignerRemaining:
		return fmt.Sprintf("less than %s of its life remained", MinSignerRemaining)
	}
	return ""
}

// loadIssuer returns the usable issuer held by data, signed by root and for
// trustDomain; or nil and "" when there is none; or nil and why the one
// there cannot be used. Renewal is left to the caller.
func loadIssuer(data map[string][]byte, root *x509.Certificate, trustDomain string, now time.Time) (*KeyPair, string) {
	certPEM := data[IssuerCertKey]
	if len(certPEM) == 0 {
		return nil, ""
	}
	certs, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Sprintf("Secret held unparsable data in %s (%v)", IssuerCertKey, err)
	}
	cert := certs[0]
	if len(data[IssuerKeyKey]) == 0 {
		return nil, fmt.Sprintf("Secret has no %s", IssuerKeyKey)
	}
	key, err := parsePrivateKey(data[IssuerKeyKey])
	if err != nil {
		return nil, fmt.Sprintf("Secret held unparsable data in %s (%v)", IssuerKeyKey, err)
	}
	if !keyMatches(cert, key) {
		return nil, fmt.Sprintf("%s does not match %s", IssuerKeyKey, IssuerCertKey)
	}
	if !isCA(cert) {
		return nil, fmt.Sprintf("%s held a certificate that is not a CA", IssuerCertKey)
	}
	if cert.CheckSignatureFrom(root) != nil {
		return nil, "it was not signed by the root"
	}
	if want := spiffeScheme + trustDomain; len(cert.URIs) != 1 || cert.URIs[0].String() != want {
		return nil, fmt.Sprintf("its URI SAN is %s, want %s", uriList(cert), want)
	}
	if !now.Before(cert.NotAfter) {
		return nil, "it expired at " + formatTime(cert.NotAfter)
	}
	if cert.NotAfter.After(root.NotAfter) {
		return nil, "it outlives the root"
	}
	kp, err := newKeyPair(cert, key, []*x509.Certificate{root})
	if err != nil {
		return nil, fmt.Sprintf("%s cannot be used (%v)", IssuerKeyKey, err)
	}
	return kp, ""
}

func uriList(c *x509.Certificate) string {
	if len(c.URIs) == 0 {
		return "empty"
	}
	s := make([]string, len(c.URIs))
	for i, u := range c.URIs {
		s[i] = u.String()
	}
	return strings.Join(s, ", ")
}

func holdsCertificates(pemBytes []byte, want []*x509.Certificate) bool {
	got, err := ParseCertificates(pemBytes)
	return err == nil && slices.EqualFunc(got, want, (*x509.Certificate).Equal)
}

func holdsKey(pemBytes []byte, want crypto.Signer) bool {
	got, err := parsePrivateKey(pemBytes)
	if err != nil {
		return false
	}
	pub, ok := got.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(want.Public())
}
