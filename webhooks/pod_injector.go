package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/controllers"
	"github.com/trellis-mesh/trellis/inject"
)

// PodInjector is the admission handler of sidecar injection. It is thin on
// purpose: it finds the pod's Namespace and Mesh and hands them to
// inject.Inject, which decides and does everything else, and turns the
// result into a JSON patch. Each Mesh's MutatingWebhookConfiguration, which
// the Mesh controller writes, sends it only the pods that opted in.
type PodInjector struct {
	// Cache reads Meshes and Namespaces: the manager's cache, so that an
	// admission costs no call to the API server.
	Cache client.Reader
	// APIReader reads a Namespace that the cache has not seen yet: a pod
	// created right after its namespace.
	APIReader client.Reader
	// Config is the operator's default proxy image and the cluster's version.
	Config inject.Config
	// Recorder records skipped pods on their owner.
	Recorder events.EventRecorder
}

var admissions = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "trellis_injector_admission_duration_seconds",
	Help:    "Time the sidecar injector took per admission, by result: injected, skipped, allowed (not for any Mesh), denied or error.",
	Buckets: []float64{.0005, .001, .002, .005, .01, .05, .25, 1},
}, []string{"result"})

func init() { metrics.Registry.MustRegister(admissions) }

// Handle injects the pod of a CREATE request, or says why not.
func (in *PodInjector) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	resp, result := in.handle(ctx, req)
	admissions.WithLabelValues(result).Observe(time.Since(start).Seconds())
	return resp
}

func (in *PodInjector) handle(ctx context.Context, req admission.Request) (admission.Response, string) {
	if req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" || req.Kind.Group != "" {
		return admission.Allowed("the injector only looks at pod creations"), "allowed"
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(req.Object.Raw, pod); err != nil {
		return admission.Errored(http.StatusBadRequest,
			fmt.Errorf("the injector cannot read the pod in the AdmissionReview's request.object: %w", err)), "error"
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	logger := log.FromContext(ctx).WithValues("namespace", req.Namespace, "pod", inject.PodRef(pod, nil))
	ns, err := in.namespace(ctx, req.Namespace)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err), "error"
	}

	name := inject.MeshName(pod, ns)
	if name == "" {
		// OLM may have replaced the namespaceSelector that keeps these away.
		return admission.Allowed("the pod and its namespace opt in to no Mesh"), "allowed"
	}
	mesh := &meshv1.Mesh{}
	if err := in.Cache.Get(ctx, client.ObjectKey{Name: name}, mesh); err != nil {
		if apierrors.IsNotFound(err) {
			return admission.Allowed("").WithWarnings(fmt.Sprintf(
				"pod not meshed: namespace %s selects Mesh %q, which does not exist; create it, or relabel the namespace", ns.Name, name)), "allowed"
		}
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("reading Mesh %s: %w", name, err)), "error"
	}
	if !mesh.DeletionTimestamp.IsZero() {
		return admission.Allowed("").WithWarnings(fmt.Sprintf("pod not meshed: Mesh %s is being deleted", name)), "allowed"
	}

	out, report, err := inject.Inject(pod, ns, mesh, in.Config)
	if err != nil {
		logger.Info("refused a pod that cannot be injected", "mesh", name, "error", err.Error())
		return admission.Denied(err.Error()), "denied"
	}
	if !report.Injected {
		in.recordSkip(pod, ns, mesh, report.Skipped, req.DryRun)
		resp := admission.Allowed(string(report.Skipped))
		if w := skipWarning(report.Skipped, name); w != "" {
			resp = resp.WithWarnings(w)
		}
		return resp, "skipped"
	}
	patches, err := injectionPatch(pod, out)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding the injected pod: %w", err)), "error"
	}
	resp := admission.Patched("", patches...)
	logger.V(1).Info("injected", "mesh", name, "added", report.Added)
	return resp.WithWarnings(report.Warnings...), "injected"
}

// injectionPatch is the JSON patch from pod to out: one operation per part
// that Inject changes, each replacing that part whole. Diffing the two
// documents (admission.PatchResponseFromRaw) gives the same result at about
// three times the cost, and the injector's budget is 2 ms an admission.
func injectionPatch(pod, out *corev1.Pod) ([]jsonpatch.JsonPatchOperation, error) {
	parts := []struct {
		path    string
		value   any
		changed bool
	}{
		{"/metadata/labels", out.Labels, !maps.Equal(pod.Labels, out.Labels)},
		{"/metadata/annotations", out.Annotations, !maps.Equal(pod.Annotations, out.Annotations)},
		{"/spec/serviceAccountName", out.Spec.ServiceAccountName, pod.Spec.ServiceAccountName != out.Spec.ServiceAccountName},
		{"/spec/initContainers", out.Spec.InitContainers, !equality.Semantic.DeepEqual(pod.Spec.InitContainers, out.Spec.InitContainers)},
		{"/spec/containers", out.Spec.Containers, !equality.Semantic.DeepEqual(pod.Spec.Containers, out.Spec.Containers)},
		{"/spec/volumes", out.Spec.Volumes, !equality.Semantic.DeepEqual(pod.Spec.Volumes, out.Spec.Volumes)},
	}
	var ops []jsonpatch.JsonPatchOperation
	for _, p := range parts {
		if !p.changed {
			continue
		}
		v, err := json.Marshal(p.value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.path, err)
		}
		// "add" sets an object member whether or not it exists (RFC 6902).
		ops = append(ops, jsonpatch.JsonPatchOperation{Operation: "add", Path: p.path, Value: json.RawMessage(v)})
	}
	// Inject changes nothing else; if it ever does, this fails loudly
	// rather than admitting a pod without it.
	rest, restOut := pod.DeepCopy(), out.DeepCopy()
	for _, q := range []*corev1.Pod{rest, restOut} {
		q.Labels, q.Annotations, q.Spec.ServiceAccountName = nil, nil, ""
		q.Spec.InitContainers, q.Spec.Containers, q.Spec.Volumes = nil, nil, nil
	}
	if !equality.Semantic.DeepEqual(rest, restOut) {
		return nil, fmt.Errorf("the injected pod differs in a field the patch does not carry")
	}
	return ops, nil
}

func (in *PodInjector) namespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	ns := &corev1.Namespace{}
	err := in.Cache.Get(ctx, client.ObjectKey{Name: name}, ns)
	if apierrors.IsNotFound(err) && in.APIReader != nil {
		err = in.APIReader.Get(ctx, client.ObjectKey{Name: name}, ns)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the pod's namespace %s: %w", name, err)
	}
	return ns, nil
}

// skipWarning is what the user sees in kubectl for a pod that asked to be
// meshed and is not; "" for skips that are no news to them.
func skipWarning(reason inject.SkipReason, mesh string) string {
	switch reason {
	case inject.HostNetwork:
		return fmt.Sprintf("pod not meshed by Mesh %s: it uses hostNetwork, where the proxy's redirection would capture the node's traffic", mesh)
	case inject.NoServiceAccountToken:
		return fmt.Sprintf("pod not meshed by Mesh %s: automountServiceAccountToken is false; set it to true or remove it to mesh the pod", mesh)
	case inject.MeshNamespace:
		return fmt.Sprintf("pod not meshed: namespace is Mesh %s's own, where the control plane runs without sidecars", mesh)
	case inject.SystemNamespace:
		return "pod not meshed: system namespaces are never meshed"
	}
	return ""
}

// recordSkip puts an Event on the owner of a pod that asked for the mesh
// and did not get it, where `kubectl describe` on the Deployment's
// ReplicaSet or the Job shows it; on the pod itself when it has no owner.
// Reinvocations (AlreadyInjected) and dry runs record nothing.
func (in *PodInjector) recordSkip(pod *corev1.Pod, ns *corev1.Namespace, mesh *meshv1.Mesh, reason inject.SkipReason, dryRun *bool) {
	if in.Recorder == nil || ptr.Deref(dryRun, false) || reason == inject.AlreadyInjected {
		return
	}
	regarding := &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: pod.Name, UID: pod.UID},
	}
	if pod.Name == "" {
		regarding.Name = pod.GenerateName
	}
	if owner := metav1.GetControllerOf(pod); owner != nil {
		regarding.TypeMeta = metav1.TypeMeta{APIVersion: owner.APIVersion, Kind: owner.Kind}
		regarding.ObjectMeta = metav1.ObjectMeta{Namespace: ns.Name, Name: owner.Name, UID: owner.UID}
	}
	note := fmt.Sprintf("pod %s not injected with Mesh %s's sidecar: %s", inject.PodRef(pod, nil), mesh.Name, reason)
	if w := skipWarning(reason, mesh.Name); w != "" {
		note = w
	}
	in.Recorder.Eventf(regarding, nil, corev1.EventTypeNormal, "InjectionSkipped", "Inject", "%s (%s)", note, reason)
}

// SetupPodInjector registers the injector on the manager's webhook server
// at controllers.InjectorPath.
func SetupPodInjector(mgr ctrl.Manager, cfg inject.Config) {
	mgr.GetWebhookServer().Register(controllers.InjectorPath, &webhook.Admission{Handler: &PodInjector{
		Cache:     mgr.GetCache(),
		APIReader: mgr.GetAPIReader(),
		Config:    cfg,
		Recorder:  mgr.GetEventRecorder("trellis-injector"),
	}})
}
