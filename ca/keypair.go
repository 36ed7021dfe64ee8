package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"
)

// Keys of the builtin CA Secret. The issuer keys match those cert-manager
// writes into a Certificate's Secret, so the control plane can mount either.
const (
	RootCertKey   = "root.crt"
	RootKeyKey    = "root.key"
	IssuerCertKey = "tls.crt"
	IssuerKeyKey  = "tls.key"
	BundleKey     = "ca.crt"
)

// A zero validity passed to any function of this package selects these.
const (
	DefaultRootValidity     = 10 * 365 * 24 * time.Hour
	DefaultIssuerValidity   = 365 * 24 * time.Hour
	DefaultWorkloadValidity = 24 * time.Hour
)

const (
	// ClockSkew is how far NotBefore is backdated, so that a certificate is
	// already valid on a peer whose clock is a little behind ours.
	ClockSkew = 5 * time.Minute

	// MinSignerRemaining is the least life a root must have left to sign an
	// issuer: an issuer that dies within the hour would be rotated again at
	// once and its workloads with it.
	MinSignerRemaining = time.Hour
)

const organization = "trellis"

// ErrKeyMismatch is wrapped by every error reporting a private key that does
// not belong to its certificate.
var ErrKeyMismatch = errors.New("private key does not match the certificate's public key")

// ErrNoCertificates is wrapped when PEM data holds no certificate at all.
var ErrNoCertificates = errors.New("no CERTIFICATE PEM block found")

// KeyPair is a certificate with its private key.
type KeyPair struct {
	Cert *x509.Certificate
	Key  crypto.Signer // *ecdsa.PrivateKey for everything this package creates
	// Chain holds the certificates that followed Cert in its PEM, in order
	// (intermediates, possibly ending with the root). For an issuer made by
	// NewIssuer it is the root followed by the root's own Chain.
	Chain []*x509.Certificate
	// CertPEM is Cert alone; see FullChainPEM for Cert followed by Chain.
	CertPEM []byte
	// KeyPEM is always PKCS#8 ("PRIVATE KEY"), whatever form was parsed, so
	// consumers need to handle one format only.
	KeyPEM []byte
}

// FullChainPEM returns Cert followed by Chain, the form of tls.crt.
func (kp *KeyPair) FullChainPEM() []byte {
	return EncodeCertificates(append([]*x509.Certificate{kp.Cert}, kp.Chain...)...)
}

func newKeyPair(cert *x509.Certificate, key crypto.Signer, chain []*x509.Certificate) (*KeyPair, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key as PKCS#8: %w", err)
	}
	return &KeyPair{
		Cert:    cert,
		Key:     key,
		Chain:   chain,
		CertPEM: EncodeCertificates(cert),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
	}, nil
}

// NewRoot creates a self-signed ECDSA P-256 root CA for trustDomain, valid
// from now-ClockSkew until now+validity. A zero validity means
// DefaultRootValidity.
func NewRoot(trustDomain string, validity time.Duration, now time.Time) (*KeyPair, error) {
	if err := ValidateTrustDomain(trustDomain); err != nil {
		return nil, err
	}
	validity, err := validityOrDefault("root validity", validity, DefaultRootValidity)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{organization},
			CommonName:   "Trellis root CA " + trustDomain,
		},
		URIs:      []*url.URL{trustDomainURI(trustDomain)},
		NotBefore: now.Add(-ClockSkew),
		NotAfter:  now.Add(validity),
		KeyUsage:  x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		// Path length 1 leaves room for exactly the issuer below the root.
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("signing root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the root certificate just signed: %w", err)
	}
	return newKeyPair(cert, key, nil)
}

// NewIssuer creates the ECDSA P-256 intermediate that signs workloads, signed
// by root. It never outlives root: NotAfter is the earlier of now+validity and
// root's NotAfter. A zero validity means DefaultIssuerValidity.
func NewIssuer(root *KeyPair, trustDomain string, validity time.Duration, now time.Time) (*KeyPair, error) {
	if err := ValidateTrustDomain(trustDomain); err != nil {
		return nil, err
	}
	validity, err := validityOrDefault("issuer validity", validity, DefaultIssuerValidity)
	if err != nil {
		return nil, err
	}
	if err := checkSigner(root, "root"); err != nil {
		return nil, err
	}
	if !now.Before(root.Cert.NotAfter) {
		return nil, fmt.Errorf("root CA %q expired at %s: rotate the root before issuing an issuer", root.Cert.Subject.CommonName, formatTime(root.Cert.NotAfter))
	}
	if left := root.Cert.NotAfter.Sub(now); left < MinSignerRemaining {
		return nil, fmt.Errorf("root CA %q expires at %s, only %s from now (an issuer needs at least %s): rotate the root first",
			root.Cert.Subject.CommonName, formatTime(root.Cert.NotAfter), left.Round(time.Second), MinSignerRemaining)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating issuer key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{organization},
			CommonName:   "Trellis issuer CA " + trustDomain,
		},
		URIs:                  []*url.URL{trustDomainURI(trustDomain)},
		NotBefore:             maxTime(now.Add(-ClockSkew), root.Cert.NotBefore),
		NotAfter:              minTime(now.Add(validity), root.Cert.NotAfter),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The issuer signs leaves only; a further CA below it would be a
		// signer the operator does not rotate.
		MaxPathLen:     0,
		MaxPathLenZero: true,
		SubjectKeyId:   skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, key.Public(), root.Key)
	if err != nil {
		return nil, fmt.Errorf("signing issuer certificate with root %q: %w", root.Cert.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the issuer certificate just signed: %w", err)
	}
	chain := append([]*x509.Certificate{root.Cert}, root.Chain...)
	return newKeyPair(cert, key, chain)
}

// ParseKeyPair parses a certificate PEM and its private key PEM and checks
// that they belong together. The first certificate becomes Cert and any
// further ones Chain, in order. The key may be PKCS#8, SEC1 ("EC PRIVATE
// KEY", optionally after an "EC PARAMETERS" block) or PKCS#1 RSA; the first
// key block is used. Validity and CA-ness are not checked here.
func ParseKeyPair(certPEM, keyPEM []byte) (*KeyPair, error) {
	certs, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	if !keyMatches(certs[0], key) {
		return nil, ErrKeyMismatch
	}
	return newKeyPair(certs[0], key, certs[1:])
}

var pemBegin = []byte("-----BEGIN")

// ParseCertificates parses every CERTIFICATE block of pemBytes, in order.
// Text outside the blocks is allowed, as in bundles that annotate each
// certificate; a block of another type, a block that does not decode (e.g.
// truncated) or data with no certificate at all is an error, because
// silently dropping a certificate from a trust bundle breaks TLS in ways
// that are hard to trace back.
func ParseCertificates(pemBytes []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := pemBytes
	for n := 1; ; n++ {
		block, next := pem.Decode(rest)
		if block == nil {
			if bytes.Contains(rest, pemBegin) {
				return nil, fmt.Errorf("PEM block %d is malformed (truncated or corrupted)", n)
			}
			break
		}
		// pem.Decode skips over a block it cannot decode and returns the
		// next good one; a second BEGIN in what it consumed is that skip.
		if bytes.Count(rest[:len(rest)-len(next)], pemBegin) > 1 {
			return nil, fmt.Errorf("PEM block %d is malformed (truncated or corrupted)", n)
		}
		rest = next
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q, want CERTIFICATE", n, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, ErrNoCertificates
	}
	return certs, nil
}

// EncodeCertificates returns the PEM of certs, in order; nil entries are
// skipped.
func EncodeCertificates(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		if c == nil {
			continue
		}
		// Writing to a bytes.Buffer cannot fail.
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

func parsePrivateKey(keyPEM []byte) (crypto.Signer, error) {
	rest := keyPEM
	for {
		block, next := pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no private key PEM block found (want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)")
		}
		rest = next
		if _, ok := block.Headers["Proc-Type"]; ok {
			return nil, fmt.Errorf("%s block is encrypted; store the key unencrypted", block.Type)
		}
		var key any
		var err error
		switch block.Type {
		case "EC PARAMETERS":
			// openssl ecparam -genkey writes the curve before the key.
			continue
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("ENCRYPTED PRIVATE KEY block is encrypted; store the key unencrypted")
		default:
			return nil, fmt.Errorf("PEM block is %q, want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("%s block: %w", block.Type, err)
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
			return k.(crypto.Signer), nil
		default:
			return nil, fmt.Errorf("%s block holds a %T, which cannot sign certificates; use an ECDSA, RSA or Ed25519 key", block.Type, key)
		}
	}
}

func keyMatches(cert *x509.Certificate, key crypto.Signer) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

// isCA reports whether c may sign certificates. KeyUsageCertSign is required
// even though RFC 5280 lets a certificate without the extension sign,
// because every CA we accept is made by us or by cert-manager, which both set
// it, so its absence means the wrong certificate was supplied.
func isCA(c *x509.Certificate) bool {
	return c.BasicConstraintsValid && c.IsCA && c.KeyUsage&x509.KeyUsageCertSign != 0
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

func checkSigner(kp *KeyPair, what string) error {
	if kp == nil || kp.Cert == nil || kp.Key == nil {
		return fmt.Errorf("%s key pair is missing its certificate or key", what)
	}
	if !isCA(kp.Cert) {
		return fmt.Errorf("%s certificate %q is not a CA (it needs basic constraints CA:TRUE and key usage cert sign)", what, kp.Cert.Subject.CommonName)
	}
	if !keyMatches(kp.Cert, kp.Key) {
		return fmt.Errorf("%s: %w", what, ErrKeyMismatch)
	}
	return nil
}

func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generating serial number: %w", err)
		}
		// RFC 5280 forbids a zero serial.
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// subjectKeyID follows RFC 7093 method 1 (leftmost 160 bits of the SHA-256
// of the public key bits), so the value does not depend on which Go version
// would otherwise have picked SHA-1 or SHA-256.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	var spki struct {
		Algorithm        pkix.AlgorithmIdentifier
		SubjectPublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("decoding public key: %w", err)
	}
	sum := sha256.Sum256(spki.SubjectPublicKey.Bytes)
	return sum[:20], nil
}

func validityOrDefault(what string, v, def time.Duration) (time.Duration, error) {
	switch {
	case v == 0:
		return def, nil
	case v < 0:
		return 0, fmt.Errorf("%s is %s: it must be positive (or zero for the default, %s)", what, v, def)
	}
	return v, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// formatTime is the one time format of messages, so Events read alike.
func formatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}
