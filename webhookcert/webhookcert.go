package webhookcert

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// Validity of what the Provisioner makes. The serving certificate is renewed
// when a third of its life remains; the CA outlives many of them.
const (
	caValidity      = 10 * 365 * 24 * time.Hour
	servingValidity = 365 * 24 * time.Hour
)

// The operator's rights for this: its own namespace's serving-certificate
// Secret, and the caBundle of its own webhook configurations.
// +kubebuilder:rbac:groups="",namespace=system,resources=secrets,verbs=create
// +kubebuilder:rbac:groups="",namespace=system,resources=secrets,resourceNames=trellis-webhook-serving,verbs=get;update
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,resourceNames=trellis-validating-webhook-configuration,verbs=get;update;patch

// Provisioner keeps the webhook serving certificate.
type Provisioner struct {
	// Client reads and writes the Secret and the webhook configurations; an
	// uncached client, as this runs before the manager's caches start.
	Client client.Client
	// Namespace and ServiceName are the webhook Service's: the certificate's names.
	Namespace   string
	ServiceName string
	// SecretName holds ca.crt, tls.crt and tls.key.
	SecretName string
	// CertDir is where the webhook server reads tls.crt and tls.key.
	CertDir string
	// ValidatingWebhooks and MutatingWebhooks name the configurations whose caBundle to set.
	ValidatingWebhooks []string
	MutatingWebhooks   []string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// HasExternalCertificate reports whether dir already holds a serving
// certificate, mounted by cert-manager or OLM.
func HasExternalCertificate(dir string) bool {
	for _, f := range []string{"tls.crt", "tls.key"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			return false
		}
	}
	return true
}

func (p *Provisioner) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// Ensure makes the Secret hold a valid CA and serving certificate, writes the
// certificate files, and sets the caBundle of the webhook configurations.
func (p *Provisioner) Ensure(ctx context.Context) error {
	secret, err := p.ensureSecret(ctx)
	if err != nil {
		return err
	}
	if err := p.writeFiles(secret); err != nil {
		return err
	}
	return p.injectCABundle(ctx, secret.Data["ca.crt"])
}

// NeedLeaderElection is false: every operator replica serves webhooks and
// needs the certificate files.
func (p *Provisioner) NeedLeaderElection() bool { return false }

// Start re-checks every minute until ctx ends, so a certificate is renewed
// before it expires and a caBundle reset by `kubectl apply` is put back.
func (p *Provisioner) Start(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := p.Ensure(ctx); err != nil {
				log.FromContext(ctx).Error(err, "keeping the webhook serving certificate")
			}
		}
	}
}

func (p *Provisioner) ensureSecret(ctx context.Context) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	err := p.Client.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: p.SecretName}, secret)
	switch {
	case apierrors.IsNotFound(err):
		secret = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: p.SecretName, Namespace: p.Namespace,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "trellis-operator"}},
			Type: corev1.SecretTypeTLS,
		}
	case err != nil:
		return nil, fmt.Errorf("reading Secret %s/%s: %w", p.Namespace, p.SecretName, err)
	}
	if p.valid(secret.Data) {
		return secret, nil
	}
	data, err := p.issue(secret.Data)
	if err != nil {
		return nil, err
	}
	secret.Data = data
	if secret.ResourceVersion == "" {
		err = p.Client.Create(ctx, secret)
	} else {
		err = p.Client.Update(ctx, secret)
	}
	if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
		// Another replica wrote it first: use theirs.
		if err := p.Client.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: p.SecretName}, secret); err != nil {
			return nil, err
		}
		return secret, nil
	}
	if err != nil {
		return nil, fmt.Errorf("writing Secret %s/%s: %w", p.Namespace, p.SecretName, err)
	}
	log.FromContext(ctx).Info("issued the webhook serving certificate", "secret", p.Namespace+"/"+p.SecretName)
	return secret, nil
}

func (p *Provisioner) dnsNames() []string {
	svc := p.ServiceName + "." + p.Namespace + ".svc"
	return []string{svc, svc + ".cluster.local"}
}

// valid is true when data holds a CA and a serving certificate it signed,
// for the Service's names, with more than a third of its life left.
func (p *Provisioner) valid(data map[string][]byte) bool {
	caCert, err := parseCert(data["ca.crt"])
	if err != nil {
		return false
	}
	pair, err := tls.X509KeyPair(data["tls.crt"], data["tls.key"])
	if err != nil {
		return false
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return false
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	now := p.now()
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: p.dnsNames()[0], CurrentTime: now}); err != nil {
		return false
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return now.Before(leaf.NotAfter.Add(-life/3)) && now.Before(caCert.NotAfter.Add(-servingValidity))
}

// issue makes a serving certificate, from the existing CA when it is still
// good, so the caBundle of running API servers keeps verifying.
func (p *Provisioner) issue(old map[string][]byte) (map[string][]byte, error) {
	now := p.now()
	caCert, caKey := parseCAPair(old["ca.crt"], old["ca.key"])
	if caCert == nil || now.After(caCert.NotAfter.Add(-servingValidity)) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber:          serial(),
			Subject:               pkix.Name{CommonName: "trellis-operator-webhook-ca"},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(caValidity),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			return nil, err
		}
		caCert, _ = x509.ParseCertificate(der)
		caKey = key
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: p.dnsNames()[0]},
		DNSNames:     p.dnsNames(),
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(servingValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	caKeyDER, err := x509.MarshalPKCS8PrivateKey(caKey)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		"ca.crt":  pemBlock("CERTIFICATE", caCert.Raw),
		"ca.key":  pemBlock("PRIVATE KEY", caKeyDER),
		"tls.crt": pemBlock("CERTIFICATE", der),
		"tls.key": pemBlock("PRIVATE KEY", keyDER),
	}, nil
}

// writeFiles puts tls.crt and tls.key where the webhook server reads them,
// each replaced whole (write, then rename) so a reload never sees half.
func (p *Provisioner) writeFiles(secret *corev1.Secret) error {
	if err := os.MkdirAll(p.CertDir, 0o700); err != nil {
		return err
	}
	for _, name := range []string{"tls.key", "tls.crt"} {
		path := filepath.Join(p.CertDir, name)
		if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, secret.Data[name]) {
			continue
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, secret.Data[name], 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return nil
}

func (p *Provisioner) injectCABundle(ctx context.Context, caPEM []byte) error {
	var configs []client.Object
	for _, name := range p.ValidatingWebhooks {
		configs = append(configs, &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}})
	}
	for _, name := range p.MutatingWebhooks {
		configs = append(configs, &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}})
	}
	for _, cfg := range configs {
		kind := fmt.Sprintf("%T", cfg)[len("*v1."):]
		if err := p.Client.Get(ctx, client.ObjectKeyFromObject(cfg), cfg); err != nil {
			return fmt.Errorf("reading %s %s: %w", kind, cfg.GetName(), err)
		}
		patch := client.MergeFrom(cfg.DeepCopyObject().(client.Object))
		if !setCABundles(cfg, caPEM) {
			continue
		}
		if err := p.Client.Patch(ctx, cfg, patch); err != nil {
			return fmt.Errorf("setting the caBundle of %s %s: %w", kind, cfg.GetName(), err)
		}
	}
	return nil
}

// setCABundles sets the caBundle of every webhook of a configuration and
// reports whether any changed.
func setCABundles(cfg client.Object, caPEM []byte) bool {
	var bundles []*[]byte
	switch c := cfg.(type) {
	case *admissionregistrationv1.ValidatingWebhookConfiguration:
		for i := range c.Webhooks {
			bundles = append(bundles, &c.Webhooks[i].ClientConfig.CABundle)
		}
	case *admissionregistrationv1.MutatingWebhookConfiguration:
		for i := range c.Webhooks {
			bundles = append(bundles, &c.Webhooks[i].ClientConfig.CABundle)
		}
	}
	changed := false
	for _, b := range bundles {
		if !bytes.Equal(*b, caPEM) {
			*b = caPEM
			changed = true
		}
	}
	return changed
}

func parseCert(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("no certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func parseCAPair(certPEM, keyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey) {
	cert, err := parseCert(certPEM)
	if err != nil || !cert.IsCA {
		return nil, nil
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, nil
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil
	}
	return cert, key
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}
