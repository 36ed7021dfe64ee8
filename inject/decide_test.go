package inject

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/sidecar"
)

func TestDecide(t *testing.T) {
	enabled := map[string]string{meshv1.InjectionLabel: "enabled"}
	cases := map[string]struct {
		namespace string
		nsLabels  map[string]string
		mesh      string // the Mesh passed in; its spec.namespace is left to default (trellis-system)
		pod       func(*corev1.Pod)
		want      SkipReason // "" when the pod is injected
	}{
		"labeled namespace": {namespace: "shop", nsLabels: enabled, mesh: "default"},
		"named mesh":        {namespace: "shop", nsLabels: map[string]string{meshv1.MeshLabel: "canary"}, mesh: "canary"},
		"pod opts in in an unlabeled namespace": {namespace: "tools", mesh: "default",
			pod: func(p *corev1.Pod) { p.Labels = map[string]string{meshv1.InjectPodLabel: "true"} }},
		"pod opts in in a namespace of another Mesh": {namespace: "shop", nsLabels: map[string]string{meshv1.MeshLabel: "canary"}, mesh: "canary",
			pod: func(p *corev1.Pod) { p.Labels = map[string]string{meshv1.InjectPodLabel: "true"} }},
		"automount true": {namespace: "shop", nsLabels: enabled, mesh: "default",
			pod: func(p *corev1.Pod) { p.Spec.AutomountServiceAccountToken = ptr.To(true) }},

		"host network": {namespace: "shop", nsLabels: enabled, mesh: "default",
			pod: func(p *corev1.Pod) { p.Spec.HostNetwork = true }, want: HostNetwork},
		"kube-system, even labeled": {namespace: "kube-system", nsLabels: enabled, mesh: "default", want: SystemNamespace},
		"kube-system, pod opts in": {namespace: "kube-system", mesh: "default",
			pod: func(p *corev1.Pod) { p.Labels = map[string]string{meshv1.InjectPodLabel: "true"} }, want: SystemNamespace},
		"the Mesh's own namespace, even labeled": {namespace: "trellis-system", nsLabels: enabled, mesh: "default", want: MeshNamespace},
		"pod opts out": {namespace: "shop", nsLabels: enabled, mesh: "default",
			pod: func(p *corev1.Pod) { p.Labels = map[string]string{meshv1.InjectPodLabel: "false"} }, want: OptedOut},
		"namespace disabled wins over the pod's true": {namespace: "shop", nsLabels: map[string]string{meshv1.InjectionLabel: "disabled"}, mesh: "default",
			pod: func(p *corev1.Pod) { p.Labels = map[string]string{meshv1.InjectPodLabel: "true"} }, want: OptedOut},
		"unlabeled namespace": {namespace: "tools", mesh: "default", want: NotOptedIn},
		"pod label neither true nor false": {namespace: "tools", mesh: "default",
			pod: func(p *corev1.Pod) { p.Labels = map[string]string{meshv1.InjectPodLabel: "yes"} }, want: NotOptedIn},
		"namespace selects another Mesh": {namespace: "shop", nsLabels: map[string]string{meshv1.MeshLabel: "canary"}, mesh: "default", want: MeshMismatch},
		"pod opt-in means default, not the given Mesh": {namespace: "tools", mesh: "canary",
			pod: func(p *corev1.Pod) { p.Labels = map[string]string{meshv1.InjectPodLabel: "true"} }, want: MeshMismatch},
		"already injected": {namespace: "shop", nsLabels: enabled, mesh: "default",
			pod: func(p *corev1.Pod) { p.Annotations = map[string]string{sidecar.AnnotationStatus: "{}"} }, want: AlreadyInjected},
		"no service account token": {namespace: "shop", nsLabels: enabled, mesh: "default",
			pod: func(p *corev1.Pod) { p.Spec.AutomountServiceAccountToken = ptr.To(false) }, want: NoServiceAccountToken},
		// When several reasons hold, the first in Decide's order is given.
		"opted out and host network": {namespace: "shop", nsLabels: enabled, mesh: "default",
			pod: func(p *corev1.Pod) {
				p.Labels = map[string]string{meshv1.InjectPodLabel: "false"}
				p.Spec.HostNetwork = true
			}, want: OptedOut},
		"already injected and no token": {namespace: "shop", nsLabels: enabled, mesh: "default",
			pod: func(p *corev1.Pod) {
				p.Annotations = map[string]string{sidecar.AnnotationStatus: "{}"}
				p.Spec.AutomountServiceAccountToken = ptr.To(false)
			}, want: AlreadyInjected},
	}
	seen := map[SkipReason]bool{}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "web"},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
			}
			if tc.pod != nil {
				tc.pod(pod)
			}
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tc.namespace, Labels: tc.nsLabels}}
			mesh := &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: tc.mesh}}
			before := pod.DeepCopy()

			inject, reason := Decide(pod, ns, mesh)
			if inject != (tc.want == "") || reason != tc.want {
				t.Errorf("Decide = %v, %q; want %v, %q", inject, reason, tc.want == "", tc.want)
			}
			if !inject && reason == "" {
				t.Errorf("Decide skips without a reason")
			}
			if pod.String() != before.String() {
				t.Errorf("Decide modified the pod")
			}
			// The Mesh that MeshName names is the one Decide accepts.
			if inject && MeshName(pod, ns) != tc.mesh {
				t.Errorf("MeshName = %q, but Decide injects with Mesh %q", MeshName(pod, ns), tc.mesh)
			}
		})
		seen[tc.want] = true
	}
	for _, r := range []SkipReason{SystemNamespace, MeshNamespace, OptedOut, NotOptedIn, MeshMismatch, AlreadyInjected, HostNetwork, NoServiceAccountToken} {
		if !seen[r] {
			t.Errorf("no case for SkipReason %s", r)
		}
	}
}

func TestMeshName(t *testing.T) {
	cases := map[string]struct {
		namespace string
		nsLabels  map[string]string
		podLabel  string // trellis.dev/inject, "" for none
		want      string
	}{
		"unlabeled":                     {"tools", nil, "", ""},
		"namespace enabled":             {"shop", map[string]string{meshv1.InjectionLabel: "enabled"}, "", "default"},
		"namespace names a Mesh":        {"shop", map[string]string{meshv1.MeshLabel: "canary"}, "", "canary"},
		"pod opts in":                   {"tools", nil, "true", "default"},
		"pod opts in, namespace's Mesh": {"shop", map[string]string{meshv1.MeshLabel: "canary"}, "true", "canary"},
		"pod opts out":                  {"shop", map[string]string{meshv1.InjectionLabel: "enabled"}, "false", ""},
		"namespace disabled":            {"shop", map[string]string{meshv1.InjectionLabel: "disabled"}, "true", ""},
		"system namespace":              {"kube-system", nil, "true", ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			pod := &corev1.Pod{}
			if tc.podLabel != "" {
				pod.Labels = map[string]string{meshv1.InjectPodLabel: tc.podLabel}
			}
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tc.namespace, Labels: tc.nsLabels}}
			if got := MeshName(pod, ns); got != tc.want {
				t.Errorf("MeshName = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDecideMeshNamespaceFollowsSpec(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mesh-a", Labels: map[string]string{meshv1.InjectionLabel: "enabled"}}}
	pod := &corev1.Pod{}
	mesh := &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1.MeshSpec{Namespace: "mesh-a"}}
	if _, reason := Decide(pod, ns, mesh); reason != MeshNamespace {
		t.Errorf("pod in spec.namespace: reason %q, want %q", reason, MeshNamespace)
	}
	mesh.Spec.Namespace = "mesh-b"
	if inject, reason := Decide(pod, ns, mesh); !inject {
		t.Errorf("pod outside spec.namespace: skipped, %q", reason)
	}
}
