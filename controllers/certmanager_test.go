package controllers

import (
	"fmt"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/ca"
)

func certManagerMesh(name, namespace, issuer string, kind meshv1.IssuerKind) *meshv1.Mesh {
	m := newMesh(name, namespace)
	m.Spec.CA = meshv1.CASpec{CertManager: &meshv1.CertManagerCASpec{
		IssuerRef: meshv1.IssuerRef{Name: issuer, Kind: kind},
	}}
	return m
}

func TestCertManagerCA(t *testing.T) {
	const name, ns = "cm", "trellis-cm"
	issuer := &cmapi.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: "corp-ca"},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: "corp-ca"}}},
	}
	if err := k8sClient.Create(testCtx, issuer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(testCtx, issuer) })
	createMesh(t, certManagerMesh(name, ns, "corp-ca", meshv1.IssuerKindClusterIssuer))

	t.Run("Certificate asks for a CA", func(t *testing.T) {
		waitCondition(t, name, meshv1.CAReadyCondition, metav1.ConditionFalse, meshv1.CAPendingReason)
		c := &cmapi.Certificate{}
		if err := get(t, c, ns, CertificateName); err != nil {
			t.Fatal(err)
		}
		if !c.Spec.IsCA || c.Spec.SecretName != CASecretName || c.Spec.IssuerRef.Name != "corp-ca" || c.Spec.IssuerRef.Kind != "ClusterIssuer" {
			t.Errorf("Certificate spec %+v", c.Spec)
		}
		if c.Spec.Duration == nil || c.Spec.Duration.Duration != 8760*time.Hour || c.Spec.RenewBefore == nil || c.Spec.RenewBefore.Duration != 8760*time.Hour/3 {
			t.Errorf("duration %v renewBefore %v; want 8760h renewed at a third left", c.Spec.Duration, c.Spec.RenewBefore)
		}
		if len(c.Spec.URIs) != 1 || c.Spec.URIs[0] != "spiffe://cluster.local" {
			t.Errorf("URIs %v", c.Spec.URIs)
		}
		if c.Spec.PrivateKey == nil || c.Spec.PrivateKey.Algorithm != cmapi.ECDSAKeyAlgorithm {
			t.Errorf("private key %+v", c.Spec.PrivateKey)
		}
	})

	// Do what cert-manager's CA issuer would: sign the intermediate with the
	// organisation's root and write the Secret.
	now := time.Now()
	corpRoot, err := ca.NewRoot("corp.example", 5*365*24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := ca.NewIssuer(corpRoot, "cluster.local", 8760*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: CASecretName, Namespace: ns, Annotations: map[string]string{cmapi.CertificateNameKey: CertificateName}},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			"tls.crt": inter.CertPEM,
			"tls.key": inter.KeyPEM,
			"ca.crt":  corpRoot.CertPEM,
		},
	}
	if err := k8sClient.Create(testCtx, secret); err != nil {
		t.Fatal(err)
	}

	t.Run("issued Secret makes the CA ready", func(t *testing.T) {
		m := waitCondition(t, name, meshv1.CAReadyCondition, metav1.ConditionTrue, meshv1.CAIssuedReason)
		if m.Status.CA.IssuerNotAfter == nil || !m.Status.CA.IssuerNotAfter.Time.Equal(inter.Cert.NotAfter.Truncate(time.Second)) {
			t.Errorf("status.ca.issuerNotAfter %v, want %v", m.Status.CA.IssuerNotAfter, inter.Cert.NotAfter)
		}
		if m.Status.CA.RootNotAfter != nil {
			t.Errorf("status.ca.rootNotAfter %v: the organisation's root is not the mesh's to report", m.Status.CA.RootNotAfter)
		}
		eventually(t, "bundle holds the organisation's root", func() error {
			roots, err := bundleRoots(t, ns)
			if err != nil {
				return err
			}
			if len(roots) != 1 || !roots[0].Equal(corpRoot.Cert) {
				return fmt.Errorf("%d roots", len(roots))
			}
			return nil
		})
	})

	t.Run("a Secret that is not a CA is reported", func(t *testing.T) {
		leafKey, err := ca.NewRoot("leaf.example", 24*time.Hour, now) // any key pair that is not signed by the root
		if err != nil {
			t.Fatal(err)
		}
		if err := get(t, secret, ns, CASecretName); err != nil {
			t.Fatal(err)
		}
		secret.Data["tls.crt"], secret.Data["tls.key"] = leafKey.CertPEM, leafKey.KeyPEM
		if err := k8sClient.Update(testCtx, secret); err != nil {
			t.Fatal(err)
		}
		m := waitCondition(t, name, meshv1.CAReadyCondition, metav1.ConditionFalse, meshv1.CAInvalidReason)
		msg := meta.FindStatusCondition(m.Status.Conditions, meshv1.CAReadyCondition).Message
		if !strings.Contains(msg, CASecretName) {
			t.Errorf("message %q does not name the Secret", msg)
		}
	})
}

func TestCertManagerIssuerMissing(t *testing.T) {
	const name = "cm-missing"
	createMesh(t, certManagerMesh(name, "trellis-cm-missing", "nowhere", meshv1.IssuerKindIssuer))
	m := waitCondition(t, name, meshv1.CAReadyCondition, metav1.ConditionFalse, meshv1.CAIssuerNotFoundReason)
	msg := meta.FindStatusCondition(m.Status.Conditions, meshv1.CAReadyCondition).Message
	for _, want := range []string{"spec.ca.certManager.issuerRef.name", `"nowhere"`, "ClusterIssuer"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if err := condition(m, meshv1.ReadyCondition, metav1.ConditionFalse, meshv1.NotReadyReason); err != nil {
		t.Error(err)
	}
	if err := get(t, &cmapi.Certificate{}, "trellis-cm-missing", CertificateName); !apierrors.IsNotFound(err) {
		t.Errorf("a Certificate for an issuer that does not exist: %v", err)
	}
}
