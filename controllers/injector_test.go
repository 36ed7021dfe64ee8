package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/inject"
)

// TestInjectorSelectorsAgreeWithMeshName checks the webhook configuration's
// selectors against inject.MeshName, which the handler uses, over every
// combination of namespace and pod labels: the API server must send a pod to
// a Mesh's injector exactly when the handler would pick that Mesh, once, and
// never a pod of an excluded namespace.
func TestInjectorSelectorsAgreeWithMeshName(t *testing.T) {
	in := Injector{Service: &client.ObjectKey{Namespace: "trellis-operator", Name: "trellis-webhook-service"}}
	nsLabelSets := []map[string]string{
		{},
		{meshv1.InjectionLabel: "enabled"},
		{meshv1.InjectionLabel: "disabled"},
		{meshv1.InjectionLabel: "true"},
		{meshv1.MeshLabel: "default"},
		{meshv1.MeshLabel: "canary"},
		{meshv1.MeshLabel: "canary", meshv1.InjectionLabel: "enabled"},
		{meshv1.MeshLabel: "canary", meshv1.InjectionLabel: "disabled"},
		{meshv1.MeshLabel: "default", meshv1.InjectionLabel: "disabled"},
		{meshv1.MeshLabel: "other"},
	}
	podLabelSets := []map[string]string{
		{},
		{meshv1.InjectPodLabel: "true"},
		{meshv1.InjectPodLabel: "false"},
		{meshv1.InjectPodLabel: "yes"},
		{"app": "shop"},
	}
	namespaces := []string{"shop", "kube-system", "kube-public", "kube-node-lease", "trellis-system", "trellis-canary", "trellis-operator"}

	for _, meshName := range []string{"default", "canary"} {
		mesh := &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: meshName}, Spec: meshv1.MeshSpec{Namespace: "trellis-system"}}
		if meshName == "canary" {
			mesh.Spec.Namespace = "trellis-canary"
		}
		cfg := typedWebhookConfiguration(t, mesh, in)
		for _, nsName := range namespaces {
			for _, nsl := range nsLabelSets {
				nsLabels := map[string]string{corev1.LabelMetadataName: nsName}
				for k, v := range nsl {
					nsLabels[k] = v
				}
				ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName, Labels: nsLabels}}
				for _, pl := range podLabelSets {
					pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: pl}}
					matched := matchingWebhooks(t, cfg, nsLabels, pl)
					excluded := nsName == mesh.Spec.Namespace || nsName == "trellis-operator" ||
						nsName == "kube-system" || nsName == "kube-public" || nsName == "kube-node-lease"
					want := inject.MeshName(pod, ns) == meshName && !excluded
					desc := fmt.Sprintf("mesh %s, namespace %s %v, pod %v", meshName, nsName, nsl, pl)
					switch {
					case len(matched) > 1:
						t.Errorf("%s: sent to %d webhooks %v, want at most one", desc, len(matched), matched)
					case want && len(matched) == 0:
						t.Errorf("%s: not sent to the injector, but the handler would mesh it", desc)
					case !want && len(matched) == 1:
						t.Errorf("%s: sent to %s, but the handler would not mesh it", desc, matched[0])
					}
				}
			}
		}
	}
}

func TestInjectorWebhookConfiguration(t *testing.T) {
	in := Injector{URL: "https://127.0.0.1:9443" + InjectorPath}
	mesh := &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: "default", UID: "u1"}, Spec: meshv1.MeshSpec{Namespace: "trellis-system"}}
	mesh.Spec.Injection.FailurePolicy = meshv1.FailurePolicyIgnore
	cfg := typedWebhookConfiguration(t, mesh, in)
	if len(cfg.Webhooks) != 3 {
		t.Fatalf("default Mesh: %d webhooks, want 3 (mesh label, injection label, pod label)", len(cfg.Webhooks))
	}
	for _, w := range cfg.Webhooks {
		if *w.FailurePolicy != admissionregistrationv1.Ignore {
			t.Errorf("%s: failurePolicy %s, want the Mesh's Ignore", w.Name, *w.FailurePolicy)
		}
		if *w.TimeoutSeconds > 10 {
			t.Errorf("%s: timeout %d s, want at most 10", w.Name, *w.TimeoutSeconds)
		}
		if *w.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy {
			t.Errorf("%s: reinvocationPolicy %s, want IfNeeded", w.Name, *w.ReinvocationPolicy)
		}
		if *w.ClientConfig.URL != in.URL || string(w.ClientConfig.CABundle) != "CA" {
			t.Errorf("%s: clientConfig %+v, want URL %s and the CA bundle", w.Name, w.ClientConfig, in.URL)
		}
		if len(w.Rules) != 1 || w.Rules[0].Operations[0] != admissionregistrationv1.Create || w.Rules[0].Resources[0] != "pods" {
			t.Errorf("%s: rules %+v, want pod CREATE only", w.Name, w.Rules)
		}
	}
	if len(cfg.OwnerReferences) != 1 || cfg.OwnerReferences[0].UID != mesh.UID {
		t.Errorf("owner references %+v, want the Mesh", cfg.OwnerReferences)
	}
	mesh.Name = "canary"
	if cfg := typedWebhookConfiguration(t, mesh, in); len(cfg.Webhooks) != 1 {
		t.Errorf("named Mesh: %d webhooks, want 1 (mesh label); pods opt in only to the Mesh named default", len(cfg.Webhooks))
	}
}

func typedWebhookConfiguration(t *testing.T, mesh *meshv1.Mesh, in Injector) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	b, err := json.Marshal(injectorWebhookConfiguration(mesh, in, []byte("CA")))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := json.Unmarshal(b, cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// matchingWebhooks names the webhooks of cfg that the API server would call
// for a pod with podLabels in a namespace with nsLabels.
func matchingWebhooks(t *testing.T, cfg *admissionregistrationv1.MutatingWebhookConfiguration, nsLabels, podLabels map[string]string) []string {
	t.Helper()
	var names []string
	for _, w := range cfg.Webhooks {
		nsSel, err := metav1.LabelSelectorAsSelector(w.NamespaceSelector)
		if err != nil {
			t.Fatalf("%s: namespaceSelector: %v", w.Name, err)
		}
		podSel, err := metav1.LabelSelectorAsSelector(w.ObjectSelector)
		if err != nil {
			t.Fatalf("%s: objectSelector: %v", w.Name, err)
		}
		if nsSel.Matches(labels.Set(nsLabels)) && podSel.Matches(labels.Set(podLabels)) {
			names = append(names, w.Name)
		}
	}
	return names
}

// The injector shares the caBundle of the operator's own
// ValidatingWebhookConfiguration: found by name under kustomize, by OLM's
// label under OLM, which generates its name.
func TestValidatingWebhookCABundle(t *testing.T) {
	vwc := func(name, ca string, lbls map[string]string) *admissionregistrationv1.ValidatingWebhookConfiguration {
		return &admissionregistrationv1.ValidatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls},
			Webhooks:   []admissionregistrationv1.ValidatingWebhook{{Name: "vmesh.trellis.dev", ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: []byte(ca)}}},
		}
	}
	olm := map[string]string{"olm.webhook-description-generate-name": "vmesh.trellis.dev"}
	c := fake.NewClientBuilder().WithObjects(
		vwc("trellis-validating-webhook-configuration", "kustomize CA", nil),
		vwc("vmesh.trellis.dev-7fq2x", "OLM CA", olm),
		vwc("someone-elses", "other CA", map[string]string{"olm.webhook-description-generate-name": "vother.example.com"}),
	).Build()
	ctx := context.Background()
	for name, tc := range map[string]struct {
		ref  ValidatingWebhookRef
		want string
	}{
		"by name":         {ValidatingWebhookRef{Name: "trellis-validating-webhook-configuration"}, "kustomize CA"},
		"by label":        {ValidatingWebhookRef{Selector: labels.SelectorFromSet(olm)}, "OLM CA"},
		"nothing matches": {ValidatingWebhookRef{Selector: labels.SelectorFromSet(map[string]string{"olm.webhook-description-generate-name": "none"})}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ValidatingWebhookCABundle(c, tc.ref)(ctx)
			if err != nil || string(got) != tc.want {
				t.Errorf("caBundle %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := ValidatingWebhookCABundle(c, ValidatingWebhookRef{Name: "missing"})(ctx); err == nil {
		t.Error("a missing configuration named: no error")
	}
}
