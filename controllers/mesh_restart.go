package controllers

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/sidecar"
)

// The rights to restart the workloads of pods that run an outdated proxy
// (updateStrategy RollingRestart): a pod names its ReplicaSet, StatefulSet or
// DaemonSet, and a ReplicaSet its Deployment. Reading and patching
// Deployments is granted for the control plane already (mesh_controller.go).
//
// +kubebuilder:rbac:groups=apps,resources=replicasets,verbs=get
// +kubebuilder:rbac:groups=apps,resources=statefulsets;daemonsets,verbs=get;patch

// restartRequeue is how soon a Mesh is looked at again while some of its
// workloads have outdated pods: the pod watch hears of pods created,
// relabeled, deleted or ended, but not of a pod that starts running.
const restartRequeue = 30 * time.Second

// restartOutdatedWorkloads carries out updateStrategy RollingRestart. The
// Deployments, StatefulSets and DaemonSets whose running pods have another
// proxy version than the Mesh's are restarted as `kubectl rollout restart`
// does, in order of namespace, kind and name, while fewer than
// maxConcurrentWorkloads are in progress: restarted for this version and
// still running outdated pods. A workload is never restarted twice for one
// version. Pods that no such workload controls are only counted. It returns
// how soon to look again.
func (r *MeshReconciler) restartOutdatedWorkloads(ctx context.Context, mesh *meshv1.Mesh, obs *observation) (time.Duration, error) {
	want := obs.pods.version
	if mesh.Spec.UpdateStrategy.Type != meshv1.UpdateStrategyRollingRestart || !obs.pods.observed || obs.pods.outdated == 0 || want == "" {
		return 0, nil
	}
	st := &obs.restart
	st.active = true
	// The watches on the control plane's Deployment, the webhook
	// configurations and the CA bring the reconcile that goes on.
	if st.waiting = restartBlocker(obs); st.waiting != "" {
		return 0, nil
	}

	finder := &workloadFinder{reader: r.APIReader, owners: map[string]*workload{}}
	var workloads []*workload
	for _, p := range obs.pods.outdatedPods {
		w, err := finder.workloadOf(ctx, p.Namespace, metav1.GetControllerOf(p))
		if err != nil {
			return 0, err
		}
		running := p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp.IsZero()
		if w == nil {
			if running {
				st.unrestartable++
			}
			continue
		}
		if w.outdated == 0 {
			workloads = append(workloads, w)
		}
		w.outdated++
		w.versions[p.Labels[sidecar.LabelProxyVersion]] = true
		if running {
			w.running++
		}
	}
	slices.SortFunc(workloads, func(a, b *workload) int {
		return cmp.Or(strings.Compare(a.obj.GetNamespace(), b.obj.GetNamespace()),
			strings.Compare(a.kind, b.kind), strings.Compare(a.obj.GetName(), b.obj.GetName()))
	})

	// A workload restarted for this version is in progress until none of its
	// pods, terminating or pending ones included, runs another proxy: its
	// controller replaces them at its own pace (maxSurge, maxUnavailable).
	var queue []*workload
	for _, w := range workloads {
		switch {
		case w.template.Annotations[AnnotationRestartedForProxy] == want:
			st.restarting = append(st.restarting, w.String())
		case w.running > 0:
			queue = append(queue, w)
		}
	}
	for len(queue) > 0 && len(st.restarting) < maxConcurrentWorkloads(mesh) {
		if err := r.restartWorkload(ctx, mesh, queue[0], want); err != nil {
			return 0, err
		}
		st.restarting = append(st.restarting, queue[0].String())
		queue = queue[1:]
	}
	st.queued = len(queue)
	if len(workloads) == 0 {
		// Only pods the operator cannot restart: their changes are watched.
		return 0, nil
	}
	return restartRequeue, nil
}

// restartBlocker says why no workload may be restarted now, or "" when they
// may: their new pods need the injector to get the proxy, and the CA and the
// control plane to get an identity. Restarting without them would take
// running pods away.
func restartBlocker(obs *observation) string {
	switch {
	case !obs.injector.caBundle:
		return "the injector is not ready (see InjectorReady)"
	case obs.ca.reason != "":
		return "the certificate authority is not ready (see CAReady)"
	case obs.deployment == nil || obs.deployment.Status.AvailableReplicas == 0:
		return "the control plane has no available replica (see ControlPlaneReady)"
	}
	return ""
}

// maxConcurrentWorkloads is spec.updateStrategy.rollingRestart.maxConcurrentWorkloads,
// defaulted as the CRD does.
func maxConcurrentWorkloads(mesh *meshv1.Mesh) int {
	if rr := mesh.Spec.UpdateStrategy.RollingRestart; rr != nil && ptr.Deref(rr.MaxConcurrentWorkloads, 0) > 0 {
		return int(*rr.MaxConcurrentWorkloads)
	}
	return 1
}

// restartWorkload changes w's pod template as `kubectl rollout restart`
// does, and marks it restarted for the proxy version want.
func (r *MeshReconciler) restartWorkload(ctx context.Context, mesh *meshv1.Mesh, w *workload, want string) error {
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{
			AnnotationRestartedAt:       r.Now().UTC().Format(time.RFC3339),
			AnnotationRestartedForProxy: want,
		},
	}}}})
	if err != nil {
		return fmt.Errorf("restarting %s: %w", w, err)
	}
	if err := r.Patch(ctx, w.obj, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("restarting %s: %w", w, err)
	}
	versions := slices.Sorted(maps.Keys(w.versions))
	for i, v := range versions {
		if v == "" {
			versions[i] = "unknown"
		}
	}
	log.FromContext(ctx).Info("restarting a workload whose pods run an outdated proxy",
		"workload", w.String(), "outdatedPods", w.outdated, "proxyVersions", versions, "want", want)
	r.Recorder.Eventf(mesh, w.obj, corev1.EventTypeNormal, "RestartingWorkload", "Restart",
		"restarting %s: %d %s proxy %s, want %s", w, w.outdated, plural(w.outdated, "pod runs", "pods run"),
		strings.Join(versions, ", "), want)
	return nil
}

// workload is a Deployment, StatefulSet or DaemonSet that the operator can
// restart, and what it found of its outdated pods.
type workload struct {
	obj      client.Object
	kind     string
	template *corev1.PodTemplateSpec
	// outdated counts its pods that run another proxy version, and running
	// those of them that run and are not being deleted.
	outdated, running int
	// versions are the proxy versions of its outdated pods.
	versions map[string]bool
}

func newWorkload(obj client.Object, kind string, template *corev1.PodTemplateSpec) *workload {
	return &workload{obj: obj, kind: kind, template: template, versions: map[string]bool{}}
}

// String names w as the operator's messages do: "deployment shop/web".
func (w *workload) String() string {
	return strings.ToLower(w.kind) + " " + w.obj.GetNamespace() + "/" + w.obj.GetName()
}

// workloadFinder finds the workload that controls a pod. It reads with an
// uncached reader: the operator caches neither ReplicaSets nor the users'
// Deployments, StatefulSets and DaemonSets, and an informer on them all
// would hold every one of the cluster's in memory. It reads each owner once.
type workloadFinder struct {
	reader client.Reader
	// owners maps a controller, "namespace/Kind/name", to its workload: nil
	// when it is none the operator can restart.
	owners map[string]*workload
}

// workloadOf is the workload that the owner ref, in namespace, is or
// belongs to; nil when there is none the operator can restart.
func (f *workloadFinder) workloadOf(ctx context.Context, namespace string, ref *metav1.OwnerReference) (*workload, error) {
	if ref == nil {
		return nil, nil
	}
	if gv, err := schema.ParseGroupVersion(ref.APIVersion); err != nil || gv.Group != appsv1.GroupName {
		return nil, nil
	}
	key := namespace + "/" + ref.Kind + "/" + ref.Name
	if w, ok := f.owners[key]; ok {
		return w, nil
	}
	w, err := f.find(ctx, namespace, ref)
	if err != nil {
		return nil, err
	}
	f.owners[key] = w
	return w, nil
}

func (f *workloadFinder) find(ctx context.Context, namespace string, ref *metav1.OwnerReference) (*workload, error) {
	var obj client.Object
	switch ref.Kind {
	case "ReplicaSet":
		obj = &appsv1.ReplicaSet{}
	case "Deployment":
		obj = &appsv1.Deployment{}
	case "StatefulSet":
		obj = &appsv1.StatefulSet{}
	case "DaemonSet":
		obj = &appsv1.DaemonSet{}
	default:
		return nil, nil
	}
	err := f.reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, obj)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading %s %s/%s: %w", ref.Kind, namespace, ref.Name, err)
	case obj.GetUID() != ref.UID || !obj.GetDeletionTimestamp().IsZero():
		// Another object of that name, or one going away with its pods.
		return nil, nil
	}
	switch o := obj.(type) {
	case *appsv1.ReplicaSet:
		// A ReplicaSet of its own has no template change that replaces its pods.
		if owner := metav1.GetControllerOf(o); owner != nil && owner.Kind == "Deployment" {
			return f.workloadOf(ctx, namespace, owner)
		}
	case *appsv1.Deployment:
		// A paused Deployment would hold the restart, and the next workload's, forever.
		if !o.Spec.Paused {
			return newWorkload(o, ref.Kind, &o.Spec.Template), nil
		}
	case *appsv1.StatefulSet:
		// OnDelete replaces no pod, and a partition keeps the pods below it.
		s := o.Spec.UpdateStrategy
		if s.Type != appsv1.OnDeleteStatefulSetStrategyType && (s.RollingUpdate == nil || ptr.Deref(s.RollingUpdate.Partition, 0) == 0) {
			return newWorkload(o, ref.Kind, &o.Spec.Template), nil
		}
	case *appsv1.DaemonSet:
		if o.Spec.UpdateStrategy.Type != appsv1.OnDeleteDaemonSetStrategyType {
			return newWorkload(o, ref.Kind, &o.Spec.Template), nil
		}
	}
	return nil, nil
}
