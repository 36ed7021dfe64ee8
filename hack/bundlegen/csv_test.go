package main

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/operator-framework/api/pkg/operators/v1alpha1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func fixtureObjects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	f, err := os.Open("testdata/manifests.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	objs, err := readObjects(f)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

var fixtureOptions = options{version: "v1.2.3", image: "registry.example/widget", packageName: "widget",
	layout: "go.kubebuilder.io/v4", channels: "candidate", defaultChannel: "candidate"}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// Each webhook of the configurations becomes a webhookdefinition: its
// name is OLM's generateName, the Service's port the containerPort, the
// container port its targetPort names the targetPort, and the Deployment
// the Service selects the deploymentName.
func TestWebhookDefinitions(t *testing.T) {
	in, err := sortInput(fixtureObjects(t))
	if err != nil {
		t.Fatal(err)
	}
	deps, err := operatorDeployments(in.deployments, fixtureOptions)
	if err != nil {
		t.Fatal(err)
	}
	consumed := map[*unstructured.Unstructured]bool{}
	got, err := webhookDefinitions(deps, in.rest, consumed)
	if err != nil {
		t.Fatal(err)
	}
	fail, ignore := admissionregistrationv1.Fail, admissionregistrationv1.Ignore
	none, noneOnDryRun := admissionregistrationv1.SideEffectClassNone, admissionregistrationv1.SideEffectClassNoneOnDryRun
	ifNeeded := admissionregistrationv1.IfNeededReinvocationPolicy
	target := intstr.FromInt32(9443)
	five := int32(5)
	validatePath, mutatePath := "/validate-widget", "/mutate-widget"
	want := []v1alpha1.WebhookDescription{
		{
			GenerateName: "mwidget.example.com", Type: v1alpha1.MutatingAdmissionWebhook,
			DeploymentName: "widget-operator", ContainerPort: 443, TargetPort: &target,
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{"example.com"}, APIVersions: []string{"v1"}, Resources: []string{"widgets"}},
			}},
			FailurePolicy: &ignore, SideEffects: &noneOnDryRun, AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy: &ifNeeded, WebhookPath: &mutatePath,
		},
		{
			GenerateName: "vwidget.example.com", Type: v1alpha1.ValidatingAdmissionWebhook,
			DeploymentName: "widget-operator", ContainerPort: 443, TargetPort: &target,
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{"example.com"}, APIVersions: []string{"v1"}, Resources: []string{"widgets"}},
			}},
			FailurePolicy: &fail, SideEffects: &none, TimeoutSeconds: &five, AdmissionReviewVersions: []string{"v1"},
			WebhookPath: &validatePath,
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("webhookDefinitions =\n%+v\nwant\n%+v", got, want)
	}
	for _, kind := range []string{"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "Service"} {
		n := 0
		for o := range consumed {
			if o.GetKind() == kind {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d %s consumed, want 1: OLM makes it", n, kind)
		}
	}
}

func TestWebhookDefinitionErrors(t *testing.T) {
	cases := map[string]struct {
		edit    func(objs []*unstructured.Unstructured)
		wantErr string
	}{
		"called by URL": {
			edit: func(objs []*unstructured.Unstructured) {
				w := find(objs, "ValidatingWebhookConfiguration", "widget-validating-webhook-configuration")
				hooks, _, _ := unstructured.NestedSlice(w.Object, "webhooks")
				hooks[0].(map[string]any)["clientConfig"] = map[string]any{"url": "https://example.com/validate"}
				_ = unstructured.SetNestedSlice(w.Object, hooks, "webhooks")
			},
			wantErr: "is called by URL",
		},
		"a Service that is not there": {
			edit: func(objs []*unstructured.Unstructured) {
				find(objs, "Service", "widget-webhook-service").SetName("elsewhere")
			},
			wantErr: "names Service widget-system/widget-webhook-service, which is not in the input",
		},
		"a Service that selects no Deployment": {
			edit: func(objs []*unstructured.Unstructured) {
				s := find(objs, "Service", "widget-webhook-service")
				_ = unstructured.SetNestedStringMap(s.Object, map[string]string{"app": "other"}, "spec", "selector")
			},
			wantErr: "selects the pods of none of the Deployments",
		},
		"a targetPort no container has": {
			edit: func(objs []*unstructured.Unstructured) {
				s := find(objs, "Service", "widget-webhook-service")
				ports, _, _ := unstructured.NestedSlice(s.Object, "spec", "ports")
				ports[0].(map[string]any)["targetPort"] = "https"
				_ = unstructured.SetNestedSlice(s.Object, ports, "spec", "ports")
			},
			wantErr: `targetPort "https" is no container port`,
		},
		"a namespaceSelector": {
			edit: func(objs []*unstructured.Unstructured) {
				w := find(objs, "MutatingWebhookConfiguration", "widget-mutating-webhook-configuration")
				hooks, _, _ := unstructured.NestedSlice(w.Object, "webhooks")
				hooks[0].(map[string]any)["namespaceSelector"] = map[string]any{"matchLabels": map[string]any{"a": "b"}}
				_ = unstructured.SetNestedSlice(w.Object, hooks, "webhooks")
			},
			wantErr: "OLM sets it from the OperatorGroup",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			objs := fixtureObjects(t)
			tc.edit(objs)
			in, err := sortInput(objs)
			if err != nil {
				t.Fatal(err)
			}
			deps, err := operatorDeployments(in.deployments, fixtureOptions)
			if err != nil {
				t.Fatal(err)
			}
			_, err = webhookDefinitions(deps, in.rest, map[*unstructured.Unstructured]bool{})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

// The rules of the ClusterRole bound by a ClusterRoleBinding are cluster
// permissions, those of the Role bound by a RoleBinding namespaced ones;
// the roles, bindings and ServiceAccount are consumed, and a role bound to
// nobody (the aggregated viewer role) is left to be written on its own.
func TestPermissions(t *testing.T) {
	objs := fixtureObjects(t)
	in, err := sortInput(objs)
	if err != nil {
		t.Fatal(err)
	}
	deps, err := operatorDeployments(in.deployments, fixtureOptions)
	if err != nil {
		t.Fatal(err)
	}
	consumed := map[*unstructured.Unstructured]bool{}
	got, err := permissions(deps, in.rest, consumed)
	if err != nil {
		t.Fatal(err)
	}
	want := permissionSets{
		cluster: []v1alpha1.StrategyDeploymentPermissions{{ServiceAccountName: "widget-operator", Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"example.com"}, Resources: []string{"widgets"}, Verbs: []string{"get", "list", "watch"}},
		}}},
		namespaced: []v1alpha1.StrategyDeploymentPermissions{{ServiceAccountName: "widget-operator", Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
		}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("permissions =\n%+v\nwant\n%+v", got, want)
	}
	for _, o := range []struct{ kind, name string }{
		{"ClusterRole", "widget-operator"}, {"ClusterRoleBinding", "widget-operator"},
		{"Role", "widget-leader-election"}, {"RoleBinding", "widget-leader-election"},
		{"ServiceAccount", "widget-operator"},
	} {
		if !consumed[find(objs, o.kind, o.name)] {
			t.Errorf("%s %s is not consumed", o.kind, o.name)
		}
	}
	if consumed[find(objs, "ClusterRole", "widget-viewer")] {
		t.Error("ClusterRole widget-viewer, bound to nobody, is consumed")
	}
}

// A binding of the operator's ServiceAccount to a role that is not in the
// input, or one that shares its subjects, cannot become a CSV's permissions.
func TestPermissionErrors(t *testing.T) {
	cases := map[string]struct {
		edit    func(objs []*unstructured.Unstructured)
		wantErr string
	}{
		"a missing role": {
			edit:    func(objs []*unstructured.Unstructured) { find(objs, "Role", "widget-leader-election").SetName("gone") },
			wantErr: "binds Role widget-system/widget-leader-election, which is not in the input",
		},
		"a shared binding": {
			edit: func(objs []*unstructured.Unstructured) {
				b := find(objs, "ClusterRoleBinding", "widget-operator")
				subjects, _, _ := unstructured.NestedSlice(b.Object, "subjects")
				subjects = append(subjects, map[string]any{"kind": "User", "name": "alice"})
				_ = unstructured.SetNestedSlice(b.Object, subjects, "subjects")
			},
			wantErr: "binds more than the operator's ServiceAccount",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			objs := fixtureObjects(t)
			tc.edit(objs)
			in, err := sortInput(objs)
			if err != nil {
				t.Fatal(err)
			}
			deps, err := operatorDeployments(in.deployments, fixtureOptions)
			if err != nil {
				t.Fatal(err)
			}
			_, err = permissions(deps, in.rest, map[*unstructured.Unstructured]bool{})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}
