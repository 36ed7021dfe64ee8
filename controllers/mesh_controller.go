package controllers

import (
	"context"
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/membership"
	"github.com/trellis-mesh/trellis/validation"
)

// Index of Meshes by spec.namespace, to map events in a mesh namespace back to its Mesh.
const meshNamespaceIndex = "spec.namespace"

// resyncPeriod bounds how long the operator goes without looking at a Mesh,
// so that a certificate nearing renewal or an issuer that appeared is noticed
// even when nothing it watches changed.
const resyncPeriod = 10 * time.Minute

// MeshReconciler reconciles Mesh objects.
type MeshReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Images   Images
	// Now is the clock; tests set it to reach rotation times.
	Now func() time.Time
	// CertManager is true when cert-manager's CRDs were installed when the
	// operator started; only then does it watch Certificates.
	CertManager bool
	// Injector is where the operator serves sidecar injection; its zero
	// value leaves injection out.
	Injector Injector
	// APIReader reads what the operator does not cache: the ReplicaSets and
	// the users' Deployments, StatefulSets and DaemonSets whose pods
	// updateStrategy RollingRestart restarts. The manager's when unset.
	APIReader client.Reader
}

// The operator's own rights. Secrets and ConfigMaps are named: the operator
// reads no Secret but its CA's, in any namespace. The rules the control
// plane's ClusterRole grants (controlplane.go) are repeated here, because RBAC
// lets nobody grant what they do not hold.
//
// +kubebuilder:rbac:groups=mesh.trellis.dev,resources=meshes,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=mesh.trellis.dev,resources=meshes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=mesh.trellis.dev,resources=meshes/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=create
// +kubebuilder:rbac:groups="",resources=secrets,resourceNames=trellis-ca,verbs=get;list;watch;update;patch;delete
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=create
// +kubebuilder:rbac:groups="",resources=configmaps,resourceNames=trellis-ca-bundle,verbs=get;list;watch;update;patch;delete
// +kubebuilder:rbac:groups="",resources=serviceaccounts;services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles;clusterrolebindings;roles;rolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=issuers;clusterissuers,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes;grpcroutes;referencegrants,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes/status;grpcroutes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=mesh.trellis.dev,resources=trafficpolicies;authorizationpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.trellis.dev,resources=trafficpolicies/status;authorizationpolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete

// Reconcile brings one Mesh's owned objects to what its spec says and writes its status.
func (r *MeshReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	mesh := &meshv1.Mesh{}
	if err := r.Get(ctx, req.NamespacedName, mesh); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !mesh.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.reconcileDelete(ctx, mesh)
	}
	if !controllerutil.ContainsFinalizer(mesh, Finalizer) {
		patch := client.MergeFrom(mesh.DeepCopy())
		controllerutil.AddFinalizer(mesh, Finalizer)
		if err := r.Patch(ctx, mesh, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer: %w", err)
		}
	}

	obs := &observation{}
	before := mesh.DeepCopy()
	defer func() {
		computeStatus(mesh, obs)
		if err := r.Status().Patch(ctx, mesh, client.MergeFrom(before)); err != nil && !apierrors.IsNotFound(err) {
			retErr = kerrors.NewAggregate([]error{retErr, fmt.Errorf("writing status: %w", err)})
		}
	}()
	return r.reconcileNormal(ctx, mesh, obs)
}

func (r *MeshReconciler) reconcileNormal(ctx context.Context, mesh *meshv1.Mesh, obs *observation) (ctrl.Result, error) {
	conflict, err := validation.NamespaceConflict(ctx, r.Client, mesh, false)
	if err != nil {
		return ctrl.Result{}, err
	}
	if conflict != nil {
		// Nothing the operator does fixes this; a change to the spec, or the
		// other Mesh going away, triggers the next reconcile.
		obs.specErr = conflict
		r.Recorder.Eventf(mesh, nil, corev1.EventTypeWarning, meshv1.InvalidSpecReason, "Validate", conflict.Error())
		return ctrl.Result{}, nil
	}

	if err := r.reconcileNamespace(ctx, mesh); err != nil {
		return ctrl.Result{}, err
	}
	next, err := r.reconcileCA(ctx, mesh, obs)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.observePods(ctx, mesh, obs); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.reconcileTrustBundle(ctx, mesh, obs); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.reconcileControlPlane(ctx, mesh, obs); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.reconcileInjector(ctx, mesh, obs); err != nil {
		return ctrl.Result{}, err
	}
	// Last: restarted pods need what the steps above reconcile.
	again, err := r.restartOutdatedWorkloads(ctx, mesh, obs)
	if err != nil {
		return ctrl.Result{}, err
	}
	if again > 0 && (next == 0 || again < next) {
		next = again
	}
	return ctrl.Result{RequeueAfter: next}, nil
}

// reconcileNamespace creates the mesh namespace, or labels the user's own.
func (r *MeshReconciler) reconcileNamespace(ctx context.Context, mesh *meshv1.Mesh) error {
	ns := &corev1.Namespace{}
	err := r.Get(ctx, client.ObjectKey{Name: mesh.Spec.Namespace}, ns)
	switch {
	case apierrors.IsNotFound(err):
		ns = &corev1.Namespace{}
		ns.Name = mesh.Spec.Namespace
		ns.Labels = ownedLabels(mesh)
		ns.Annotations = map[string]string{AnnotationCreatedBy: mesh.Name}
		if err := r.Create(ctx, ns, client.FieldOwner(FieldOwner)); err != nil {
			return fmt.Errorf("creating namespace %s: %w", mesh.Spec.Namespace, err)
		}
		r.Recorder.Eventf(mesh, nil, corev1.EventTypeNormal, "Created", "Create", "created namespace %s", ns.Name)
		return nil
	case err != nil:
		return fmt.Errorf("reading namespace %s: %w", mesh.Spec.Namespace, err)
	case !ns.DeletionTimestamp.IsZero():
		return fmt.Errorf("namespace %s is being deleted; the mesh is installed again once it is gone", ns.Name)
	}
	return r.apply(ctx, corev1ac.Namespace(mesh.Spec.Namespace).WithLabels(ownedLabels(mesh)))
}

func (r *MeshReconciler) reconcileControlPlane(ctx context.Context, mesh *meshv1.Mesh, obs *observation) error {
	im := r.Images
	for _, ac := range []runtime.ApplyConfiguration{
		controlPlaneServiceAccount(mesh, im),
		controlPlaneClusterRole(mesh, im),
		controlPlaneClusterRoleBinding(mesh, im),
		controlPlaneRole(mesh, im),
		controlPlaneRoleBinding(mesh, im),
		controlPlaneService(mesh, im),
		controlPlanePDB(mesh, im),
		controlPlaneDeployment(mesh, im),
	} {
		if err := r.apply(ctx, ac); err != nil {
			return err
		}
	}
	deploy := &appsv1.Deployment{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: mesh.Spec.Namespace, Name: ControlPlaneName}, deploy); err != nil {
		// Just applied, so the cache may not have it yet: the watch brings it.
		return client.IgnoreNotFound(err)
	}
	obs.deployment = deploy
	obs.controlPlaneImage = im.ControlPlane(mesh)
	return nil
}

// reconcileDelete removes what the garbage collector would not: cluster-scoped
// objects, the trust bundles in application namespaces, and the mesh
// namespace when the operator created it. Namespaced objects are deleted too,
// so the result does not depend on the garbage collector's pace.
func (r *MeshReconciler) reconcileDelete(ctx context.Context, mesh *meshv1.Mesh) error {
	if !controllerutil.ContainsFinalizer(mesh, Finalizer) {
		return nil
	}
	logger := log.FromContext(ctx)
	// First, so that no new pod is sent to a Mesh going away.
	if err := r.deleteInjector(ctx, mesh); err != nil {
		return err
	}
	ns := mesh.Spec.Namespace
	var objs []client.Object
	add := func(o client.Object, namespace, name string) {
		o.SetNamespace(namespace)
		o.SetName(name)
		objs = append(objs, o)
	}
	add(&rbacv1.ClusterRoleBinding{}, "", controlPlaneClusterRoleName(mesh))
	add(&rbacv1.ClusterRole{}, "", controlPlaneClusterRoleName(mesh))
	add(&appsv1.Deployment{}, ns, ControlPlaneName)
	add(&corev1.Service{}, ns, ControlPlaneName)
	add(&policyv1.PodDisruptionBudget{}, ns, ControlPlaneName)
	add(&rbacv1.RoleBinding{}, ns, ControlPlaneName)
	add(&rbacv1.Role{}, ns, ControlPlaneName)
	add(&corev1.ServiceAccount{}, ns, ControlPlaneName)
	if r.CertManager {
		add(newCertificate(), ns, CertificateName)
	}
	add(&corev1.Secret{}, ns, CASecretName)

	bundles := &corev1.ConfigMapList{}
	if err := r.List(ctx, bundles, client.MatchingLabels{LabelOwnerMesh: mesh.Name}); err != nil {
		return fmt.Errorf("listing trust bundles: %w", err)
	}
	for i := range bundles.Items {
		objs = append(objs, &bundles.Items[i])
	}

	var errs []error
	for _, o := range objs {
		if err := r.deleteIfExists(ctx, o); err != nil {
			errs = append(errs, err)
		}
	}

	nsObj := &corev1.Namespace{}
	if err := r.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err == nil {
		if nsObj.Annotations[AnnotationCreatedBy] == mesh.Name && nsObj.DeletionTimestamp.IsZero() {
			if err := r.Delete(ctx, nsObj); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("deleting namespace %s: %w", ns, err))
			}
		}
	} else if !apierrors.IsNotFound(err) {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return kerrors.NewAggregate(errs)
	}

	logger.Info("removed the mesh's objects", "mesh", mesh.Name, "namespace", ns)
	patch := client.MergeFrom(mesh.DeepCopy())
	controllerutil.RemoveFinalizer(mesh, Finalizer)
	if err := r.Patch(ctx, mesh, patch); err != nil {
		return client.IgnoreNotFound(err)
	}
	return nil
}

// named is what typed apply configurations offer to name their object.
type named interface {
	GetKind() *string
	GetName() *string
	GetNamespace() *string
}

// describe names an apply configuration's object for an error message.
func describe(ac runtime.ApplyConfiguration) string {
	n, ok := ac.(named)
	if !ok {
		return fmt.Sprintf("%T", ac)
	}
	s := ptr.Deref(n.GetKind(), "object") + " "
	if ns := ptr.Deref(n.GetNamespace(), ""); ns != "" {
		s += ns + "/"
	}
	return s + ptr.Deref(n.GetName(), "")
}

// apply writes ac with server-side apply, as FieldOwner, taking over fields
// that someone else changed: the operator's word on what it owns is final.
func (r *MeshReconciler) apply(ctx context.Context, ac runtime.ApplyConfiguration) error {
	if err := r.Apply(ctx, ac, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying %s: %w", describe(ac), err)
	}
	return nil
}

// SetupWithManager registers the reconciler and its watches.
func (r *MeshReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &meshv1.Mesh{}, meshNamespaceIndex,
		func(o client.Object) []string { return []string{o.(*meshv1.Mesh).Spec.Namespace} }); err != nil {
		return fmt.Errorf("indexing Meshes by namespace: %w", err)
	}
	b := ctrl.NewControllerManagedBy(mgr).
		For(&meshv1.Mesh{}).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&rbacv1.ClusterRole{}).
		Owns(&rbacv1.ClusterRoleBinding{}).
		Owns(&rbacv1.Role{}).
		Owns(&rbacv1.RoleBinding{}).
		Owns(&corev1.ConfigMap{}).
		// The CA Secret is not always the operator's (cert-manager writes it
		// in certManager mode), so it is mapped by namespace, not owner.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.meshOfMeshNamespace)).
		// A namespace labeled or unlabeled for a Mesh changes where its trust bundle goes.
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.meshesOfNamespace)).
		Named("mesh")
	if r.CertManager {
		b = b.Owns(newCertificate())
	}
	if r.Injector.enabled() {
		b = b.Owns(&admissionregistrationv1.MutatingWebhookConfiguration{}).
			// Injected pods are counted, their namespaces get the trust
			// bundle, and under RollingRestart their workloads are restarted
			// as the previous ones' outdated pods go.
			Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(meshOfPod),
				builder.WithPredicates(predicate.TypedFuncs[client.Object]{
					UpdateFunc: func(e event.TypedUpdateEvent[client.Object]) bool {
						return injectedPodChanged(e.ObjectOld.(*corev1.Pod), e.ObjectNew.(*corev1.Pod))
					},
				}))
		if !r.Injector.ValidatingWebhook.IsZero() {
			// A new serving CA must reach every Mesh's injector at once, or
			// the API server stops trusting it.
			b = b.Watches(&admissionregistrationv1.ValidatingWebhookConfiguration{},
				handler.EnqueueRequestsFromMapFunc(r.allMeshes))
		}
	}
	return b.Complete(r)
}

// CacheOptions restricts what the operator caches to what it owns: Secrets and
// ConfigMaps by name (which is also all its RBAC lets it read), the rest by
// its managed-by label. Without this it would hold every Deployment and
// Service of the cluster in memory.
func CacheOptions(validatingWebhook ValidatingWebhookRef) cache.Options {
	managed := labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue})
	byLabel := cache.ByObject{Label: managed}
	meshed, err := labels.NewRequirement(meshv1.MeshLabel, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant key: cannot fail
	}
	vwc := cache.ByObject{Field: fields.OneTermEqualSelector("metadata.name", validatingWebhook.Name)}
	if validatingWebhook.Selector != nil {
		vwc = cache.ByObject{Label: validatingWebhook.Selector}
	}
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			// Only injected pods, which carry their Mesh's name.
			&corev1.Pod{}: {Label: labels.NewSelector().Add(*meshed)},
			&admissionregistrationv1.MutatingWebhookConfiguration{}:   byLabel,
			&admissionregistrationv1.ValidatingWebhookConfiguration{}: vwc,
			&corev1.Secret{}:                {Field: fields.OneTermEqualSelector("metadata.name", CASecretName)},
			&corev1.ConfigMap{}:             {Field: fields.OneTermEqualSelector("metadata.name", TrustBundleName)},
			&appsv1.Deployment{}:            byLabel,
			&corev1.Service{}:               byLabel,
			&corev1.ServiceAccount{}:        byLabel,
			&policyv1.PodDisruptionBudget{}: byLabel,
			&rbacv1.ClusterRole{}:           byLabel,
			&rbacv1.ClusterRoleBinding{}:    byLabel,
			&rbacv1.Role{}:                  byLabel,
			&rbacv1.RoleBinding{}:           byLabel,
		},
	}
}

// meshOfPod maps an injected pod to its Mesh.
func meshOfPod(_ context.Context, o client.Object) []reconcile.Request {
	if name := o.GetLabels()[meshv1.MeshLabel]; name != "" {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: name}}}
	}
	return nil
}

// allMeshes maps an object every Mesh depends on to every Mesh.
func (r *MeshReconciler) allMeshes(ctx context.Context, _ client.Object) []reconcile.Request {
	var meshes meshv1.MeshList
	if err := r.List(ctx, &meshes); err != nil {
		log.FromContext(ctx).Error(err, "listing Meshes")
		return nil
	}
	return requestsFor(meshes.Items)
}

// requestsFor is a reconcile request for each of meshes.
func requestsFor(meshes []meshv1.Mesh) []reconcile.Request {
	reqs := make([]reconcile.Request, 0, len(meshes))
	for _, m := range meshes {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKey{Name: m.Name}})
	}
	return reqs
}

// meshOfMeshNamespace maps an object in a mesh namespace to that namespace's Mesh.
func (r *MeshReconciler) meshOfMeshNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	return r.meshesUsingNamespace(ctx, o.GetNamespace())
}

func (r *MeshReconciler) meshesUsingNamespace(ctx context.Context, namespace string) []reconcile.Request {
	var meshes meshv1.MeshList
	if err := r.List(ctx, &meshes, client.MatchingFields{meshNamespaceIndex: namespace}); err != nil {
		log.FromContext(ctx).Error(err, "listing Meshes by namespace", "namespace", namespace)
		return nil
	}
	return requestsFor(meshes.Items)
}

// meshesOfNamespace maps a namespace to the Mesh its labels select, and to
// the Mesh it hosts. Called with the old and the new object on an update, so
// the Mesh a namespace was unlabeled from hears of it too.
func (r *MeshReconciler) meshesOfNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	reqs := r.meshesUsingNamespace(ctx, o.GetName())
	if name := membership.MeshFor(o.GetName(), o.GetLabels()); name != "" {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKey{Name: name}})
	}
	return reqs
}
