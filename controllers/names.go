package controllers

import (
	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
)

// Names of what the operator writes. Namespaced objects live in the Mesh's
// spec.namespace; the few cluster-scoped ones carry the Mesh's name.
const (
	// FieldOwner is the server-side apply field manager of everything the operator writes.
	FieldOwner = "trellis-operator"
	// Finalizer holds a Mesh until what it owns outside the mesh namespace is removed.
	Finalizer = "mesh.trellis.dev/cleanup"

	// CASecretName is the Secret holding the signing intermediate: written by
	// the operator (builtin) or by cert-manager (certManager). One name for both
	// lets the operator's RBAC name it and lets the control plane mount it alike.
	CASecretName = "trellis-ca"
	// CertificateName is the cert-manager Certificate of the signing intermediate.
	CertificateName = "trellis-ca"
	// TrustBundleName is the ConfigMap with the roots that proxies trust.
	TrustBundleName = "trellis-ca-bundle"
	// TrustBundleKey holds the PEM roots in the trust bundle ConfigMap.
	TrustBundleKey = "ca.crt"
	// TrustBundleStateKey, only in the mesh namespace's copy, remembers how long
	// each root must stay trusted.
	TrustBundleStateKey = "anchors.json"
	// ControlPlaneName names the control plane's ServiceAccount, Deployment, Service and PDB.
	ControlPlaneName = "trellis-controlplane"

	// ControlPlaneGRPCPort serves identity and discovery to proxies.
	ControlPlaneGRPCPort = 15012
	// ControlPlaneHTTPPort serves /healthz, /readyz and /metrics.
	ControlPlaneHTTPPort = 15014
	// SignerMountPath is where the control plane finds tls.crt, tls.key and ca.crt.
	SignerMountPath = "/var/run/trellis/signer"
	// NonRootUID runs the control plane.
	NonRootUID = 65532
)

// Labels on what the operator writes.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelPartOf    = "app.kubernetes.io/part-of"
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelVersion   = "app.kubernetes.io/version"
	// LabelOwnerMesh names the Mesh an object belongs to, for objects that
	// cannot carry an owner reference to it and for listing.
	LabelOwnerMesh = "mesh.trellis.dev/owner"
	// AnnotationCreatedBy on the mesh namespace says the operator created it,
	// so deleting the Mesh deletes it; a namespace the user made is kept.
	AnnotationCreatedBy = "mesh.trellis.dev/created-by"

	ManagedByValue = "trellis-operator"
	PartOfValue    = "trellis"
)

// Annotations on the pod template of a workload that the operator restarts
// (updateStrategy RollingRestart).
const (
	// AnnotationRestartedAt is kubectl's: `kubectl rollout restart` sets it to
	// the time, and the changed template makes the workload's controller
	// replace its pods, as it does for any rollout.
	AnnotationRestartedAt = "kubectl.kubernetes.io/restartedAt"
	// AnnotationRestartedForProxy is the proxy version the operator restarted
	// the workload for. A workload is restarted at most once for a version:
	// while its template says so and some of its pods still run another
	// proxy, its rollout is in progress.
	AnnotationRestartedForProxy = "mesh.trellis.dev/restarted-for-proxy"
)

// ownedLabels are the labels of every object the operator writes for mesh.
func ownedLabels(mesh *meshv1.Mesh) map[string]string {
	return map[string]string{
		LabelManagedBy: ManagedByValue,
		LabelPartOf:    PartOfValue,
		LabelOwnerMesh: mesh.Name,
	}
}

// controlPlaneClusterRoleName is per Mesh: two Meshes may run side by side.
func controlPlaneClusterRoleName(mesh *meshv1.Mesh) string {
	return "trellis-controlplane-" + mesh.Name
}

// Sidecar injection.
const (
	// InjectorPath is where the operator's webhook server injects pods.
	InjectorPath = "/inject-v1-pod"
	// InjectorTimeoutSeconds bounds each admission call; the API server's
	// own limit is 30 s, and a pod creation should never wait near that.
	InjectorTimeoutSeconds = 10
)

// InjectorWebhookConfigurationName is mesh's MutatingWebhookConfiguration.
func InjectorWebhookConfigurationName(mesh *meshv1.Mesh) string {
	return "trellis-sidecar-injector-" + mesh.Name
}
