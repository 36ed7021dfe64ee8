package controllers

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"maps"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/ca"
	"github.com/trellis-mesh/trellis/membership"
	"github.com/trellis-mesh/trellis/validation"
)

// slowRetry is how soon the operator looks again at a CA that waits on
// something outside its reach (an issuer to be created, cert-manager to be
// installed): often enough to notice, rarely enough not to spin.
const slowRetry = 2 * time.Minute

// reconcileCA ensures the mesh's signing intermediate and records it in obs.
// It returns how soon the CA must be looked at again.
func (r *MeshReconciler) reconcileCA(ctx context.Context, mesh *meshv1.Mesh, obs *observation) (time.Duration, error) {
	if mesh.Spec.CA.CertManager != nil {
		return r.reconcileCertManagerCA(ctx, mesh, obs)
	}
	return r.reconcileBuiltinCA(ctx, mesh, obs)
}

func (r *MeshReconciler) reconcileBuiltinCA(ctx context.Context, mesh *meshv1.Mesh, obs *observation) (time.Duration, error) {
	// Coming back from certManager mode: cert-manager must stop writing the
	// Secret. The cache says whether there is a Certificate to delete, so a
	// builtin Mesh costs no API call here.
	if r.CertManager {
		cert := newCertificateKey(mesh)
		if err := r.Get(ctx, client.ObjectKeyFromObject(cert), cert); err == nil {
			if err := r.deleteIfExists(ctx, cert); err != nil {
				return 0, err
			}
		} else if !apierrors.IsNotFound(err) {
			return 0, fmt.Errorf("reading Certificate %s/%s: %w", mesh.Spec.Namespace, CertificateName, err)
		}
	}
	secret, err := r.caSecret(ctx, mesh)
	if err != nil {
		return 0, err
	}
	var data map[string][]byte
	if secret != nil {
		data = secret.Data
	}
	b := mesh.Spec.CA.Builtin
	if b == nil {
		b = &meshv1.BuiltinCASpec{}
	}
	cfg := ca.BuiltinConfig{
		TrustDomain:    mesh.Spec.TrustDomain,
		RootValidity:   durationOr(b.RootValidity, ca.DefaultRootValidity),
		IssuerValidity: durationOr(b.IssuerValidity, ca.DefaultIssuerValidity),
	}
	now := r.Now()
	res, err := ca.EnsureBuiltin(data, cfg, now)
	if err != nil {
		return 0, fmt.Errorf("builtin CA of Mesh %s: %w", mesh.Name, err)
	}
	if secret == nil || !sameData(secret.Data, res.Data) || secret.Type != corev1.SecretTypeTLS {
		ac := corev1ac.Secret(CASecretName, mesh.Spec.Namespace).
			WithType(corev1.SecretTypeTLS).
			WithLabels(ownedLabels(mesh)).
			WithOwnerReferences(ownerReference(mesh)).
			WithData(res.Data)
		if err := r.apply(ctx, ac); err != nil {
			return 0, err
		}
	}
	for _, a := range res.Actions {
		r.Recorder.Eventf(mesh, nil, corev1.EventTypeNormal, "CARotated", "RotateCA", "%s", a)
	}
	obs.ca.issuer, obs.ca.root = res.Issuer.Cert, res.Root.Cert
	obs.ca.roots = []*x509.Certificate{res.Root.Cert}
	return requeueBefore(res.NextCheck, now), nil
}

func (r *MeshReconciler) reconcileCertManagerCA(ctx context.Context, mesh *meshv1.Mesh, obs *observation) (time.Duration, error) {
	if !r.CertManager {
		obs.ca.reason = meshv1.CertManagerNotInstalledReason
		obs.ca.message = "spec.ca.certManager is set but cert-manager's CRDs were not installed when the operator started; install cert-manager and restart the operator, or use spec.ca.builtin"
		return slowRetry, nil
	}
	missing, err := validation.IssuerExists(ctx, r.Client, mesh)
	if err != nil {
		return 0, err
	}
	if missing != nil {
		obs.ca.reason, obs.ca.message = meshv1.CAIssuerNotFoundReason, missing.Error()
		return slowRetry, nil
	}

	// Coming from builtin mode, the Secret holds the operator's root and its
	// key: remove it so cert-manager writes a clean one. The trust bundle keeps
	// the old root for as long as certificates it signed may be valid.
	secret, err := r.caSecret(ctx, mesh)
	if err != nil {
		return 0, err
	}
	if secret != nil && len(secret.Data[ca.RootKeyKey]) > 0 {
		if err := r.Delete(ctx, secret); client.IgnoreNotFound(err) != nil {
			return 0, fmt.Errorf("deleting the builtin CA Secret before cert-manager issues: %w", err)
		}
		secret = nil
	}

	ac, err := certificateApplyConfiguration(mesh)
	if err != nil {
		return 0, err
	}
	if err := r.apply(ctx, ac); err != nil {
		return 0, err
	}
	if secret == nil {
		obs.ca.reason = meshv1.CAPendingReason
		obs.ca.message = fmt.Sprintf("waiting for cert-manager to issue Certificate %s/%s into Secret %s", mesh.Spec.Namespace, CertificateName, CASecretName)
		// The Secret's creation is watched; this is only a backstop.
		return slowRetry, nil
	}
	now := r.Now()
	issuer, roots, err := ca.ParseIssued(secret.Data, now)
	if err != nil {
		obs.ca.reason = meshv1.CAInvalidReason
		obs.ca.message = fmt.Sprintf("Secret %s/%s written by cert-manager: %v", mesh.Spec.Namespace, CASecretName, err)
		return slowRetry, nil
	}
	obs.ca.issuer, obs.ca.roots = issuer.Cert, roots
	// cert-manager renews the intermediate itself; look again at its renewal
	// time in case it did not.
	return requeueBefore(ca.RenewalTime(issuer.Cert), now), nil
}

// certificateApplyConfiguration is the cert-manager Certificate of the mesh's
// signing intermediate, written with cert-manager's own types.
func certificateApplyConfiguration(mesh *meshv1.Mesh) (runtime.ApplyConfiguration, error) {
	cm := mesh.Spec.CA.CertManager
	validity := durationOr(cm.IssuerValidity, ca.DefaultIssuerValidity)
	kind := string(cm.IssuerRef.Kind)
	if kind == "" {
		kind = string(meshv1.IssuerKindIssuer)
	}
	group := cm.IssuerRef.Group
	if group == "" {
		group = validation.CertManagerGroup
	}
	cert := newCertificate()
	cert.Name, cert.Namespace = CertificateName, mesh.Spec.Namespace
	cert.Labels = ownedLabels(mesh)
	cert.OwnerReferences = []metav1.OwnerReference{{
		APIVersion:         meshv1.GroupVersion.String(),
		Kind:               "Mesh",
		Name:               mesh.Name,
		UID:                mesh.UID,
		Controller:         new(true),
		BlockOwnerDeletion: new(true),
	}}
	cert.Spec = cmapi.CertificateSpec{
		IsCA:        true,
		CommonName:  "Trellis issuer " + mesh.Spec.TrustDomain,
		URIs:        []string{"spiffe://" + mesh.Spec.TrustDomain},
		Duration:    &metav1.Duration{Duration: validity},
		RenewBefore: &metav1.Duration{Duration: validity / 3},
		SecretName:  CASecretName,
		SecretTemplate: &cmapi.CertificateSecretTemplate{
			Labels: ownedLabels(mesh),
		},
		PrivateKey: &cmapi.CertificatePrivateKey{
			Algorithm:      cmapi.ECDSAKeyAlgorithm,
			Size:           256,
			Encoding:       cmapi.PKCS8,
			RotationPolicy: cmapi.RotationPolicyAlways,
		},
		Usages:    []cmapi.KeyUsage{cmapi.UsageCertSign, cmapi.UsageCRLSign, cmapi.UsageDigitalSignature},
		IssuerRef: cmmeta.IssuerReference{Name: cm.IssuerRef.Name, Kind: kind, Group: group},
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cert)
	if err != nil {
		return nil, fmt.Errorf("encoding Certificate: %w", err)
	}
	// Fields the operator does not own must not appear in its apply request.
	delete(obj, "status")
	unstructured.RemoveNestedField(obj, "metadata", "creationTimestamp")
	return client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: obj}), nil
}

func newCertificate() *cmapi.Certificate {
	return &cmapi.Certificate{TypeMeta: metav1.TypeMeta{
		APIVersion: cmapi.SchemeGroupVersion.String(),
		Kind:       cmapi.CertificateKind,
	}}
}

func newCertificateKey(mesh *meshv1.Mesh) client.Object {
	c := newCertificate()
	c.Name, c.Namespace = CertificateName, mesh.Spec.Namespace
	return c
}

// caSecret reads the CA Secret, nil when it does not exist.
func (r *MeshReconciler) caSecret(ctx context.Context, mesh *meshv1.Mesh) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := r.Get(ctx, client.ObjectKey{Namespace: mesh.Spec.Namespace, Name: CASecretName}, s)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading Secret %s/%s: %w", mesh.Spec.Namespace, CASecretName, err)
	}
	return s, nil
}

// reconcileTrustBundle publishes the roots proxies must trust: in the mesh
// namespace (with the state that says how long each old root stays) and in
// every namespace labeled for the mesh; it removes the bundle from namespaces
// no longer labeled.
func (r *MeshReconciler) reconcileTrustBundle(ctx context.Context, mesh *meshv1.Mesh, obs *observation) error {
	var namespaces corev1.NamespaceList
	if err := r.List(ctx, &namespaces); err != nil {
		return fmt.Errorf("listing namespaces: %w", err)
	}
	meshed := map[string]bool{}
	for _, ns := range namespaces.Items {
		if ns.Name != mesh.Spec.Namespace && ns.DeletionTimestamp.IsZero() && membership.MeshFor(ns.Name, ns.Labels) == mesh.Name {
			meshed[ns.Name] = true
		}
	}
	obs.meshedNamespaces = int32(len(meshed))
	// Pods that opted in by their own label, in namespaces not labeled for
	// the Mesh, need the bundle too.
	for ns := range obs.pods.namespaces {
		if ns != mesh.Spec.Namespace {
			meshed[ns] = true
		}
	}

	var existing corev1.ConfigMapList
	if err := r.List(ctx, &existing, client.MatchingLabels{LabelOwnerMesh: mesh.Name}); err != nil {
		return fmt.Errorf("listing trust bundles: %w", err)
	}
	for i := range existing.Items {
		cm := &existing.Items[i]
		if cm.Namespace == mesh.Spec.Namespace || meshed[cm.Namespace] {
			continue
		}
		if err := r.Delete(ctx, cm); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("removing trust bundle from namespace %s: %w", cm.Namespace, err)
		}
		r.Recorder.Eventf(mesh, nil, corev1.EventTypeNormal, "TrustBundleRemoved", "Delete",
			"removed the trust bundle from namespace %s, which is no longer labeled for this mesh and runs none of its pods", cm.Namespace)
	}

	if obs.ca.issuer == nil {
		// Nothing new to publish; what is published stays until there is.
		return nil
	}
	var prev []ca.Anchor
	for i := range existing.Items {
		cm := &existing.Items[i]
		if cm.Namespace != mesh.Spec.Namespace {
			continue
		}
		decoded, err := ca.DecodeBundle([]byte(cm.Data[TrustBundleKey]), []byte(cm.Data[TrustBundleStateKey]))
		if err != nil {
			log.FromContext(ctx).Error(err, "trust bundle state unreadable; starting again from the current roots",
				"configmap", client.ObjectKeyFromObject(cm))
		} else {
			prev = decoded
		}
	}
	anchors := ca.NextBundle(prev, obs.ca.roots, obs.ca.issuer, r.Now())
	bundle, state, err := ca.EncodeBundle(anchors)
	if err != nil {
		return fmt.Errorf("encoding trust bundle: %w", err)
	}
	obs.trustAnchors = int32(len(anchors))

	write := func(namespace string, data map[string]string) error {
		return r.apply(ctx, corev1ac.ConfigMap(TrustBundleName, namespace).
			WithLabels(ownedLabels(mesh)).
			WithOwnerReferences(ownerReference(mesh)).
			WithData(data))
	}
	if err := write(mesh.Spec.Namespace, map[string]string{
		TrustBundleKey:      string(bundle),
		TrustBundleStateKey: string(state),
	}); err != nil {
		return err
	}
	for ns := range meshed {
		if err := write(ns, map[string]string{TrustBundleKey: string(bundle)}); err != nil {
			return err
		}
	}
	return nil
}

// deleteIfExists deletes o; an object already gone, or of a kind the API
// server does not serve (cert-manager's Certificate without cert-manager), is
// not an error.
func (r *MeshReconciler) deleteIfExists(ctx context.Context, o client.Object) error {
	err := r.Delete(ctx, o)
	if err == nil || apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		return nil
	}
	return fmt.Errorf("deleting %T %s/%s: %w", o, o.GetNamespace(), o.GetName(), err)
}

func durationOr(d metav1.Duration, def time.Duration) time.Duration {
	if d.Duration <= 0 {
		return def
	}
	return d.Duration
}

// requeueBefore is how long to wait until t, bounded by the resync period and
// never less than a second.
func requeueBefore(t, now time.Time) time.Duration {
	d := t.Sub(now)
	if d > resyncPeriod {
		return resyncPeriod
	}
	if d < time.Second {
		return time.Second
	}
	return d
}

func sameData(a, b map[string][]byte) bool {
	return maps.EqualFunc(a, b, bytes.Equal)
}
