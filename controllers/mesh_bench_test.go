package controllers

import (
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
)

// BenchmarkMeshInstall measures the operator against a real API server: from
// a Mesh's creation to every object it owns existing, and to Ready once the
// control plane's Deployment reports available (here the benchmark marks it,
// as no kubelet runs). The API server, etcd and the operator share this
// machine's cores, as they would on a small cluster's control-plane node.
func BenchmarkMeshInstall(b *testing.B) {
	var toObjects, availableToReady, toReady time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		name := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano()%1e6, i)
		ns := "trellis-" + name
		mesh := newMesh(name, ns)
		b.StartTimer()

		start := time.Now()
		if err := k8sClient.Create(testCtx, mesh); err != nil {
			b.Fatal(err)
		}
		waitFor(b, func() bool { return allOwnedExist(name, ns) })
		objects := time.Now()
		makeAvailable(b, ns)
		available := time.Now()
		waitFor(b, func() bool {
			m := &meshv1.Mesh{}
			return k8sClient.Get(testCtx, client.ObjectKey{Name: name}, m) == nil &&
				condition(m, meshv1.ReadyCondition, metav1.ConditionTrue, meshv1.ReadyReason) == nil
		})
		ready := time.Now()

		b.StopTimer()
		toObjects += objects.Sub(start)
		availableToReady += ready.Sub(available)
		toReady += ready.Sub(start)
		deleteMeshAndWait(b, name)
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(toObjects.Milliseconds())/n, "ms-to-objects")
	b.ReportMetric(float64(availableToReady.Milliseconds())/n, "ms-available-to-ready")
	b.ReportMetric(float64(toReady.Milliseconds())/n, "ms-to-ready")
}

func waitFor(b *testing.B, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatal("timed out")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// allOwnedExist is true once every object a Mesh owns has been written.
func allOwnedExist(name, ns string) bool {
	cr := "trellis-controlplane-" + name
	for _, o := range []struct {
		obj             client.Object
		namespace, name string
	}{
		{&corev1.Namespace{}, "", ns},
		{&corev1.Secret{}, ns, CASecretName},
		{&corev1.ConfigMap{}, ns, TrustBundleName},
		{&corev1.ServiceAccount{}, ns, ControlPlaneName},
		{&rbacv1.ClusterRole{}, "", cr},
		{&rbacv1.ClusterRoleBinding{}, "", cr},
		{&rbacv1.Role{}, ns, ControlPlaneName},
		{&rbacv1.RoleBinding{}, ns, ControlPlaneName},
		{&corev1.Service{}, ns, ControlPlaneName},
		{&policyv1.PodDisruptionBudget{}, ns, ControlPlaneName},
		{&appsv1.Deployment{}, ns, ControlPlaneName},
	} {
		if k8sClient.Get(testCtx, client.ObjectKey{Namespace: o.namespace, Name: o.name}, o.obj) != nil {
			return false
		}
	}
	return true
}
