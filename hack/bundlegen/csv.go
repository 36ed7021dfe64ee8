package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/operator-framework/api/pkg/operators/v1alpha1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The operator's flags that name the image it deploys (main.go): the
// control plane and the proxy are that repository at that tag.
const (
	imageFlag        = "--image="
	imageVersionFlag = "--image-version="
)

// operands are the components that run the image the operator's
// --image and --image-version name; each is a relatedImages entry.
var operands = []string{"controlplane", "proxy"}

// input is the kustomize stream sorted by what becomes of each object.
type input struct {
	base        *unstructured.Unstructured // the ClusterServiceVersion of config/manifests/bases
	crds        []*unstructured.Unstructured
	deployments []*unstructured.Unstructured
	scorecard   *unstructured.Unstructured
	samples     []*unstructured.Unstructured // objects of the owned kinds
	rest        []*unstructured.Unstructured
}

func sortInput(objs []*unstructured.Unstructured) (*input, error) {
	in := &input{}
	owned := map[schema.GroupKind]bool{}
	for _, o := range objs {
		if o.GroupVersionKind().GroupKind() == (schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}) {
			group, _, _ := unstructured.NestedString(o.Object, "spec", "group")
			kind, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind")
			owned[schema.GroupKind{Group: group, Kind: kind}] = true
		}
	}
	var err error
	for _, o := range objs {
		gk := o.GroupVersionKind().GroupKind()
		switch {
		case gk == schema.GroupKind{Group: v1alpha1.GroupName, Kind: v1alpha1.ClusterServiceVersionKind}:
			if in.base != nil {
				err = errors.Join(err, fmt.Errorf("two ClusterServiceVersions in the input: %s and %s", in.base.GetName(), o.GetName()))
			}
			in.base = o
		case gk == schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}:
			in.crds = append(in.crds, o)
		case gk == schema.GroupKind{Group: "apps", Kind: "Deployment"}:
			in.deployments = append(in.deployments, o)
		case gk == schema.GroupKind{Group: "scorecard.operatorframework.io", Kind: "Configuration"}:
			in.scorecard = o
		case owned[gk]:
			in.samples = append(in.samples, o)
		default:
			in.rest = append(in.rest, o)
		}
	}
	if in.base == nil {
		err = errors.Join(err, errors.New("no ClusterServiceVersion in the input: config/manifests must include bases/<package>.clusterserviceversion.yaml"))
	}
	if len(in.deployments) == 0 {
		err = errors.Join(err, errors.New("no Deployment in the input: the operator's comes from config/manager"))
	}
	return in, err
}

// csvResult is the ClusterServiceVersion and what went into it, which is
// therefore not written out on its own.
type csvResult struct {
	csv      *v1alpha1.ClusterServiceVersion
	consumed map[*unstructured.Unstructured]bool
}

// buildCSV fills the base ClusterServiceVersion from the rest of the input.
func buildCSV(in *input, api *apiPackage, opts options) (*csvResult, error) {
	csv, err := convert[v1alpha1.ClusterServiceVersion](in.base)
	if err != nil {
		return nil, err
	}
	res := &csvResult{csv: csv, consumed: map[*unstructured.Unstructured]bool{in.base: true}}
	image := opts.image + ":" + opts.version

	csv.Name = opts.packageName + ".v" + strings.TrimPrefix(opts.version, "v")
	if err := csv.Spec.Version.UnmarshalJSON([]byte(strconv.Quote(strings.TrimPrefix(opts.version, "v")))); err != nil {
		return nil, fmt.Errorf("VERSION %s is not a semantic version: %w", opts.version, err)
	}

	deployments, err := operatorDeployments(in.deployments, opts)
	if err != nil {
		return nil, err
	}
	csv.Spec.InstallStrategy = v1alpha1.NamedInstallStrategy{StrategyName: v1alpha1.InstallStrategyNameDeployment}
	for _, d := range deployments {
		csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs = append(csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs,
			v1alpha1.StrategyDeploymentSpec{Name: d.Name, Spec: d.Spec, Label: d.Labels})
	}
	for _, d := range in.deployments {
		res.consumed[d] = true
	}

	perms, err := permissions(deployments, in.rest, res.consumed)
	if err != nil {
		return nil, err
	}
	csv.Spec.InstallStrategy.StrategySpec.Permissions = perms.namespaced
	csv.Spec.InstallStrategy.StrategySpec.ClusterPermissions = perms.cluster

	if csv.Spec.WebhookDefinitions, err = webhookDefinitions(deployments, in.rest, res.consumed); err != nil {
		return nil, err
	}

	owned, err := ownedCRDs(in.crds, api)
	if err != nil {
		return nil, err
	}
	csv.Spec.CustomResourceDefinitions.Owned = owned

	examples, err := almExamples(in.samples, owned)
	if err != nil {
		return nil, err
	}
	csv.Spec.RelatedImages = relatedImages(deployments, opts)

	if csv.Annotations == nil {
		csv.Annotations = map[string]string{}
	}
	csv.Annotations["alm-examples"] = examples
	csv.Annotations["containerImage"] = image
	csv.Annotations["operators.operatorframework.io/builder"] = builder
	csv.Annotations["operators.operatorframework.io/project_layout"] = opts.layout
	// No createdAt: it would change on every run.
	delete(csv.Annotations, "createdAt")
	return res, nil
}

// operatorDeployments are the input's Deployments as the CSV installs
// them: every container runs IMAGE:VERSION (the one Trellis image), and the
// flags naming the image the operator deploys name the same.
func operatorDeployments(objs []*unstructured.Unstructured, opts options) ([]*appsv1.Deployment, error) {
	var out []*appsv1.Deployment
	for _, o := range objs {
		d, err := convert[appsv1.Deployment](o)
		if err != nil {
			return nil, err
		}
		spec := &d.Spec.Template.Spec
		for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
			for i := range cs {
				c := &cs[i]
				c.Image = opts.image + ":" + opts.version
				for j, a := range c.Args {
					switch {
					case strings.HasPrefix(a, imageFlag):
						c.Args[j] = imageFlag + opts.image
					case strings.HasPrefix(a, imageVersionFlag):
						c.Args[j] = imageVersionFlag + opts.version
					}
				}
			}
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b *appsv1.Deployment) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

type permissionSets struct {
	namespaced, cluster []v1alpha1.StrategyDeploymentPermissions
}

// permissions gathers the rules bound to the Deployments' ServiceAccounts:
// a ClusterRoleBinding's ClusterRole goes to clusterPermissions; a
// RoleBinding's Role (or ClusterRole), in the operator's namespace, to
// permissions. OLM creates the ServiceAccounts, roles and bindings from
// these, so they are consumed; the roles bound to nobody else stay out of
// the CSV (the aggregated admin, edit and view roles).
func permissions(deployments []*appsv1.Deployment, objs []*unstructured.Unstructured, consumed map[*unstructured.Unstructured]bool) (permissionSets, error) {
	roles := map[string]*unstructured.Unstructured{} // "Role ns/name" or "ClusterRole name"
	var crbs, rbs []*unstructured.Unstructured
	for _, o := range objs {
		if o.GroupVersionKind().Group != rbacv1.GroupName {
			continue
		}
		switch o.GetKind() {
		case "Role", "ClusterRole":
			roles[objectKey(o)] = o
		case "ClusterRoleBinding":
			crbs = append(crbs, o)
		case "RoleBinding":
			rbs = append(rbs, o)
		}
	}
	byName := func(a, b *unstructured.Unstructured) int {
		return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	}
	slices.SortFunc(crbs, byName)
	slices.SortFunc(rbs, byName)

	rulesOf := func(binding *unstructured.Unstructured, ref rbacv1.RoleRef) ([]rbacv1.PolicyRule, error) {
		key := "ClusterRole " + ref.Name
		if ref.Kind == "Role" {
			key = "Role " + binding.GetNamespace() + "/" + ref.Name
		}
		o, ok := roles[key]
		if !ok {
			return nil, fmt.Errorf("%s binds %s, which is not in the input", objectKey(binding), key)
		}
		consumed[o] = true
		if ref.Kind == "Role" {
			r, err := convert[rbacv1.Role](o)
			if err != nil {
				return nil, err
			}
			return r.Rules, nil
		}
		r, err := convert[rbacv1.ClusterRole](o)
		if err != nil {
			return nil, err
		}
		if r.AggregationRule != nil {
			return nil, fmt.Errorf("%s aggregates other roles, which a CSV cannot express; bind the operator to plain rules", key)
		}
		return r.Rules, nil
	}

	var out permissionSets
	seen := map[string]bool{}
	for _, d := range deployments {
		sa, ns := d.Spec.Template.Spec.ServiceAccountName, d.Namespace
		if sa == "" {
			return out, fmt.Errorf("the Deployment %s names no serviceAccountName; OLM needs one to grant its permissions", d.Name)
		}
		if seen[sa] {
			continue
		}
		seen[sa] = true
		cluster := v1alpha1.StrategyDeploymentPermissions{ServiceAccountName: sa}
		namespaced := v1alpha1.StrategyDeploymentPermissions{ServiceAccountName: sa}
		for _, list := range []struct {
			bindings []*unstructured.Unstructured
			into     *v1alpha1.StrategyDeploymentPermissions
		}{{crbs, &cluster}, {rbs, &namespaced}} {
			for _, o := range list.bindings {
				b, err := convert[rbacv1.RoleBinding](o) // a ClusterRoleBinding has the same fields
				if err != nil {
					return out, err
				}
				if !bindsServiceAccount(b.Subjects, sa, ns, o.GetNamespace()) {
					continue
				}
				if len(b.Subjects) > 1 {
					return out, fmt.Errorf("%s binds more than the operator's ServiceAccount; give the others their own binding", objectKey(o))
				}
				if o.GetKind() == "RoleBinding" && o.GetNamespace() != ns {
					return out, fmt.Errorf("%s grants the operator rights in namespace %s; a CSV grants them in the operator's namespace only", objectKey(o), o.GetNamespace())
				}
				rules, err := rulesOf(o, b.RoleRef)
				if err != nil {
					return out, err
				}
				consumed[o] = true
				list.into.Rules = append(list.into.Rules, rules...)
			}
		}
		if len(cluster.Rules) > 0 {
			out.cluster = append(out.cluster, cluster)
		}
		if len(namespaced.Rules) > 0 {
			out.namespaced = append(out.namespaced, namespaced)
		}
		// OLM creates the ServiceAccount.
		for _, o := range objs {
			if o.GetKind() == "ServiceAccount" && o.GetAPIVersion() == "v1" && o.GetName() == sa && o.GetNamespace() == ns {
				consumed[o] = true
			}
		}
	}
	return out, nil
}

func bindsServiceAccount(subjects []rbacv1.Subject, name, namespace, bindingNamespace string) bool {
	for _, s := range subjects {
		ns := cmp.Or(s.Namespace, bindingNamespace)
		if s.Kind == rbacv1.ServiceAccountKind && s.Name == name && ns == namespace {
			return true
		}
	}
	return false
}

// webhookDefinitions turns the webhook configurations of the input into
// the CSV's: OLM makes the configurations, the Service in front of the
// Deployment (<deployment>-service, port containerPort to targetPort) and
// its certificate. The configurations and the Services they name are
// consumed.
func webhookDefinitions(deployments []*appsv1.Deployment, objs []*unstructured.Unstructured, consumed map[*unstructured.Unstructured]bool) ([]v1alpha1.WebhookDescription, error) {
	services := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		if o.GetKind() == "Service" && o.GetAPIVersion() == "v1" {
			services[o.GetNamespace()+"/"+o.GetName()] = o
		}
	}
	var out []v1alpha1.WebhookDescription
	for _, o := range objs {
		if o.GroupVersionKind().Group != admissionregistrationv1.GroupName {
			continue
		}
		// A validating webhook is a mutating one without reinvocation.
		var typ v1alpha1.WebhookAdmissionType
		var webhooks []admissionregistrationv1.MutatingWebhook
		switch o.GetKind() {
		case "ValidatingWebhookConfiguration":
			cfg, err := convert[admissionregistrationv1.ValidatingWebhookConfiguration](o)
			if err != nil {
				return nil, err
			}
			typ = v1alpha1.ValidatingAdmissionWebhook
			for _, w := range cfg.Webhooks {
				webhooks = append(webhooks, admissionregistrationv1.MutatingWebhook{
					Name: w.Name, ClientConfig: w.ClientConfig, Rules: w.Rules, FailurePolicy: w.FailurePolicy,
					MatchPolicy: w.MatchPolicy, NamespaceSelector: w.NamespaceSelector, ObjectSelector: w.ObjectSelector,
					SideEffects: w.SideEffects, TimeoutSeconds: w.TimeoutSeconds, AdmissionReviewVersions: w.AdmissionReviewVersions,
					MatchConditions: w.MatchConditions,
				})
			}
		case "MutatingWebhookConfiguration":
			cfg, err := convert[admissionregistrationv1.MutatingWebhookConfiguration](o)
			if err != nil {
				return nil, err
			}
			typ, webhooks = v1alpha1.MutatingAdmissionWebhook, cfg.Webhooks
		default:
			continue
		}
		for _, w := range webhooks {
			if len(w.MatchConditions) > 0 {
				return nil, fmt.Errorf("%s: webhook %s has matchConditions, which a CSV cannot express", objectKey(o), w.Name)
			}
			d, err := webhookDescription(o, w.Name, w.ClientConfig, w.NamespaceSelector, deployments, services, consumed)
			if err != nil {
				return nil, err
			}
			d.Type = typ
			d.Rules, d.FailurePolicy, d.MatchPolicy, d.ObjectSelector = w.Rules, w.FailurePolicy, w.MatchPolicy, w.ObjectSelector
			d.SideEffects, d.TimeoutSeconds, d.AdmissionReviewVersions = w.SideEffects, w.TimeoutSeconds, w.AdmissionReviewVersions
			d.ReinvocationPolicy = w.ReinvocationPolicy
			out = append(out, d)
		}
		consumed[o] = true
	}
	slices.SortStableFunc(out, func(a, b v1alpha1.WebhookDescription) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.GenerateName, b.GenerateName))
	})
	return out, nil
}

// webhookDescription is what the validating and mutating webhooks share:
// where the API server calls them. The Service they name must select one of
// the Deployments, whose container port the Service's targetPort is.
func webhookDescription(cfg *unstructured.Unstructured, name string, cc admissionregistrationv1.WebhookClientConfig,
	nsSelector *metav1.LabelSelector, deployments []*appsv1.Deployment, services map[string]*unstructured.Unstructured,
	consumed map[*unstructured.Unstructured]bool) (v1alpha1.WebhookDescription, error) {
	where := fmt.Sprintf("%s: webhook %s", objectKey(cfg), name)
	if cc.Service == nil {
		return v1alpha1.WebhookDescription{}, fmt.Errorf("%s is called by URL; OLM serves webhooks through a Service in front of a Deployment", where)
	}
	if nsSelector != nil && (len(nsSelector.MatchLabels) > 0 || len(nsSelector.MatchExpressions) > 0) {
		return v1alpha1.WebhookDescription{}, fmt.Errorf("%s has a namespaceSelector; OLM sets it from the OperatorGroup, so a CSV cannot", where)
	}
	so, ok := services[cc.Service.Namespace+"/"+cc.Service.Name]
	if !ok {
		return v1alpha1.WebhookDescription{}, fmt.Errorf("%s names Service %s/%s, which is not in the input", where, cc.Service.Namespace, cc.Service.Name)
	}
	svc, err := convert[corev1.Service](so)
	if err != nil {
		return v1alpha1.WebhookDescription{}, err
	}
	port := int32(443)
	if cc.Service.Port != nil {
		port = *cc.Service.Port
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == port {
			sp = &svc.Spec.Ports[i]
		}
	}
	if sp == nil {
		return v1alpha1.WebhookDescription{}, fmt.Errorf("%s calls port %d of Service %s, which has no such port", where, port, svc.Name)
	}
	var dep *appsv1.Deployment
	for _, d := range deployments {
		if len(svc.Spec.Selector) > 0 && selects(svc.Spec.Selector, d.Spec.Template.Labels) {
			if dep != nil {
				return v1alpha1.WebhookDescription{}, fmt.Errorf("%s: Service %s selects the pods of Deployments %s and %s; OLM needs one", where, svc.Name, dep.Name, d.Name)
			}
			dep = d
		}
	}
	if dep == nil {
		return v1alpha1.WebhookDescription{}, fmt.Errorf("%s: Service %s selects the pods of none of the Deployments", where, svc.Name)
	}
	target := sp.TargetPort
	switch {
	case target.Type == intstr.String:
		n, ok := containerPort(dep, target.StrVal)
		if !ok {
			return v1alpha1.WebhookDescription{}, fmt.Errorf("%s: Service %s's targetPort %q is no container port of Deployment %s", where, svc.Name, target.StrVal, dep.Name)
		}
		target = intstr.FromInt32(n)
	case target.IntVal == 0:
		target = intstr.FromInt32(port)
	}
	consumed[so] = true
	return v1alpha1.WebhookDescription{
		GenerateName:   name,
		DeploymentName: dep.Name,
		ContainerPort:  port,
		TargetPort:     &target,
		WebhookPath:    cc.Service.Path,
	}, nil
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func containerPort(d *appsv1.Deployment, name string) (int32, bool) {
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return p.ContainerPort, true
			}
		}
	}
	return 0, false
}

// ownedCRDs describes each CRD of the input from its Go type, in the order
// of their markers (then by kind).
func ownedCRDs(crds []*unstructured.Unstructured, api *apiPackage) ([]v1alpha1.CRDDescription, error) {
	type ordered struct {
		d     v1alpha1.CRDDescription
		order int
	}
	var out []ordered
	for _, o := range crds {
		kind, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind")
		versions, _, _ := unstructured.NestedSlice(o.Object, "spec", "versions")
		storage := ""
		for _, v := range versions {
			if m, ok := v.(map[string]any); ok && m["storage"] == true {
				storage, _ = m["name"].(string)
			}
		}
		if storage == "" {
			return nil, fmt.Errorf("%s has no storage version", objectKey(o))
		}
		d, order, err := api.crdDescription(kind, o.GetName(), storage)
		if err != nil {
			return nil, err
		}
		out = append(out, ordered{d, order})
	}
	if err := api.unusedMarkers(); err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b ordered) int {
		return cmp.Or(cmp.Compare(a.order, b.order), cmp.Compare(a.d.Kind, b.d.Kind))
	})
	descs := make([]v1alpha1.CRDDescription, len(out))
	for i, o := range out {
		descs[i] = o.d
	}
	return descs, nil
}

// almExamples is the samples as the JSON array OLM shows as examples: the
// owned kinds in the CSV's order, each kind's samples in the input's order.
func almExamples(samples []*unstructured.Unstructured, owned []v1alpha1.CRDDescription) (string, error) {
	rank := map[string]int{}
	for i, d := range owned {
		rank[d.Kind] = i
	}
	sorted := slices.Clone(samples)
	slices.SortStableFunc(sorted, func(a, b *unstructured.Unstructured) int {
		return cmp.Compare(rank[a.GetKind()], rank[b.GetKind()])
	})
	objs := make([]map[string]any, 0, len(sorted))
	for _, s := range sorted {
		objs = append(objs, s.Object)
	}
	b, err := json.MarshalIndent(objs, "", "  ")
	return string(b), err
}

// relatedImages lists every image the bundle runs: each container of the
// Deployments, and the control plane and proxy the operator deploys (the
// repository and tag of its --image and --image-version flags).
func relatedImages(deployments []*appsv1.Deployment, opts options) []v1alpha1.RelatedImage {
	images := map[string]string{}
	for _, d := range deployments {
		spec := d.Spec.Template.Spec
		all := append(slices.Clone(spec.InitContainers), spec.Containers...)
		for _, c := range all {
			name := d.Name
			if len(all) > 1 {
				name += "-" + c.Name
			}
			images[name] = c.Image
			repo, tag := "", ""
			for _, a := range c.Args {
				if v, ok := strings.CutPrefix(a, imageFlag); ok {
					repo = v
				}
				if v, ok := strings.CutPrefix(a, imageVersionFlag); ok {
					tag = v
				}
			}
			if repo != "" && tag != "" {
				for _, op := range operands {
					images[opts.packageName+"-"+op] = repo + ":" + tag
				}
			}
		}
	}
	var out []v1alpha1.RelatedImage
	for _, name := range slices.Sorted(maps.Keys(images)) {
		out = append(out, v1alpha1.RelatedImage{Name: name, Image: images[name]})
	}
	return out
}
