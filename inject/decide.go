package inject

import (
	corev1 "k8s.io/api/core/v1"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/membership"
	"github.com/trellis-mesh/trellis/sidecar"
)

// SkipReason says why a pod is not injected. The admission handler puts it
// in its logs and in the pod's admission response; it is empty when the pod
// is injected.
type SkipReason string

const (
	// SystemNamespace: the pod runs in kube-system, kube-public or
	// kube-node-lease, which are never meshed whatever their labels say
	// (see membership.IsSystemNamespace).
	SystemNamespace SkipReason = "SystemNamespace"
	// MeshNamespace: the pod runs in the Mesh's own spec.namespace. The
	// control plane cannot depend on the proxies it configures.
	MeshNamespace SkipReason = "MeshNamespace"
	// OptedOut: the pod is labeled trellis.dev/inject: "false", or its
	// namespace trellis-injection=disabled, which wins over a pod's "true".
	OptedOut SkipReason = "OptedOut"
	// NotOptedIn: the namespace is not labeled for any Mesh and the pod is
	// not labeled trellis.dev/inject: "true".
	NotOptedIn SkipReason = "NotOptedIn"
	// MeshMismatch: the namespace (or the pod's opt-in, which means the
	// Mesh named default) selects another Mesh than the one given.
	MeshMismatch SkipReason = "MeshMismatch"
	// AlreadyInjected: the pod has the trellis.dev/status annotation.
	AlreadyInjected SkipReason = "AlreadyInjected"
	// HostNetwork: the pod uses the node's network namespace, where
	// trellis-init's redirection would capture the node's traffic.
	HostNetwork SkipReason = "HostNetwork"
	// NoServiceAccountToken: the pod sets automountServiceAccountToken:
	// false. The proxy does not need the automounted token (it gets its own
	// projected token with the trellis audience), but Istio and Linkerd both
	// read the setting as the user's explicit choice that the pod holds no
	// Kubernetes credentials, and a mesh identity is one. Set it to true or
	// remove it to mesh the pod.
	NoServiceAccountToken SkipReason = "NoServiceAccountToken"
)

// MeshName returns the name of the Mesh that pod asks for, or "" when it
// asks for none: the Mesh its namespace selects (membership.MeshFor), else
// the Mesh named default when the pod is labeled trellis.dev/inject: "true".
// The admission handler looks this Mesh up and passes it to Inject.
func MeshName(pod *corev1.Pod, namespace *corev1.Namespace) string {
	if pod.Labels[meshv1.InjectPodLabel] == "false" || namespace.Labels[meshv1.InjectionLabel] == "disabled" {
		return ""
	}
	if name := membership.MeshFor(namespace.Name, namespace.Labels); name != "" {
		return name
	}
	if pod.Labels[meshv1.InjectPodLabel] == "true" && !membership.IsSystemNamespace(namespace.Name) {
		return meshv1.DefaultMeshName
	}
	return ""
}

// Decide says whether pod, in namespace, must be injected with mesh's
// sidecar, and if not, why not. namespace is the pod's namespace (the pod's
// own metadata.namespace may be empty in an admission request). None of the
// arguments may be nil.
//
// The reasons are checked in order: first whether the pod belongs to this
// Mesh at all, then whether it already has a sidecar, then whether it can
// have one; the first that applies is returned.
func Decide(pod *corev1.Pod, namespace *corev1.Namespace, mesh *meshv1.Mesh) (inject bool, reason SkipReason) {
	switch {
	case membership.IsSystemNamespace(namespace.Name):
		return false, SystemNamespace
	case namespace.Name == meshNamespace(mesh):
		return false, MeshNamespace
	case pod.Labels[meshv1.InjectPodLabel] == "false" || namespace.Labels[meshv1.InjectionLabel] == "disabled":
		return false, OptedOut
	}
	switch name := MeshName(pod, namespace); {
	case name == "":
		return false, NotOptedIn
	case name != mesh.Name:
		return false, MeshMismatch
	}
	if _, ok := pod.Annotations[sidecar.AnnotationStatus]; ok {
		return false, AlreadyInjected
	}
	if pod.Spec.HostNetwork {
		return false, HostNetwork
	}
	if a := pod.Spec.AutomountServiceAccountToken; a != nil && !*a {
		return false, NoServiceAccountToken
	}
	return true, ""
}

// meshNamespace is mesh's spec.namespace, defaulted as the CRD does.
func meshNamespace(mesh *meshv1.Mesh) string {
	if mesh.Spec.Namespace != "" {
		return mesh.Spec.Namespace
	}
	return defaultMeshNamespace
}
