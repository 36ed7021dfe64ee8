package controllers

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/ca"
)

// eventually retries f until it returns nil, or fails the test with its last error.
func eventually(t testing.TB, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

// newMesh is a Mesh as a user would write it; the API server fills in the defaults.
func newMesh(name, namespace string) *meshv1.Mesh {
	return &meshv1.Mesh{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       meshv1.MeshSpec{Namespace: namespace, TrustDomain: "cluster.local"},
	}
}

// createMesh creates mesh and deletes it when the test ends, waiting until it is gone.
func createMesh(t testing.TB, mesh *meshv1.Mesh) {
	t.Helper()
	if err := k8sClient.Create(testCtx, mesh); err != nil {
		t.Fatalf("creating Mesh %s: %v", mesh.Name, err)
	}
	t.Cleanup(func() { deleteMeshAndWait(t, mesh.Name) })
}

func deleteMeshAndWait(t testing.TB, name string) {
	t.Helper()
	m := &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8sClient.Delete(testCtx, m); client.IgnoreNotFound(err) != nil {
		t.Errorf("deleting Mesh %s: %v", name, err)
	}
	eventually(t, "Mesh "+name+" gone", func() error {
		err := k8sClient.Get(testCtx, client.ObjectKey{Name: name}, m)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (finalizers %v): %w", m.Finalizers, err)
	})
}

func getMesh(t testing.TB, name string) *meshv1.Mesh {
	t.Helper()
	m := &meshv1.Mesh{}
	if err := k8sClient.Get(testCtx, client.ObjectKey{Name: name}, m); err != nil {
		t.Fatalf("getting Mesh %s: %v", name, err)
	}
	return m
}

// condition returns an error unless mesh's condition t has the status and reason.
func condition(mesh *meshv1.Mesh, t string, status metav1.ConditionStatus, reason string) error {
	c := meta.FindStatusCondition(mesh.Status.Conditions, t)
	switch {
	case c == nil:
		return fmt.Errorf("no %s condition in %v", t, mesh.Status.Conditions)
	case c.Status != status || c.Reason != reason:
		return fmt.Errorf("%s is %s/%s (%q), want %s/%s", t, c.Status, c.Reason, c.Message, status, reason)
	case c.ObservedGeneration != mesh.Generation:
		return fmt.Errorf("%s observed generation %d, mesh is at %d", t, c.ObservedGeneration, mesh.Generation)
	}
	return nil
}

func waitCondition(t testing.TB, name, ctype string, status metav1.ConditionStatus, reason string) *meshv1.Mesh {
	t.Helper()
	var mesh *meshv1.Mesh
	eventually(t, fmt.Sprintf("Mesh %s %s=%s", name, ctype, status), func() error {
		mesh = getMesh(t, name)
		return condition(mesh, ctype, status, reason)
	})
	return mesh
}

func get(t testing.TB, obj client.Object, namespace, name string) error {
	t.Helper()
	return k8sClient.Get(testCtx, client.ObjectKey{Namespace: namespace, Name: name}, obj)
}

// makeAvailable does what the Deployment controller and kubelet would: mark
// the control plane's replicas available.
func makeAvailable(t testing.TB, namespace string) {
	t.Helper()
	eventually(t, "control plane Deployment marked available", func() error {
		d := &appsv1.Deployment{}
		if err := get(t, d, namespace, ControlPlaneName); err != nil {
			return err
		}
		n := ptr.Deref(d.Spec.Replicas, 1)
		d.Status = appsv1.DeploymentStatus{
			ObservedGeneration: d.Generation,
			Replicas:           n, ReadyReplicas: n, AvailableReplicas: n, UpdatedReplicas: n,
			Conditions: []appsv1.DeploymentCondition{{
				Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue,
				Reason: "MinimumReplicasAvailable", LastUpdateTime: metav1.Now(), LastTransitionTime: metav1.Now(),
			}},
		}
		return k8sClient.Status().Update(testCtx, d)
	})
}

func TestMeshInstallsItsObjects(t *testing.T) {
	const name, ns = "install", "trellis-install"
	createMesh(t, newMesh(name, ns))

	mesh := waitCondition(t, name, meshv1.CAReadyCondition, metav1.ConditionTrue, meshv1.CAIssuedReason)

	t.Run("defaults applied by the API server", func(t *testing.T) {
		if got := ptr.Deref(mesh.Spec.ControlPlane.Replicas, 0); got != 2 {
			t.Errorf("spec.controlPlane.replicas = %d, want default 2", got)
		}
		if mesh.Spec.CA.Builtin == nil || mesh.Spec.CA.Builtin.IssuerValidity.Duration != 8760*time.Hour {
			t.Errorf("spec.ca = %+v, want builtin with issuerValidity 8760h", mesh.Spec.CA)
		}
		if mesh.Spec.MTLS.Mode != meshv1.MTLSModePermissive || mesh.Spec.Injection.FailurePolicy != meshv1.FailurePolicyFail {
			t.Errorf("mtls %q, failurePolicy %q: want Permissive and Fail", mesh.Spec.MTLS.Mode, mesh.Spec.Injection.FailurePolicy)
		}
		if !slices.Contains(mesh.Finalizers, Finalizer) {
			t.Errorf("finalizers %v lack %s", mesh.Finalizers, Finalizer)
		}
	})

	t.Run("namespace created and marked as ours", func(t *testing.T) {
		n := &corev1.Namespace{}
		if err := get(t, n, "", ns); err != nil {
			t.Fatal(err)
		}
		if n.Annotations[AnnotationCreatedBy] != name || n.Labels[LabelOwnerMesh] != name {
			t.Errorf("namespace annotations %v labels %v", n.Annotations, n.Labels)
		}
	})

	t.Run("CA secret holds a root and an issuer it signed", func(t *testing.T) {
		s := &corev1.Secret{}
		if err := get(t, s, ns, CASecretName); err != nil {
			t.Fatal(err)
		}
		if s.Type != corev1.SecretTypeTLS {
			t.Errorf("type %q, want kubernetes.io/tls", s.Type)
		}
		root, err := ca.ParseKeyPair(s.Data[ca.RootCertKey], s.Data[ca.RootKeyKey])
		if err != nil {
			t.Fatal(err)
		}
		issuer, err := ca.ParseKeyPair(s.Data[ca.IssuerCertKey], s.Data[ca.IssuerKeyKey])
		if err != nil {
			t.Fatal(err)
		}
		if err := issuer.Cert.CheckSignatureFrom(root.Cert); err != nil {
			t.Errorf("issuer not signed by root: %v", err)
		}
		if mesh.Status.CA.IssuerNotAfter == nil || !mesh.Status.CA.IssuerNotAfter.Time.Equal(issuer.Cert.NotAfter.Truncate(time.Second)) {
			t.Errorf("status.ca.issuerNotAfter %v, issuer expires %v", mesh.Status.CA.IssuerNotAfter, issuer.Cert.NotAfter)
		}
		if mesh.Status.CA.RootNotAfter == nil || mesh.Status.CA.RootNotAfter.Time.Before(issuer.Cert.NotAfter) {
			t.Errorf("status.ca.rootNotAfter %v", mesh.Status.CA.RootNotAfter)
		}
	})

	t.Run("trust bundle in the mesh namespace", func(t *testing.T) {
		cm := &corev1.ConfigMap{}
		if err := get(t, cm, ns, TrustBundleName); err != nil {
			t.Fatal(err)
		}
		roots, err := ca.ParseCertificates([]byte(cm.Data[TrustBundleKey]))
		if err != nil || len(roots) != 1 {
			t.Fatalf("bundle roots %d, err %v", len(roots), err)
		}
		if cm.Data[TrustBundleStateKey] == "" {
			t.Error("no anchor state in the mesh namespace's bundle")
		}
	})

	t.Run("control plane RBAC", func(t *testing.T) {
		cr := &rbacv1.ClusterRole{}
		if err := get(t, cr, "", "trellis-controlplane-"+name); err != nil {
			t.Fatal(err)
		}
		if !grants(cr.Rules, "authentication.k8s.io", "tokenreviews", "create") ||
			!grants(cr.Rules, "discovery.k8s.io", "endpointslices", "watch") {
			t.Errorf("ClusterRole lacks tokenreviews or endpointslices: %+v", cr.Rules)
		}
		if grants(cr.Rules, "", "secrets", "get") {
			t.Error("control plane may read Secrets cluster-wide")
		}
		crb := &rbacv1.ClusterRoleBinding{}
		if err := get(t, crb, "", "trellis-controlplane-"+name); err != nil {
			t.Fatal(err)
		}
		if len(crb.Subjects) != 1 || crb.Subjects[0].Namespace != ns || crb.Subjects[0].Name != ControlPlaneName {
			t.Errorf("binding subjects %+v", crb.Subjects)
		}
		for _, o := range []client.Object{&corev1.ServiceAccount{}, &rbacv1.Role{}, &rbacv1.RoleBinding{}} {
			if err := get(t, o, ns, ControlPlaneName); err != nil {
				t.Errorf("%T: %v", o, err)
			}
		}
	})

	t.Run("control plane Deployment", func(t *testing.T) {
		d := &appsv1.Deployment{}
		if err := get(t, d, ns, ControlPlaneName); err != nil {
			t.Fatal(err)
		}
		if got := ptr.Deref(d.Spec.Replicas, 0); got != 2 {
			t.Errorf("replicas %d, want 2", got)
		}
		c := d.Spec.Template.Spec.Containers[0]
		if c.Image != "example.test/trellis:v9.9.9" {
			t.Errorf("image %q, want the operator's default", c.Image)
		}
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe == nil {
			t.Errorf("probes: readiness %+v liveness %+v", c.ReadinessProbe, c.LivenessProbe)
		}
		sc := c.SecurityContext
		if sc == nil || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) || !ptr.Deref(sc.RunAsNonRoot, false) || ptr.Deref(sc.AllowPrivilegeEscalation, true) {
			t.Errorf("security context %+v", sc)
		}
		if len(d.Spec.Template.Spec.TopologySpreadConstraints) == 0 {
			t.Error("no topology spread")
		}
		var items []string
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret != nil && v.Secret.SecretName == CASecretName {
				for _, it := range v.Secret.Items {
					items = append(items, it.Key)
				}
			}
		}
		slices.Sort(items)
		if !slices.Equal(items, []string{"ca.crt", "tls.crt", "tls.key"}) {
			t.Errorf("signer volume mounts keys %v; the root key must stay out", items)
		}
		if len(d.OwnerReferences) != 1 || d.OwnerReferences[0].Name != name || !ptr.Deref(d.OwnerReferences[0].Controller, false) {
			t.Errorf("owner references %+v", d.OwnerReferences)
		}
	})

	t.Run("Service and PodDisruptionBudget", func(t *testing.T) {
		svc := &corev1.Service{}
		if err := get(t, svc, ns, ControlPlaneName); err != nil {
			t.Fatal(err)
		}
		if len(svc.Spec.Ports) != 2 || svc.Spec.Ports[0].Port != ControlPlaneGRPCPort {
			t.Errorf("ports %+v", svc.Spec.Ports)
		}
		pdb := &policyv1.PodDisruptionBudget{}
		if err := get(t, pdb, ns, ControlPlaneName); err != nil {
			t.Fatal(err)
		}
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
			t.Errorf("maxUnavailable %v", pdb.Spec.MaxUnavailable)
		}
	})

	t.Run("not Ready until the control plane is available", func(t *testing.T) {
		m := waitCondition(t, name, meshv1.ControlPlaneReadyCondition, metav1.ConditionFalse, meshv1.ControlPlaneUnavailableReason)
		if err := condition(m, meshv1.ReadyCondition, metav1.ConditionFalse, meshv1.NotReadyReason); err != nil {
			t.Error(err)
		}
		if c := meta.FindStatusCondition(m.Status.Conditions, meshv1.ReadyCondition); !strings.Contains(c.Message, "ControlPlaneReady") {
			t.Errorf("Ready message %q does not name ControlPlaneReady", c.Message)
		}
	})

	t.Run("Ready once the Deployment is available", func(t *testing.T) {
		makeAvailable(t, ns)
		m := waitCondition(t, name, meshv1.ReadyCondition, metav1.ConditionTrue, meshv1.ReadyReason)
		if m.Status.ObservedGeneration != m.Generation || m.Status.ControlPlane.AvailableReplicas != 2 {
			t.Errorf("status %+v", m.Status)
		}
	})

	t.Run("events say what was done", func(t *testing.T) {
		eventually(t, "events for the Mesh", func() error {
			var evs eventsv1.EventList
			if err := k8sClient.List(testCtx, &evs); err != nil {
				return err
			}
			for _, e := range evs.Items {
				if e.Regarding.Name == name && e.Regarding.Kind == "Mesh" && strings.Contains(e.Note, "root") {
					return nil
				}
			}
			return errors.New("no event about creating the root CA")
		})
	})
}

func grants(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	for _, r := range rules {
		if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) {
			return true
		}
	}
	return false
}

func TestMeshConvergesOnSpecChange(t *testing.T) {
	const name, ns = "converge", "trellis-converge"
	createMesh(t, newMesh(name, ns))
	waitCondition(t, name, meshv1.CAReadyCondition, metav1.ConditionTrue, meshv1.CAIssuedReason)

	mesh := getMesh(t, name)
	mesh.Spec.ControlPlane.Replicas = ptr.To[int32](3)
	mesh.Spec.ControlPlane.Version = "v1.2.3"
	mesh.Spec.ControlPlane.LogLevel = "debug"
	if err := k8sClient.Update(testCtx, mesh); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Deployment follows the spec", func() error {
		d := &appsv1.Deployment{}
		if err := get(t, d, ns, ControlPlaneName); err != nil {
			return err
		}
		c := d.Spec.Template.Spec.Containers[0]
		if ptr.Deref(d.Spec.Replicas, 0) != 3 || c.Image != "example.test/trellis:v1.2.3" || !slices.Contains(c.Args, "--log-level=debug") {
			return fmt.Errorf("replicas %d image %s args %v", ptr.Deref(d.Spec.Replicas, 0), c.Image, c.Args)
		}
		return nil
	})
	eventually(t, "status at the new generation", func() error {
		m := getMesh(t, name)
		if m.Status.ObservedGeneration != m.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", m.Status.ObservedGeneration, m.Generation)
		}
		if m.Status.ControlPlane.Replicas != 3 || m.Status.ControlPlane.Image != "example.test/trellis:v1.2.3" {
			return fmt.Errorf("status.controlPlane %+v", m.Status.ControlPlane)
		}
		return nil
	})
}

func TestOwnedObjectsComeBack(t *testing.T) {
	const name, ns = "heal", "trellis-heal"
	createMesh(t, newMesh(name, ns))
	waitCondition(t, name, meshv1.CAReadyCondition, metav1.ConditionTrue, meshv1.CAIssuedReason)

	deleted := map[string]client.Object{
		"Deployment":          &appsv1.Deployment{},
		"Service":             &corev1.Service{},
		"PodDisruptionBudget": &policyv1.PodDisruptionBudget{},
		"ServiceAccount":      &corev1.ServiceAccount{},
		"Role":                &rbacv1.Role{},
	}
	for kind, obj := range deleted {
		t.Run(kind+" deleted", func(t *testing.T) {
			if err := get(t, obj, ns, ControlPlaneName); err != nil {
				t.Fatal(err)
			}
			uid := obj.GetUID()
			if err := k8sClient.Delete(testCtx, obj); err != nil {
				t.Fatal(err)
			}
			eventually(t, kind+" recreated", func() error {
				if err := get(t, obj, ns, ControlPlaneName); err != nil {
					return err
				}
				if obj.GetUID() == uid {
					return errors.New("still the old object")
				}
				return nil
			})
		})
	}

	t.Run("ClusterRole deleted", func(t *testing.T) {
		cr := &rbacv1.ClusterRole{}
		if err := get(t, cr, "", "trellis-controlplane-"+name); err != nil {
			t.Fatal(err)
		}
		uid := cr.UID
		if err := k8sClient.Delete(testCtx, cr); err != nil {
			t.Fatal(err)
		}
		eventually(t, "ClusterRole recreated", func() error {
			if err := get(t, cr, "", "trellis-controlplane-"+name); err != nil {
				return err
			}
			if cr.UID == uid {
				return errors.New("still the old object")
			}
			return nil
		})
	})

	t.Run("Deployment edited by someone else", func(t *testing.T) {
		d := &appsv1.Deployment{}
		if err := get(t, d, ns, ControlPlaneName); err != nil {
			t.Fatal(err)
		}
		d.Spec.Replicas = ptr.To[int32](7)
		d.Spec.Template.Spec.Containers[0].Image = "evil.test/miner:latest"
		if err := k8sClient.Update(testCtx, d, client.FieldOwner("kubectl-edit")); err != nil {
			t.Fatal(err)
		}
		eventually(t, "Deployment restored", func() error {
			if err := get(t, d, ns, ControlPlaneName); err != nil {
				return err
			}
			if ptr.Deref(d.Spec.Replicas, 0) != 2 || d.Spec.Template.Spec.Containers[0].Image != "example.test/trellis:v9.9.9" {
				return fmt.Errorf("replicas %d image %s", ptr.Deref(d.Spec.Replicas, 0), d.Spec.Template.Spec.Containers[0].Image)
			}
			return nil
		})
	})

	t.Run("CA Secret deleted: a new CA, and the old root stays trusted", func(t *testing.T) {
		s := &corev1.Secret{}
		if err := get(t, s, ns, CASecretName); err != nil {
			t.Fatal(err)
		}
		oldRoot, err := ca.ParseCertificates(s.Data[ca.RootCertKey])
		if err != nil {
			t.Fatal(err)
		}
		if err := k8sClient.Delete(testCtx, s); err != nil {
			t.Fatal(err)
		}
		eventually(t, "Secret recreated with a new root", func() error {
			if err := get(t, s, ns, CASecretName); err != nil {
				return err
			}
			root, err := ca.ParseCertificates(s.Data[ca.RootCertKey])
			if err != nil {
				return err
			}
			if root[0].Equal(oldRoot[0]) {
				return errors.New("same root")
			}
			return nil
		})
		eventually(t, "bundle holds the new and the old root", func() error {
			roots, err := bundleRoots(t, ns)
			if err != nil {
				return err
			}
			if len(roots) != 2 || !roots[1].Equal(oldRoot[0]) {
				return fmt.Errorf("bundle has %d roots, want the new one then the old", len(roots))
			}
			return nil
		})
	})
}

func bundleRoots(t testing.TB, namespace string) ([]*x509.Certificate, error) {
	cm := &corev1.ConfigMap{}
	if err := get(t, cm, namespace, TrustBundleName); err != nil {
		return nil, err
	}
	return ca.ParseCertificates([]byte(cm.Data[TrustBundleKey]))
}

func TestTrustBundleFollowsNamespaceLabels(t *testing.T) {
	const name, ns = "labels", "trellis-labels"
	createMesh(t, newMesh(name, ns))
	waitCondition(t, name, meshv1.CAReadyCondition, metav1.ConditionTrue, meshv1.CAIssuedReason)

	app := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop-labels", Labels: map[string]string{meshv1.MeshLabel: name}}}
	other := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop-other", Labels: map[string]string{meshv1.MeshLabel: "someone-else"}}}
	for _, n := range []*corev1.Namespace{app, other} {
		if err := k8sClient.Create(testCtx, n); err != nil {
			t.Fatal(err)
		}
	}

	eventually(t, "bundle in the labeled namespace", func() error {
		appRoots, err := bundleRoots(t, app.Name)
		if err != nil {
			return err
		}
		meshRoots, err := bundleRoots(t, ns)
		if err != nil {
			return err
		}
		if len(appRoots) != len(meshRoots) || !appRoots[0].Equal(meshRoots[0]) {
			return errors.New("application namespace's bundle differs from the mesh's")
		}
		return nil
	})
	cm := &corev1.ConfigMap{}
	if err := get(t, cm, other.Name, TrustBundleName); !apierrors.IsNotFound(err) {
		t.Errorf("namespace of another mesh got this mesh's bundle: %v", err)
	}
	if _, ok := cm.Data[TrustBundleStateKey]; ok {
		t.Error("application namespace got the anchor state")
	}
	eventually(t, "status counts the meshed namespace", func() error {
		if n := getMesh(t, name).Status.MeshedNamespaces; n != 1 {
			return fmt.Errorf("meshedNamespaces %d", n)
		}
		return nil
	})

	// Unlabel: the bundle goes.
	if err := get(t, app, "", app.Name); err != nil {
		t.Fatal(err)
	}
	delete(app.Labels, meshv1.MeshLabel)
	if err := k8sClient.Update(testCtx, app); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bundle removed from the unlabeled namespace", func() error {
		err := get(t, &corev1.ConfigMap{}, app.Name, TrustBundleName)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %w", err)
	})
	eventually(t, "status counts no meshed namespace", func() error {
		if n := getMesh(t, name).Status.MeshedNamespaces; n != 0 {
			return fmt.Errorf("meshedNamespaces %d", n)
		}
		return nil
	})
}

func TestDefaultMeshServesInjectionLabel(t *testing.T) {
	createMesh(t, newMesh(meshv1.DefaultMeshName, "trellis-system"))
	app := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop-default", Labels: map[string]string{meshv1.InjectionLabel: "enabled"}}}
	if err := k8sClient.Create(testCtx, app); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bundle in the namespace labeled trellis-injection=enabled", func() error {
		_, err := bundleRoots(t, app.Name)
		return err
	})
}

func TestMeshDeletionCleansUp(t *testing.T) {
	t.Run("namespace the operator created", func(t *testing.T) {
		const name, ns = "cleanup", "trellis-cleanup"
		app := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop-cleanup", Labels: map[string]string{meshv1.MeshLabel: name}}}
		if err := k8sClient.Create(testCtx, app); err != nil {
			t.Fatal(err)
		}
		if err := k8sClient.Create(testCtx, newMesh(name, ns)); err != nil {
			t.Fatal(err)
		}
		eventually(t, "bundle published", func() error { _, err := bundleRoots(t, app.Name); return err })

		deleteMeshAndWait(t, name)

		for _, check := range []struct {
			obj             client.Object
			namespace, name string
		}{
			{&rbacv1.ClusterRole{}, "", "trellis-controlplane-" + name},
			{&rbacv1.ClusterRoleBinding{}, "", "trellis-controlplane-" + name},
			{&corev1.ConfigMap{}, app.Name, TrustBundleName},
			{&appsv1.Deployment{}, ns, ControlPlaneName},
			{&corev1.Secret{}, ns, CASecretName},
		} {
			if err := get(t, check.obj, check.namespace, check.name); !apierrors.IsNotFound(err) {
				t.Errorf("%T %s/%s still there after the Mesh was deleted (err %v)", check.obj, check.namespace, check.name, err)
			}
		}
		// envtest runs no namespace controller: deletion is requested, not finished.
		n := &corev1.Namespace{}
		if err := get(t, n, "", ns); err == nil && n.DeletionTimestamp.IsZero() {
			t.Errorf("namespace %s the operator created was not deleted", ns)
		}
	})

	t.Run("namespace the user made is kept", func(t *testing.T) {
		const name, ns = "keepns", "trellis-keepns"
		if err := k8sClient.Create(testCtx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
		if err := k8sClient.Create(testCtx, newMesh(name, ns)); err != nil {
			t.Fatal(err)
		}
		waitCondition(t, name, meshv1.CAReadyCondition, metav1.ConditionTrue, meshv1.CAIssuedReason)
		deleteMeshAndWait(t, name)
		n := &corev1.Namespace{}
		if err := get(t, n, "", ns); err != nil || !n.DeletionTimestamp.IsZero() {
			t.Errorf("user's namespace %s deleted with the Mesh (err %v)", ns, err)
		}
		if err := get(t, &appsv1.Deployment{}, ns, ControlPlaneName); !apierrors.IsNotFound(err) {
			t.Errorf("control plane left in the user's namespace: %v", err)
		}
	})
}

func TestSecondMeshInSameNamespaceIsInvalid(t *testing.T) {
	createMesh(t, newMesh("first", "trellis-shared"))
	waitCondition(t, "first", meshv1.CAReadyCondition, metav1.ConditionTrue, meshv1.CAIssuedReason)
	createMesh(t, newMesh("second", "trellis-shared"))
	m := waitCondition(t, "second", meshv1.ReadyCondition, metav1.ConditionFalse, meshv1.InvalidSpecReason)
	msg := meta.FindStatusCondition(m.Status.Conditions, meshv1.ReadyCondition).Message
	if !strings.Contains(msg, "spec.namespace") || !strings.Contains(msg, `Mesh "first"`) {
		t.Errorf("message %q should name the field and the Mesh that has the namespace", msg)
	}
	// The first keeps working: its Deployment is still the first's.
	d := &appsv1.Deployment{}
	if err := get(t, d, "trellis-shared", ControlPlaneName); err != nil || d.OwnerReferences[0].Name != "first" {
		t.Errorf("first Mesh's Deployment: %v %+v", err, d.OwnerReferences)
	}
}

func TestIssuerRotation(t *testing.T) {
	const name, ns = "rotate", "trellis-rotate"
	createMesh(t, newMesh(name, ns))
	waitCondition(t, name, meshv1.CAReadyCondition, metav1.ConditionTrue, meshv1.CAIssuedReason)
	s := &corev1.Secret{}
	if err := get(t, s, ns, CASecretName); err != nil {
		t.Fatal(err)
	}
	before, err := ca.ParseCertificates(s.Data[ca.IssuerCertKey])
	if err != nil {
		t.Fatal(err)
	}
	// Past two thirds of the intermediate's year, but not of the root's ten.
	jump := time.Until(ca.RenewalTime(before[0])) + time.Hour
	clock.Advance(jump)
	t.Cleanup(func() { clock.Advance(-jump) })
	// Nudge a reconcile rather than waiting for the resync.
	m := getMesh(t, name)
	m.Annotations = map[string]string{"test/nudge": "1"}
	if err := k8sClient.Update(testCtx, m); err != nil {
		t.Fatal(err)
	}
	eventually(t, "issuer rotated under the same root", func() error {
		if err := get(t, s, ns, CASecretName); err != nil {
			return err
		}
		after, err := ca.ParseCertificates(s.Data[ca.IssuerCertKey])
		if err != nil {
			return err
		}
		if after[0].Equal(before[0]) {
			return errors.New("issuer unchanged")
		}
		if !after[0].NotAfter.After(before[0].NotAfter) {
			return errors.New("new issuer does not outlive the old")
		}
		return nil
	})
	roots, err := bundleRoots(t, ns)
	if err != nil || len(roots) != 1 {
		t.Errorf("bundle after an issuer rotation: %d roots, err %v; the root did not change", len(roots), err)
	}
}
