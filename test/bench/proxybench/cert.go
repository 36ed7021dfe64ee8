package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"time"
)

// certFiles are the PEM files of a self-signed certificate in the run's
// directory.
type certFiles struct {
	cert   string // the certificate: what a client trusts
	key    string // its private key (PKCS #8)
	bundle string // the certificate then the key, as HAProxy's crt takes them
}

// writeSelfSigned makes a self-signed ECDSA P-256 certificate for dnsName
// and ips, valid for a day, and writes it as name.crt, name.key and
// name.pem.
func writeSelfSigned(env *benchEnv, name, dnsName string, ips ...net.IP) (certFiles, error) {
	var f certFiles
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return f, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: dnsName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // self-signed: it is its own issuer, which OpenSSL's verify wants marked
		DNSNames:              []string{dnsName},
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return f, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return f, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if f.cert, err = env.writeFile(name+".crt", certPEM); err != nil {
		return f, err
	}
	if f.key, err = env.writeFile(name+".key", keyPEM); err != nil {
		return f, err
	}
	f.bundle, err = env.writeFile(name+".pem", append(certPEM, keyPEM...))
	return f, err
}
