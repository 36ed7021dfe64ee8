package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/sidecar"
)

// The proxy versions of the rolling restart tests: pods run the old one,
// the Meshes ask for the new one.
const oldProxy, newProxy = "v0.1.0", "v0.2.0"

// appTemplate is the pod template of a test workload named name.
func appTemplate(name string, annotations map[string]string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}, Annotations: annotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "shop:1"}}},
	}
}

// createDeployment creates a Deployment and, as the Deployment controller
// would, its ReplicaSet; templateAnnotations go on its pod template.
func createDeployment(t testing.TB, namespace, name string, templateAnnotations map[string]string) (*appsv1.Deployment, *appsv1.ReplicaSet) {
	t.Helper()
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: appTemplate(name, templateAnnotations),
		},
	}
	if err := k8sClient.Create(testCtx, d); err != nil {
		t.Fatal(err)
	}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name + "-7d9f8",
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))}},
		Spec: appsv1.ReplicaSetSpec{Selector: d.Spec.Selector, Template: d.Spec.Template},
	}
	if err := k8sClient.Create(testCtx, rs); err != nil {
		t.Fatal(err)
	}
	return d, rs
}

func createStatefulSet(t testing.TB, namespace, name string) *appsv1.StatefulSet {
	t.Helper()
	s := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: appsv1.StatefulSetSpec{
			ServiceName: name,
			Selector:    &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template:    appTemplate(name, nil),
		},
	}
	if err := k8sClient.Create(testCtx, s); err != nil {
		t.Fatal(err)
	}
	return s
}

// createMeshedPods creates n running pods of owner (a ReplicaSet or
// StatefulSet; none for a bare pod) as its controller would, labeled and
// annotated as the injector leaves them for mesh with a proxy of version.
func createMeshedPods(t testing.TB, namespace, name string, owner client.Object, mesh, version string, n int) []*corev1.Pod {
	t.Helper()
	var pods []*corev1.Pod
	for i := range n {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Namespace:   namespace,
				Name:        fmt.Sprintf("%s-%d", name, i),
				Labels:      map[string]string{"app": name, meshv1.MeshLabel: mesh, sidecar.LabelProxyVersion: version},
				Annotations: map[string]string{sidecar.AnnotationStatus: "{}"},
			},
			Spec: appTemplate(name, nil).Spec,
		}
		if owner != nil {
			gvk, err := k8sClient.GroupVersionKindFor(owner)
			if err != nil {
				t.Fatal(err)
			}
			p.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(owner, gvk)}
		}
		if err := k8sClient.Create(testCtx, p); err != nil {
			t.Fatal(err)
		}
		p.Status.Phase = corev1.PodRunning
		if err := k8sClient.Status().Update(testCtx, p); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	return pods
}

// setProxyVersion relabels pods as if their workload had replaced them by
// pods with a proxy of version.
func setProxyVersion(t testing.TB, pods []*corev1.Pod, version string) {
	t.Helper()
	for _, p := range pods {
		patch := client.MergeFrom(p.DeepCopy())
		p.Labels[sidecar.LabelProxyVersion] = version
		if err := k8sClient.Patch(testCtx, p, patch); err != nil {
			t.Fatal(err)
		}
	}
}

// templateOf reads a workload again and returns its pod template's
// annotations and its generation, which a template change bumps.
func templateOf(t testing.TB, obj client.Object) (map[string]string, int64) {
	t.Helper()
	if err := k8sClient.Get(testCtx, client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return o.Spec.Template.Annotations, o.Generation
	case *appsv1.StatefulSet:
		return o.Spec.Template.Annotations, o.Generation
	}
	t.Fatalf("no template in %T", obj)
	return nil, 0
}

// checkNotRestarted fails t if the operator changed the workloads' pod templates.
func checkNotRestarted(t testing.TB, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if a, gen := templateOf(t, o); a[AnnotationRestartedForProxy] != "" || a[AnnotationRestartedAt] != "" || gen != 1 {
			t.Errorf("%T %s restarted: template annotations %v, generation %d", o, o.GetName(), a, gen)
		}
	}
}

// checkRestarted fails t unless the operator restarted the workload for the new proxy.
func checkRestarted(t testing.TB, obj client.Object) {
	t.Helper()
	a, _ := templateOf(t, obj)
	if a[AnnotationRestartedForProxy] != newProxy {
		t.Errorf("%T %s: %s=%q, want %s", obj, obj.GetName(), AnnotationRestartedForProxy, a[AnnotationRestartedForProxy], newProxy)
	}
	if _, err := time.Parse(time.RFC3339, a[AnnotationRestartedAt]); err != nil {
		t.Errorf("%T %s: %s=%q is not an RFC 3339 time: %v", obj, obj.GetName(), AnnotationRestartedAt, a[AnnotationRestartedAt], err)
	}
}

// waitDataPlane waits until mesh name's DataPlaneUpToDate condition is
// False (Outdated) with outdated of meshed pods, and its message contains
// every one of want and none of notWant.
func waitDataPlane(t testing.TB, name string, meshed, outdated int32, want, notWant []string) {
	t.Helper()
	eventually(t, fmt.Sprintf("Mesh %s: %d of %d pods outdated, message with %q and without %q", name, outdated, meshed, want, notWant), func() error {
		m := getMesh(t, name)
		if err := condition(m, meshv1.DataPlaneUpToDateCondition, metav1.ConditionFalse, meshv1.DataPlaneOutdatedReason); err != nil {
			return err
		}
		if m.Status.MeshedPods != meshed || m.Status.OutdatedPods != outdated {
			return fmt.Errorf("meshedPods %d, outdatedPods %d", m.Status.MeshedPods, m.Status.OutdatedPods)
		}
		msg := meta.FindStatusCondition(m.Status.Conditions, meshv1.DataPlaneUpToDateCondition).Message
		for _, w := range want {
			if !strings.Contains(msg, w) {
				return fmt.Errorf("message %q lacks %q", msg, w)
			}
		}
		for _, w := range notWant {
			if strings.Contains(msg, w) {
				return fmt.Errorf("message %q has %q", msg, w)
			}
		}
		return nil
	})
}

func createAppNamespace(t testing.TB, name string) {
	t.Helper()
	if err := k8sClient.Create(testCtx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
}

// Under the default updateStrategy, Manual, outdated pods are counted and
// their workloads left alone.
func TestManualUpdateStrategyRestartsNothing(t *testing.T) {
	const name, ns, app = "manual", "trellis-manual", "shop-manual"
	createAppNamespace(t, app)
	web, rs := createDeployment(t, app, "web", nil)
	createMeshedPods(t, app, "web", rs, name, oldProxy, 2)

	mesh := newMesh(name, ns)
	mesh.Spec.Proxy.Version = newProxy
	createMesh(t, mesh)
	makeAvailable(t, ns)
	waitCondition(t, name, meshv1.ReadyCondition, metav1.ConditionTrue, meshv1.ReadyReason)
	// Written by a reconcile that found the control plane available: under
	// RollingRestart, that reconcile would have restarted web.
	waitDataPlane(t, name, 2, 2, []string{"restart their workloads (kubectl rollout restart)"}, nil)
	checkNotRestarted(t, web)
}

// TestRollingRestart goes through a proxy upgrade under updateStrategy
// RollingRestart with maxConcurrentWorkloads 1: the test does what the
// workloads' controllers would do once restarted, replacing their pods by
// pods with the new proxy, and checks that the operator restarts one
// workload at a time, in order, and each only once.
func TestRollingRestart(t *testing.T) {
	const name, ns, app = "rolling", "trellis-rolling", "shop-rolling"
	createAppNamespace(t, app)
	api, apiRS := createDeployment(t, app, "api", nil)
	apiPods := createMeshedPods(t, app, "api", apiRS, name, oldProxy, 2)
	// Restarted for the new proxy already (by an operator that then
	// stopped), and not done: it is in progress.
	const restartedAt = "2020-01-01T00:00:00Z"
	cart, cartRS := createDeployment(t, app, "cart", map[string]string{AnnotationRestartedForProxy: newProxy, AnnotationRestartedAt: restartedAt})
	cartPods := createMeshedPods(t, app, "cart", cartRS, name, oldProxy, 1)
	web, webRS := createDeployment(t, app, "web", nil)
	webPods := createMeshedPods(t, app, "web", webRS, name, oldProxy, 2)
	db := createStatefulSet(t, app, "db")
	dbPods := createMeshedPods(t, app, "db", db, name, oldProxy, 1)
	debug := createMeshedPods(t, app, "debug", nil, name, oldProxy, 1)

	mesh := newMesh(name, ns)
	mesh.Spec.Proxy.Version = newProxy
	mesh.Spec.UpdateStrategy = meshv1.UpdateStrategySpec{
		Type:           meshv1.UpdateStrategyRollingRestart,
		RollingRestart: &meshv1.RollingRestartSpec{MaxConcurrentWorkloads: ptr.To[int32](1)},
	}
	createMesh(t, mesh)

	t.Run("nothing restarts before the control plane is available", func(t *testing.T) {
		waitDataPlane(t, name, 7, 7, []string{"no workload is restarted while the control plane has no available replica"}, nil)
		checkNotRestarted(t, api, web, db)
	})

	makeAvailable(t, ns)

	t.Run("a workload restarted for this version is in progress, and not restarted again", func(t *testing.T) {
		waitDataPlane(t, name, 7, 7, []string{
			"restarting deployment " + app + "/cart (at most 1 at a time)",
			"3 more workloads wait their turn",
			"1 pod has no workload the operator can restart",
		}, nil)
		if a, gen := templateOf(t, cart); a[AnnotationRestartedAt] != restartedAt || gen != 1 {
			t.Errorf("cart restarted again: template annotations %v, generation %d", a, gen)
		}
		checkNotRestarted(t, api, web, db)
	})

	t.Run("when it is done, the next workload restarts, and only it", func(t *testing.T) {
		setProxyVersion(t, cartPods, newProxy)
		waitDataPlane(t, name, 7, 6, []string{"restarting deployment " + app + "/api (at most 1 at a time)", "2 more workloads wait their turn"}, nil)
		checkRestarted(t, api)
		checkNotRestarted(t, web, db)
	})

	t.Run("the restart is recorded", func(t *testing.T) {
		want := "restarting deployment " + app + "/api: 2 pods run proxy " + oldProxy + ", want " + newProxy
		eventually(t, "an event on the Mesh", func() error {
			var evs eventsv1.EventList
			if err := k8sClient.List(testCtx, &evs); err != nil {
				return err
			}
			for _, e := range evs.Items {
				if e.Regarding.Kind == "Mesh" && e.Regarding.Name == name && e.Note == want {
					if e.Related == nil || e.Related.Kind != "Deployment" || e.Related.Name != "api" {
						return fmt.Errorf("event %q relates to %+v, want the Deployment", e.Note, e.Related)
					}
					return nil
				}
			}
			return fmt.Errorf("no event %q", want)
		})
	})

	t.Run("a pod without a workload is counted, and an in-progress workload not restarted twice", func(t *testing.T) {
		_, gen := templateOf(t, api)
		if err := k8sClient.Delete(testCtx, debug[0], client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
		// The reconcile that saw the pod go also looked at api again.
		waitDataPlane(t, name, 6, 5, []string{"restarting deployment " + app + "/api"}, []string{"no workload the operator can restart"})
		if _, now := templateOf(t, api); now != gen {
			t.Errorf("api restarted again: generation %d, was %d", now, gen)
		}
		checkNotRestarted(t, web, db)
	})

	t.Run("then the next one", func(t *testing.T) {
		setProxyVersion(t, apiPods, newProxy)
		waitDataPlane(t, name, 6, 3, []string{"restarting deployment " + app + "/web (at most 1 at a time)", "1 more workload waits its turn"}, nil)
		checkRestarted(t, web)
		checkNotRestarted(t, db)
	})

	t.Run("StatefulSets restart too", func(t *testing.T) {
		setProxyVersion(t, webPods, newProxy)
		waitDataPlane(t, name, 6, 1, []string{"restarting statefulset " + app + "/db (at most 1 at a time)"}, []string{"wait"})
		checkRestarted(t, db)
	})

	t.Run("up to date", func(t *testing.T) {
		setProxyVersion(t, dbPods, newProxy)
		waitCondition(t, name, meshv1.DataPlaneUpToDateCondition, metav1.ConditionTrue, meshv1.DataPlaneUpToDateReason)
	})
}

// TestWorkloadOf resolves pods' controllers to the workloads the operator can restart.
func TestWorkloadOf(t *testing.T) {
	const ns = "shop"
	objMeta := func(name string, owner client.Object, kind string) metav1.ObjectMeta {
		m := metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)}
		if owner != nil {
			m.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(owner, appsv1.SchemeGroupVersion.WithKind(kind))}
		}
		return m
	}
	web := &appsv1.Deployment{ObjectMeta: objMeta("web", nil, "")}
	paused := &appsv1.Deployment{ObjectMeta: objMeta("paused", nil, ""), Spec: appsv1.DeploymentSpec{Paused: true}}
	webRS := &appsv1.ReplicaSet{ObjectMeta: objMeta("web-1", web, "Deployment")}
	webRS2 := &appsv1.ReplicaSet{ObjectMeta: objMeta("web-2", web, "Deployment")}
	pausedRS := &appsv1.ReplicaSet{ObjectMeta: objMeta("paused-1", paused, "Deployment")}
	lonelyRS := &appsv1.ReplicaSet{ObjectMeta: objMeta("lonely", nil, "")}
	// Its Deployment was deleted and another made under the same name.
	staleRS := &appsv1.ReplicaSet{ObjectMeta: objMeta("stale-1", &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", UID: "old"}}, "Deployment")}
	db := &appsv1.StatefulSet{ObjectMeta: objMeta("db", nil, "")}
	onDelete := &appsv1.StatefulSet{ObjectMeta: objMeta("ondelete", nil, ""),
		Spec: appsv1.StatefulSetSpec{UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}}}
	partitioned := &appsv1.StatefulSet{ObjectMeta: objMeta("partitioned", nil, ""),
		Spec: appsv1.StatefulSetSpec{UpdateStrategy: appsv1.StatefulSetUpdateStrategy{
			Type: appsv1.RollingUpdateStatefulSetStrategyType, RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr.To[int32](2)}}}}
	agent := &appsv1.DaemonSet{ObjectMeta: objMeta("agent", nil, "")}
	agentOnDelete := &appsv1.DaemonSet{ObjectMeta: objMeta("agent-ondelete", nil, ""),
		Spec: appsv1.DaemonSetSpec{UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType}}}
	job := &batchv1.Job{ObjectMeta: objMeta("job", nil, "")}
	c := fake.NewClientBuilder().WithObjects(web, paused, webRS, webRS2, pausedRS, lonelyRS, staleRS, db, onDelete, partitioned, agent, agentOnDelete, job).Build()

	for name, tc := range map[string]struct {
		owner client.Object // the pod's controller; nil for a bare pod
		kind  string        // its kind
		want  string        // the workload found; "" for none
	}{
		"Deployment's ReplicaSet":              {webRS, "ReplicaSet", "deployment shop/web"},
		"paused Deployment":                    {pausedRS, "ReplicaSet", ""},
		"ReplicaSet without a Deployment":      {lonelyRS, "ReplicaSet", ""},
		"ReplicaSet of a replaced Deployment":  {staleRS, "ReplicaSet", ""},
		"ReplicaSet gone":                      {&appsv1.ReplicaSet{ObjectMeta: objMeta("gone", nil, "")}, "ReplicaSet", ""},
		"StatefulSet":                          {db, "StatefulSet", "statefulset shop/db"},
		"StatefulSet updated OnDelete":         {onDelete, "StatefulSet", ""},
		"StatefulSet updated by partition":     {partitioned, "StatefulSet", ""},
		"DaemonSet":                            {agent, "DaemonSet", "daemonset shop/agent"},
		"DaemonSet updated OnDelete":           {agentOnDelete, "DaemonSet", ""},
		"Job":                                  {job, "Job", ""},
		"bare pod":                             {nil, "", ""},
		"a kind of the same name in a CRD API": {&appsv1.Deployment{ObjectMeta: objMeta("web", nil, "")}, "Deployment", ""},
	} {
		t.Run(name, func(t *testing.T) {
			var ref *metav1.OwnerReference
			if tc.owner != nil {
				gv := appsv1.SchemeGroupVersion
				if tc.kind == "Job" {
					gv = batchv1.SchemeGroupVersion
				}
				if strings.HasPrefix(name, "a kind of the same name") {
					gv.Group = "example.com"
				}
				ref = metav1.NewControllerRef(tc.owner, gv.WithKind(tc.kind))
			}
			f := &workloadFinder{reader: c, owners: map[string]*workload{}}
			w, err := f.workloadOf(context.Background(), ns, ref)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if w != nil {
				got = w.String()
			}
			if got != tc.want {
				t.Errorf("workload %q, want %q", got, tc.want)
			}
		})
	}

	t.Run("the ReplicaSets of one Deployment are one workload", func(t *testing.T) {
		f := &workloadFinder{reader: c, owners: map[string]*workload{}}
		var found []*workload
		for _, rs := range []*appsv1.ReplicaSet{webRS, webRS2} {
			w, err := f.workloadOf(context.Background(), ns, metav1.NewControllerRef(rs, appsv1.SchemeGroupVersion.WithKind("ReplicaSet")))
			if err != nil {
				t.Fatal(err)
			}
			found = append(found, w)
		}
		if found[0] == nil || found[0] != found[1] {
			t.Errorf("workloads %v and %v, want one", found[0], found[1])
		}
	})

	t.Run("an error reading an owner is returned", func(t *testing.T) {
		errAway := errors.New("the API server is away")
		failing := fake.NewClientBuilder().WithInterceptorFuncs(interceptor.Funcs{
			Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
				return errAway
			},
		}).Build()
		f := &workloadFinder{reader: failing, owners: map[string]*workload{}}
		_, err := f.workloadOf(context.Background(), ns, metav1.NewControllerRef(webRS, appsv1.SchemeGroupVersion.WithKind("ReplicaSet")))
		if !errors.Is(err, errAway) || !strings.Contains(err.Error(), "ReplicaSet shop/web-1") {
			t.Errorf("error %v, want the API server's, naming the ReplicaSet", err)
		}
	})
}

// TestDataPlaneOutdatedMessage: Manual advises; RollingRestart says what the
// operator does, and what it leaves to the user.
func TestDataPlaneOutdatedMessage(t *testing.T) {
	pods := podsObservation{observed: true, version: newProxy, meshed: 10, outdated: 4}
	for name, tc := range map[string]struct {
		restart     restartObservation
		want, avoid []string
	}{
		"Manual": {
			want:  []string{"4 of 10 meshed pods run another proxy than v0.2.0: restart their workloads (kubectl rollout restart) to update them", "kubectl get pods -A"},
			avoid: []string{"restarting"},
		},
		"RollingRestart waiting": {
			restart: restartObservation{active: true, waiting: "the injector is not ready (see InjectorReady)"},
			want:    []string{"4 of 10 meshed pods run another proxy than v0.2.0; no workload is restarted while the injector is not ready"},
			avoid:   []string{"kubectl rollout restart"},
		},
		"RollingRestart restarting": {
			restart: restartObservation{active: true, restarting: []string{"deployment shop/api"}, queued: 2, unrestartable: 3},
			want: []string{"restarting deployment shop/api (at most 1 at a time)", "2 more workloads wait their turn",
				"3 pods have no workload the operator can restart", "delete them to update them"},
		},
		"RollingRestart restarting many": {
			restart: restartObservation{active: true, restarting: []string{"a", "b", "c", "d", "e", "f", "g"}},
			want:    []string{"restarting a, b, c, d, e and 2 more"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			mesh := newMesh("m", "trellis-m")
			msg := dataPlaneOutdatedMessage(mesh, &observation{pods: pods, restart: tc.restart})
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
			for _, w := range tc.avoid {
				if strings.Contains(msg, w) {
					t.Errorf("message %q has %q", msg, w)
				}
			}
		})
	}
}
