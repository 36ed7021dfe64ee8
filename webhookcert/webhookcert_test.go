package webhookcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/trellis-mesh/trellis/test/testenv"
)

var k8sClient client.Client

func TestMain(m *testing.M) {
	env, _, c, err := testenv.Start(testenv.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	k8sClient = c
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

func webhookConfig(name string) *admissionregistrationv1.ValidatingWebhookConfiguration {
	none := admissionregistrationv1.SideEffectClassNone
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    "vmesh.trellis.dev",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Namespace: "trellis-operator", Name: "trellis-webhook-service", Path: ptr.To("/x")}},
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
}

func TestProvisioner(t *testing.T) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "trellis-operator"}}
	if err := k8sClient.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if err := k8sClient.Create(ctx, webhookConfig("trellis-validating-webhook-configuration")); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	p := &Provisioner{
		Client: k8sClient, Namespace: "trellis-operator", ServiceName: "trellis-webhook-service",
		SecretName: "trellis-webhook-serving", CertDir: filepath.Join(t.TempDir(), "certs"),
		ValidatingWebhooks: []string{"trellis-validating-webhook-configuration"},
		Now:                func() time.Time { return now },
	}
	if HasExternalCertificate(p.CertDir) {
		t.Fatal("an empty directory counted as an external certificate")
	}

	if err := p.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "trellis-operator", Name: "trellis-webhook-serving"}, secret); err != nil {
		t.Fatal(err)
	}
	firstCert := secret.Data["tls.crt"]

	t.Run("files serve the Service's name, verified by the caBundle", func(t *testing.T) {
		pair, err := tls.LoadX509KeyPair(filepath.Join(p.CertDir, "tls.crt"), filepath.Join(p.CertDir, "tls.key"))
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(pair.Certificate[0])
		cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: "trellis-validating-webhook-configuration"}, cfg); err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.Webhooks[0].ClientConfig.CABundle) {
			t.Fatal("no caBundle set")
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "trellis-webhook-service.trellis-operator.svc"}); err != nil {
			t.Errorf("the API server would not trust the webhook: %v", err)
		}
		if !HasExternalCertificate(p.CertDir) {
			t.Error("written files not recognised")
		}
	})

	t.Run("a second run changes nothing", func(t *testing.T) {
		if err := p.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
		again := &corev1.Secret{}
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(secret), again); err != nil {
			t.Fatal(err)
		}
		if again.ResourceVersion != secret.ResourceVersion {
			t.Error("Secret rewritten without need")
		}
	})

	t.Run("a caBundle reset by kubectl apply is put back", func(t *testing.T) {
		cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: "trellis-validating-webhook-configuration"}, cfg); err != nil {
			t.Fatal(err)
		}
		cfg.Webhooks[0].ClientConfig.CABundle = nil
		if err := k8sClient.Update(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		if err := p.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(cfg), cfg); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(cfg.Webhooks[0].ClientConfig.CABundle, secret.Data["ca.crt"]) {
			t.Error("caBundle not restored")
		}
	})

	t.Run("renewed at two thirds of its life, under the same CA", func(t *testing.T) {
		now = now.Add(250 * 24 * time.Hour)
		if err := p.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
		renewed := &corev1.Secret{}
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(secret), renewed); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(renewed.Data["tls.crt"], firstCert) {
			t.Error("serving certificate not renewed")
		}
		if !bytes.Equal(renewed.Data["ca.crt"], secret.Data["ca.crt"]) {
			t.Error("CA replaced: API servers holding the old caBundle would reject the webhook")
		}
		onDisk, _ := os.ReadFile(filepath.Join(p.CertDir, "tls.crt"))
		if !bytes.Equal(onDisk, renewed.Data["tls.crt"]) {
			t.Error("renewed certificate not written for the webhook server")
		}
	})
}
