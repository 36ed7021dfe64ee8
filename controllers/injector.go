package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	admissionregistrationv1ac "k8s.io/client-go/applyconfigurations/admissionregistration/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/membership"
	"github.com/trellis-mesh/trellis/sidecar"
)

// Injector says where the operator serves sidecar injection, so that the
// reconciler can point each Mesh's MutatingWebhookConfiguration at it. The
// zero value turns injection off (the Mesh controller's own tests).
type Injector struct {
	// Service is the operator's webhook Service (port 443), which the API
	// server calls at InjectorPath. In a cluster.
	Service *client.ObjectKey
	// URL is called instead of Service when set: the tests' local server.
	URL string
	// CABundle returns the PEM CA that the webhook's serving certificate
	// chains to. The operator's own ValidatingWebhookConfiguration holds it,
	// whoever put it there (cert-manager, OLM or the operator itself);
	// ValidatingWebhook finds it, and a change to it reconciles every Mesh.
	CABundle func(ctx context.Context) ([]byte, error)
	// ValidatingWebhook finds that configuration; zero when CABundle comes
	// from elsewhere.
	ValidatingWebhook ValidatingWebhookRef
	// Config is what inject.Inject needs from the operator: the default
	// proxy image, against which pods are counted as outdated.
	Config inject.Config
}

func (in Injector) enabled() bool {
	return (in.Service != nil || in.URL != "") && in.CABundle != nil
}

// The rights to write each Mesh's injection webhook configuration. They are
// cluster-wide, because RBAC cannot name objects by prefix: the same right
// that Istio's and Linkerd's installers hold.
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get;list;watch;create;update;patch;delete
// The operator's ValidatingWebhookConfiguration has a name it knows under
// kustomize, and one OLM generates under OLM: it lists and watches them all
// (and caches only its own).
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=list;watch

// reconcileInjector applies mesh's MutatingWebhookConfiguration.
func (r *MeshReconciler) reconcileInjector(ctx context.Context, mesh *meshv1.Mesh, obs *observation) error {
	if !r.Injector.enabled() {
		return nil
	}
	bundle, err := r.Injector.CABundle(ctx)
	if err != nil {
		return fmt.Errorf("reading the webhook's CA bundle: %w", err)
	}
	obs.injector.configured = true
	obs.injector.caBundle = len(bundle) > 0
	return r.apply(ctx, injectorWebhookConfiguration(mesh, r.Injector, bundle))
}

// injectorWebhookConfiguration sends the API server's pod creations to the
// injector when, and only when, inject.MeshName would pick mesh for them.
// Selectors can only AND their terms, so each way of opting in is an entry
// of its own:
//
//   - namespace: the namespace selects the Mesh (trellis.dev/mesh=<name>,
//     or trellis-injection=enabled for the Mesh named default), and the pod
//     does not opt out;
//   - pod (default Mesh only): the namespace selects no Mesh and is not
//     disabled, and the pod is labeled trellis.dev/inject=true.
//
// The system namespaces, the mesh namespace and the operator's own
// namespace are excluded in every entry: a pod there never waits on the
// injector, whatever its labels, so a broken injector cannot stop the
// cluster or the operator from healing itself.
func injectorWebhookConfiguration(mesh *meshv1.Mesh, in Injector, caBundle []byte) *admissionregistrationv1ac.MutatingWebhookConfigurationApplyConfiguration {
	excluded := append(membership.SystemNamespaces(), mesh.Spec.Namespace)
	if in.Service != nil {
		excluded = append(excluded, in.Service.Namespace)
	}
	slices.Sort(excluded)
	excluded = slices.Compact(excluded)
	notExcluded := metav1ac.LabelSelectorRequirement().
		WithKey(corev1.LabelMetadataName).WithOperator(metav1.LabelSelectorOpNotIn).WithValues(excluded...)

	podNotOptedOut := metav1ac.LabelSelector().WithMatchExpressions(
		metav1ac.LabelSelectorRequirement().WithKey(meshv1.InjectPodLabel).
			WithOperator(metav1.LabelSelectorOpNotIn).WithValues("false"))

	named := metav1ac.LabelSelector().WithMatchExpressions(
		metav1ac.LabelSelectorRequirement().WithKey(meshv1.MeshLabel).
			WithOperator(metav1.LabelSelectorOpIn).WithValues(mesh.Name),
		metav1ac.LabelSelectorRequirement().WithKey(meshv1.InjectionLabel).
			WithOperator(metav1.LabelSelectorOpNotIn).WithValues("disabled"),
		notExcluded)
	entries := []*admissionregistrationv1ac.MutatingWebhookApplyConfiguration{
		injectorWebhook("mesh-label.sidecar-injector.trellis.dev", mesh, in, caBundle, named, podNotOptedOut),
	}
	if mesh.Name == meshv1.DefaultMeshName {
		enabled := metav1ac.LabelSelector().WithMatchExpressions(
			metav1ac.LabelSelectorRequirement().WithKey(meshv1.InjectionLabel).
				WithOperator(metav1.LabelSelectorOpIn).WithValues("enabled"),
			metav1ac.LabelSelectorRequirement().WithKey(meshv1.MeshLabel).
				WithOperator(metav1.LabelSelectorOpDoesNotExist),
			notExcluded)
		unlabeled := metav1ac.LabelSelector().WithMatchExpressions(
			metav1ac.LabelSelectorRequirement().WithKey(meshv1.InjectionLabel).
				WithOperator(metav1.LabelSelectorOpNotIn).WithValues("enabled", "disabled"),
			metav1ac.LabelSelectorRequirement().WithKey(meshv1.MeshLabel).
				WithOperator(metav1.LabelSelectorOpDoesNotExist),
			notExcluded)
		podOptedIn := metav1ac.LabelSelector().WithMatchExpressions(
			metav1ac.LabelSelectorRequirement().WithKey(meshv1.InjectPodLabel).
				WithOperator(metav1.LabelSelectorOpIn).WithValues("true"))
		entries = append(entries,
			injectorWebhook("namespace.sidecar-injector.trellis.dev", mesh, in, caBundle, enabled, podNotOptedOut),
			injectorWebhook("pod.sidecar-injector.trellis.dev", mesh, in, caBundle, unlabeled, podOptedIn))
	}
	return admissionregistrationv1ac.MutatingWebhookConfiguration(InjectorWebhookConfigurationName(mesh)).
		WithLabels(ownedLabels(mesh)).
		WithOwnerReferences(ownerReference(mesh)).
		WithWebhooks(entries...)
}

// failurePolicyOf is mesh's spec.injection.failurePolicy, defaulted as the
// CRD does; its values (Fail, Ignore) are the API server's.
func failurePolicyOf(mesh *meshv1.Mesh) meshv1.FailurePolicy {
	if mesh.Spec.Injection.FailurePolicy == "" {
		return meshv1.FailurePolicyFail
	}
	return mesh.Spec.Injection.FailurePolicy
}

func injectorWebhook(name string, mesh *meshv1.Mesh, in Injector, caBundle []byte,
	namespaces, pods *metav1ac.LabelSelectorApplyConfiguration) *admissionregistrationv1ac.MutatingWebhookApplyConfiguration {
	cc := admissionregistrationv1ac.WebhookClientConfig()
	if in.URL != "" {
		cc = cc.WithURL(in.URL)
	} else {
		cc = cc.WithService(admissionregistrationv1ac.ServiceReference().
			WithNamespace(in.Service.Namespace).WithName(in.Service.Name).
			WithPath(InjectorPath).WithPort(443))
	}
	if len(caBundle) > 0 {
		cc = cc.WithCABundle(caBundle...)
	}
	failurePolicy := admissionregistrationv1.FailurePolicyType(failurePolicyOf(mesh))
	return admissionregistrationv1ac.MutatingWebhook().
		WithName(name).
		WithClientConfig(cc).
		WithRules(admissionregistrationv1ac.RuleWithOperations().
			WithOperations(admissionregistrationv1.Create).
			WithAPIGroups("").WithAPIVersions("v1").WithResources("pods").
			WithScope(admissionregistrationv1.NamespacedScope)).
		WithNamespaceSelector(namespaces).
		WithObjectSelector(pods).
		WithFailurePolicy(failurePolicy).
		WithMatchPolicy(admissionregistrationv1.Equivalent).
		// Events on skipped pods' owners are not side effects on the pod;
		// the handler records none on a dry run.
		WithSideEffects(admissionregistrationv1.SideEffectClassNone).
		WithTimeoutSeconds(InjectorTimeoutSeconds).
		WithAdmissionReviewVersions("v1").
		// Another webhook that adds a container after us gets its probes
		// and ports checked again; Inject is idempotent.
		WithReinvocationPolicy(admissionregistrationv1.IfNeededReinvocationPolicy)
}

// observePods counts mesh's injected pods and those with another proxy
// version than the Mesh asks for, and adds their namespaces to namespaces,
// which get the trust bundle: a pod that opted in by its own label lives in
// a namespace that is not labeled for the Mesh.
func (r *MeshReconciler) observePods(ctx context.Context, mesh *meshv1.Mesh, obs *observation) error {
	if !r.Injector.enabled() {
		return nil
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.MatchingLabels{meshv1.MeshLabel: mesh.Name}); err != nil {
		return fmt.Errorf("listing meshed pods: %w", err)
	}
	_, want, err := inject.ProxyImage(mesh, r.Injector.Config)
	if err != nil {
		want = ""
	}
	obs.pods.observed = true
	obs.pods.version = want
	obs.pods.namespaces = map[string]bool{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if podEnded(p) {
			continue
		}
		if _, ok := p.Annotations[sidecar.AnnotationStatus]; !ok {
			continue
		}
		obs.pods.meshed++
		if p.Labels[sidecar.LabelProxyVersion] != want {
			obs.pods.outdated++
			obs.pods.outdatedPods = append(obs.pods.outdatedPods, p)
		}
		if p.DeletionTimestamp.IsZero() {
			obs.pods.namespaces[p.Namespace] = true
		}
	}
	return nil
}

// deleteInjector removes mesh's webhook configuration first of all, so that
// no pod is sent to a Mesh being deleted.
func (r *MeshReconciler) deleteInjector(ctx context.Context, mesh *meshv1.Mesh) error {
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	cfg.Name = InjectorWebhookConfigurationName(mesh)
	if err := r.Delete(ctx, cfg); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting MutatingWebhookConfiguration %s: %w", cfg.Name, err)
	}
	return nil
}

// ValidatingWebhookRef finds the operator's ValidatingWebhookConfiguration:
// by Name where the operator's manifests name it, or by Selector, its
// labels, where OLM creates it from the CSV's webhookdefinition under a
// generated name (OLM labels it olm.webhook-description-generate-name=<the
// webhook's generateName>).
type ValidatingWebhookRef struct {
	Name     string
	Selector labels.Selector
}

// IsZero says that r finds nothing.
func (r ValidatingWebhookRef) IsZero() bool { return r.Name == "" && r.Selector == nil }

func (r ValidatingWebhookRef) String() string {
	if r.Selector != nil {
		return "with labels " + r.Selector.String()
	}
	return r.Name
}

// ValidatingWebhookCABundle reads the caBundle of the operator's
// ValidatingWebhookConfiguration that ref finds, with reader:
// Injector.CABundle for a webhook whose serving certificate someone else
// keeps. Of several configurations a selector finds, the first by name with
// a caBundle wins.
func ValidatingWebhookCABundle(reader client.Reader, ref ValidatingWebhookRef) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		var cfgs []admissionregistrationv1.ValidatingWebhookConfiguration
		if ref.Selector != nil {
			list := &admissionregistrationv1.ValidatingWebhookConfigurationList{}
			if err := reader.List(ctx, list, client.MatchingLabelsSelector{Selector: ref.Selector}); err != nil {
				return nil, fmt.Errorf("listing the ValidatingWebhookConfigurations %s: %w", ref, err)
			}
			cfgs = list.Items
			slices.SortFunc(cfgs, func(a, b admissionregistrationv1.ValidatingWebhookConfiguration) int {
				return strings.Compare(a.Name, b.Name)
			})
		} else {
			cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{}
			if err := reader.Get(ctx, client.ObjectKey{Name: ref.Name}, cfg); err != nil {
				return nil, fmt.Errorf("reading ValidatingWebhookConfiguration %s: %w", ref.Name, err)
			}
			cfgs = append(cfgs, *cfg)
		}
		for _, cfg := range cfgs {
			for _, w := range cfg.Webhooks {
				if len(w.ClientConfig.CABundle) > 0 {
					return w.ClientConfig.CABundle, nil
				}
			}
		}
		return nil, nil
	}
}

// injectedPodChanged says whether an update to a meshed pod can change
// what its Mesh counts: its labels, its deletion, its end. The many status
// updates of a running pod are not looked at.
func injectedPodChanged(old, new *corev1.Pod) bool {
	return !maps.Equal(old.Labels, new.Labels) ||
		old.DeletionTimestamp.IsZero() != new.DeletionTimestamp.IsZero() ||
		podEnded(old) != podEnded(new)
}

func podEnded(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}
