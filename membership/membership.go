package membership

import (
	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
)

// systemNamespaces are never meshed, whatever their labels say: intercepting
// their traffic can take the cluster down with the mesh.
var systemNamespaces = map[string]bool{
	"kube-system":     true,
	"kube-public":     true,
	"kube-node-lease": true,
}

// IsSystemNamespace reports whether name is a namespace that is never meshed.
func IsSystemNamespace(name string) bool { return systemNamespaces[name] }

// SystemNamespaces lists the namespaces that are never meshed, for selectors.
func SystemNamespaces() []string {
	return []string{"kube-node-lease", "kube-public", "kube-system"}
}

// MeshFor returns the name of the Mesh that serves a namespace with these
// labels, or "" when none does. trellis.dev/mesh=<name> wins over
// trellis-injection=enabled, which selects the Mesh named "default";
// trellis-injection=disabled opts out even when trellis.dev/mesh is set.
func MeshFor(namespace string, labels map[string]string) string {
	if IsSystemNamespace(namespace) {
		return ""
	}
	if labels[meshv1.InjectionLabel] == "disabled" {
		return ""
	}
	if name := labels[meshv1.MeshLabel]; name != "" {
		return name
	}
	if labels[meshv1.InjectionLabel] == "enabled" {
		return meshv1.DefaultMeshName
	}
	return ""
}
