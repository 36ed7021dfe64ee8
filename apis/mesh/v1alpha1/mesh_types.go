package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultMeshName is the Mesh that serves namespaces labeled
// trellis-injection=enabled.
const DefaultMeshName = "default"

// Labels and annotations that select and describe meshed namespaces and pods.
const (
	// InjectionLabel on a namespace, set to "enabled", opts it into the Mesh named "default".
	InjectionLabel = "trellis-injection"
	// MeshLabel on a namespace selects a Mesh by name; it takes precedence over InjectionLabel.
	MeshLabel = "trellis.dev/mesh"
	// InjectPodLabel on a pod ("true" or "false") opts it in or out of injection.
	InjectPodLabel = "trellis.dev/inject"
)

// Mesh is one Trellis service mesh: its certificate authority, its control
// plane, how its sidecar proxies are injected and configured, and how they
// are upgraded. The Mesh named "default" serves namespaces labeled
// trellis-injection=enabled; a namespace labeled trellis.dev/mesh=<name>
// selects another Mesh, which is how a new control-plane and proxy version is
// tried on a few namespaces before the rest.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=trellis
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.namespace`
// +kubebuilder:printcolumn:name="Meshed Pods",type=integer,JSONPath=`.status.meshedPods`
// +kubebuilder:printcolumn:name="CA Expiry",type=string,JSONPath=`.status.ca.issuerNotAfter`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +operator-sdk:csv:customresourcedefinitions:displayName="Mesh",order=1
// +operator-sdk:csv:customresourcedefinitions:resources={{Namespace,v1},{Secret,v1},{ConfigMap,v1},{Certificate,v1,certificates}}
// +operator-sdk:csv:customresourcedefinitions:resources={{ServiceAccount,v1},{Role,v1},{RoleBinding,v1},{ClusterRole,v1},{ClusterRoleBinding,v1}}
// +operator-sdk:csv:customresourcedefinitions:resources={{Deployment,v1},{Service,v1},{PodDisruptionBudget,v1},{MutatingWebhookConfiguration,v1}}
type Mesh struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the object's metadata; the name selects namespaces (see MeshLabel).
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired mesh.
	// +required
	Spec MeshSpec `json:"spec,omitzero"`

	// status is what the operator observed of the mesh.
	// +optional
	Status MeshStatus `json:"status,omitzero"`
}

// MeshSpec is the desired state of a Mesh.
type MeshSpec struct {
	// namespace is where the mesh's control plane and certificate authority
	// live. The operator creates it if it does not exist. It cannot be changed:
	// to move a mesh, create a new Mesh and relabel the namespaces.
	// +kubebuilder:default=trellis-system
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.namespace is immutable; create a new Mesh to use another namespace"
	// +kubebuilder:validation:XValidation:rule="!(self in ['kube-system', 'kube-public', 'kube-node-lease', 'default'])",message="spec.namespace must not be a system namespace (kube-system, kube-public, kube-node-lease, default); use a namespace of its own such as trellis-system"
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Mesh Namespace",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:text"}
	Namespace string `json:"namespace,omitempty"`

	// trustDomain is the SPIFFE trust domain of every workload identity in the
	// mesh: a workload's identity is spiffe://<trustDomain>/ns/<namespace>/sa/<serviceaccount>.
	// It cannot be changed, because every issued certificate names it.
	// +kubebuilder:default=cluster.local
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.trustDomain is immutable: every workload certificate names it; create a new Mesh for a new trust domain"
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Trust Domain",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:text"}
	TrustDomain string `json:"trustDomain,omitempty"`

	// ca is the mesh's certificate authority: a builtin one that the operator
	// creates and rotates, or an intermediate issued by cert-manager.
	// +kubebuilder:default={builtin:{}}
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Certificate Authority"
	CA CASpec `json:"ca,omitzero"`

	// controlPlane sizes and places the control plane.
	// +kubebuilder:default={}
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Control Plane"
	ControlPlane ControlPlaneSpec `json:"controlPlane,omitzero"`

	// proxy configures the sidecar proxy injected into meshed pods.
	// +kubebuilder:default={}
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Proxy"
	Proxy ProxySpec `json:"proxy,omitzero"`

	// injection says how the sidecar is added to pods.
	// +kubebuilder:default={}
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Injection"
	Injection InjectionSpec `json:"injection,omitzero"`

	// mtls sets how meshed workloads accept connections.
	// +kubebuilder:default={}
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Mutual TLS"
	MTLS MTLSSpec `json:"mtls,omitzero"`

	// telemetry configures tracing and access logs. Golden metrics are always on.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Telemetry"
	Telemetry TelemetrySpec `json:"telemetry,omitzero"`

	// updateStrategy says how running proxies are brought to a new version.
	// +kubebuilder:default={}
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Update Strategy"
	UpdateStrategy UpdateStrategySpec `json:"updateStrategy,omitzero"`
}

// CASpec chooses the mesh's certificate authority. Exactly one of builtin and
// certManager is set.
//
// +kubebuilder:validation:XValidation:rule="has(self.builtin) != has(self.certManager)",message="spec.ca must set exactly one of builtin and certManager"
// +kubebuilder:validation:XValidation:rule="!has(self.builtin) || !has(self.builtin.issuerValidity) || !has(self.workloadCertificateValidity) || duration(self.builtin.issuerValidity) > duration(self.workloadCertificateValidity)",message="spec.ca.builtin.issuerValidity must be longer than spec.ca.workloadCertificateValidity"
// +kubebuilder:validation:XValidation:rule="!has(self.certManager) || !has(self.certManager.issuerValidity) || !has(self.workloadCertificateValidity) || duration(self.certManager.issuerValidity) > duration(self.workloadCertificateValidity)",message="spec.ca.certManager.issuerValidity must be longer than spec.ca.workloadCertificateValidity"
type CASpec struct {
	// builtin makes the operator create a self-signed root and a signing
	// intermediate, kept in a Secret in the mesh namespace, and rotate them.
	// +optional
	Builtin *BuiltinCASpec `json:"builtin,omitempty"`

	// certManager makes cert-manager issue the mesh's signing intermediate
	// from an Issuer or ClusterIssuer of yours, so the mesh chains up to your
	// organisation's root.
	// +optional
	CertManager *CertManagerCASpec `json:"certManager,omitempty"`

	// workloadCertificateValidity is how long a workload certificate is
	// valid. Proxies renew at half its life. Between 1h and 720h.
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1h') && duration(self) <= duration('720h')",message="spec.ca.workloadCertificateValidity must be between 1h and 720h"
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Workload Certificate Validity",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:text"}
	WorkloadCertificateValidity metav1.Duration `json:"workloadCertificateValidity,omitzero"`
}

// BuiltinCASpec configures the operator's own certificate authority.
//
// +kubebuilder:validation:XValidation:rule="!has(self.rootValidity) || !has(self.issuerValidity) || duration(self.issuerValidity) < duration(self.rootValidity)",message="spec.ca.builtin.issuerValidity must be shorter than spec.ca.builtin.rootValidity"
type BuiltinCASpec struct {
	// rootValidity is the lifetime of the self-signed root. It is rotated
	// when a third of its life remains; the old root stays in the trust
	// bundle until nothing it signed can still be valid. Between 2160h (90
	// days) and 175200h (20 years).
	// +kubebuilder:default="87600h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('2160h') && duration(self) <= duration('175200h')",message="spec.ca.builtin.rootValidity must be between 2160h and 175200h"
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Root Validity",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:text"}
	RootValidity metav1.Duration `json:"rootValidity,omitzero"`

	// issuerValidity is the lifetime of the signing intermediate, which is
	// rotated when a third of its life remains. Between 24h and 87600h.
	// +kubebuilder:default="8760h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('24h') && duration(self) <= duration('87600h')",message="spec.ca.builtin.issuerValidity must be between 24h and 87600h"
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Intermediate Validity",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:text"}
	IssuerValidity metav1.Duration `json:"issuerValidity,omitzero"`
}

// CertManagerCASpec makes cert-manager issue the mesh's signing intermediate.
type CertManagerCASpec struct {
	// issuerRef names the cert-manager Issuer (in the mesh namespace) or
	// ClusterIssuer that signs the mesh's intermediate.
	// +required
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="cert-manager Issuer"
	IssuerRef IssuerRef `json:"issuerRef"`

	// issuerValidity is the requested lifetime of the intermediate;
	// cert-manager renews it when a third of its life remains. Between 24h
	// and 87600h.
	// +kubebuilder:default="8760h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('24h') && duration(self) <= duration('87600h')",message="spec.ca.certManager.issuerValidity must be between 24h and 87600h"
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Intermediate Validity",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:text"}
	IssuerValidity metav1.Duration `json:"issuerValidity,omitzero"`
}

// IssuerKind is the kind of a cert-manager issuer.
// +kubebuilder:validation:Enum=Issuer;ClusterIssuer
type IssuerKind string

const (
	// IssuerKindIssuer is a namespaced cert-manager Issuer, looked up in the mesh namespace.
	IssuerKindIssuer IssuerKind = "Issuer"
	// IssuerKindClusterIssuer is a cluster-scoped cert-manager ClusterIssuer.
	IssuerKindClusterIssuer IssuerKind = "ClusterIssuer"
)

// IssuerRef names a cert-manager issuer.
type IssuerRef struct {
	// name of the Issuer or ClusterIssuer.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Issuer Name",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:text"}
	Name string `json:"name"`

	// kind is Issuer (in the mesh namespace) or ClusterIssuer.
	// +kubebuilder:default=Issuer
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Issuer Kind",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:select:Issuer","urn:alm:descriptor:com.tectonic.ui:select:ClusterIssuer"}
	Kind IssuerKind `json:"kind,omitempty"`

	// group of the issuer's API; cert-manager.io unless you use an external issuer.
	// +kubebuilder:default=cert-manager.io
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Group string `json:"group,omitempty"`
}

// LogLevel is how much a component logs.
// +kubebuilder:validation:Enum=error;warn;info;debug;trace
type LogLevel string

// ControlPlaneSpec sizes and places the control plane.
type ControlPlaneSpec struct {
	// replicas of the control plane. They are spread across nodes and zones
	// where the cluster has them, and a PodDisruptionBudget keeps all but one
	// up during voluntary disruptions.
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Control Plane Replicas",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:podCount"}
	Replicas *int32 `json:"replicas,omitempty"`

	// resources of the control plane container. The operator requests 100m
	// CPU and 128Mi memory and limits memory to 512Mi when this is unset.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Control Plane Resources",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:resourceRequirements"}
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// image is the control plane's image repository, without tag; the
	// operator's own default when unset.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Image string `json:"image,omitempty"`

	// version is the image tag; the operator's own version when unset.
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Control Plane Version",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:text","urn:alm:descriptor:com.tectonic.ui:advanced"}
	Version string `json:"version,omitempty"`

	// logLevel of the control plane.
	// +kubebuilder:default=info
	// +optional
	LogLevel LogLevel `json:"logLevel,omitempty"`
}

// CIDR is an IPv4 or IPv6 network in CIDR notation, such as 10.0.0.0/8.
// +kubebuilder:validation:MaxLength=43
// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="must be a CIDR such as 10.0.0.0/8 or fd00::/8"
type CIDR string

// Port is a TCP port number.
// +kubebuilder:validation:Minimum=1
// +kubebuilder:validation:Maximum=65535
type Port int32

// ProxySpec configures the sidecar proxy.
type ProxySpec struct {
	// image is the proxy's image repository, without tag; the operator's own
	// default when unset.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Image string `json:"image,omitempty"`

	// version is the proxy image tag; the operator's own version when unset.
	// Changing it marks running proxies outdated (see updateStrategy).
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Proxy Version",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:text","urn:alm:descriptor:com.tectonic.ui:advanced"}
	Version string `json:"version,omitempty"`

	// resources of the proxy container. A pod can override them with the
	// trellis.dev/proxy-cpu-request, -memory-request, -cpu-limit and
	// -memory-limit annotations.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Proxy Resources",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:resourceRequirements"}
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// logLevel of the proxy.
	// +kubebuilder:default=info
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Proxy Log Level",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:select:error","urn:alm:descriptor:com.tectonic.ui:select:warn","urn:alm:descriptor:com.tectonic.ui:select:info","urn:alm:descriptor:com.tectonic.ui:select:debug","urn:alm:descriptor:com.tectonic.ui:select:trace"}
	LogLevel LogLevel `json:"logLevel,omitempty"`

	// excludeInboundPorts are pod ports whose inbound traffic bypasses the proxy.
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +optional
	ExcludeInboundPorts []Port `json:"excludeInboundPorts,omitempty"`

	// excludeOutboundPorts are destination ports whose outbound traffic bypasses the proxy.
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +optional
	ExcludeOutboundPorts []Port `json:"excludeOutboundPorts,omitempty"`

	// excludeOutboundCIDRs are destination networks whose outbound traffic
	// bypasses the proxy, such as a cloud metadata endpoint's.
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +optional
	ExcludeOutboundCIDRs []CIDR `json:"excludeOutboundCIDRs,omitempty"`
}

// FailurePolicy is what the API server does with a pod when the injection
// webhook cannot be reached.
// +kubebuilder:validation:Enum=Fail;Ignore
type FailurePolicy string

const (
	// FailurePolicyFail refuses the pod, so no meshed namespace runs a pod without its sidecar.
	FailurePolicyFail FailurePolicy = "Fail"
	// FailurePolicyIgnore admits the pod without a sidecar.
	FailurePolicyIgnore FailurePolicy = "Ignore"
)

// SidecarMode is how the proxy container is added to a pod.
// +kubebuilder:validation:Enum=Native;Classic
type SidecarMode string

const (
	// SidecarModeNative adds the proxy as an init container with restartPolicy
	// Always (Kubernetes 1.29 and later): it starts before the app and does
	// not keep a Job's pod running.
	SidecarModeNative SidecarMode = "Native"
	// SidecarModeClassic adds the proxy as the first regular container, for
	// clusters older than 1.29.
	SidecarModeClassic SidecarMode = "Classic"
)

// ApplicationStart is when application containers start relative to the proxy.
// +kubebuilder:validation:Enum=AfterProxyReady;Immediately
type ApplicationStart string

const (
	// ApplicationStartAfterProxyReady holds the app until the proxy is ready,
	// so the app's first connections do not fail.
	ApplicationStartAfterProxyReady ApplicationStart = "AfterProxyReady"
	// ApplicationStartImmediately starts the app without waiting.
	ApplicationStartImmediately ApplicationStart = "Immediately"
)

// InjectionSpec says how the sidecar is added to pods.
type InjectionSpec struct {
	// failurePolicy of the injection webhook. Fail refuses pods in meshed
	// namespaces while the webhook is down; pods elsewhere are never sent to it.
	// +kubebuilder:default=Fail
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Injection Failure Policy",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:select:Fail","urn:alm:descriptor:com.tectonic.ui:select:Ignore"}
	FailurePolicy FailurePolicy `json:"failurePolicy,omitempty"`

	// sidecarMode is Native (an init container that keeps running, the
	// default) or Classic (a regular container, for clusters before 1.29).
	// +kubebuilder:default=Native
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Sidecar Mode",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:select:Native","urn:alm:descriptor:com.tectonic.ui:select:Classic","urn:alm:descriptor:com.tectonic.ui:advanced"}
	SidecarMode SidecarMode `json:"sidecarMode,omitempty"`

	// applicationStart holds application containers until the proxy is
	// ready (AfterProxyReady, the default), or not (Immediately).
	// +kubebuilder:default=AfterProxyReady
	// +optional
	ApplicationStart ApplicationStart `json:"applicationStart,omitempty"`
}

// MTLSMode is how a meshed workload accepts connections.
// +kubebuilder:validation:Enum=Permissive;Strict
type MTLSMode string

const (
	// MTLSModePermissive accepts mutual TLS from meshed clients and plaintext from the rest.
	MTLSModePermissive MTLSMode = "Permissive"
	// MTLSModeStrict accepts mutual TLS only.
	MTLSModeStrict MTLSMode = "Strict"
)

// MTLSSpec sets how meshed workloads accept connections.
type MTLSSpec struct {
	// mode is Permissive (mTLS between meshed pods, plaintext accepted from
	// the rest: the default, for adopting the mesh) or Strict (mTLS only).
	// +kubebuilder:default=Permissive
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="mTLS Mode",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:select:Permissive","urn:alm:descriptor:com.tectonic.ui:select:Strict"}
	Mode MTLSMode `json:"mode,omitempty"`
}

// AccessLogFormat is the format of the proxies' access logs.
// +kubebuilder:validation:Enum=Off;JSON
type AccessLogFormat string

// TelemetrySpec configures tracing and access logs.
type TelemetrySpec struct {
	// tracing exports a span per request over OTLP/gRPC. Unset: proxies
	// propagate trace context but export nothing.
	// +optional
	Tracing *TracingSpec `json:"tracing,omitempty"`

	// accessLog is Off (the default) or JSON, one line per request on the proxy's stdout.
	// +kubebuilder:default=Off
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Access Log",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:select:Off","urn:alm:descriptor:com.tectonic.ui:select:JSON"}
	AccessLog AccessLogFormat `json:"accessLog,omitempty"`
}

// TracingSpec says where and how often spans are exported.
type TracingSpec struct {
	// endpoint is the OTLP/gRPC collector, host:port, such as
	// otel-collector.observability:4317.
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=260
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9.-]+:[0-9]{1,5}$`
	// +required
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Tracing Endpoint",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:text"}
	Endpoint string `json:"endpoint"`

	// samplingPercent is the share of traces started at the edge of the mesh
	// that are sampled, from 0 to 100. A request that arrives sampled stays sampled.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Tracing Sampling Percent",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:number"}
	SamplingPercent *int32 `json:"samplingPercent,omitempty"`
}

// UpdateStrategyType is how proxies are brought to a new version.
// +kubebuilder:validation:Enum=Manual;RollingRestart
type UpdateStrategyType string

const (
	// UpdateStrategyManual reports outdated proxies and leaves restarts to you.
	UpdateStrategyManual UpdateStrategyType = "Manual"
	// UpdateStrategyRollingRestart restarts the workloads that run outdated proxies, a few at a time.
	UpdateStrategyRollingRestart UpdateStrategyType = "RollingRestart"
)

// UpdateStrategySpec says how running proxies are brought to a new version.
//
// +kubebuilder:validation:XValidation:rule="!has(self.rollingRestart) || self.type == 'RollingRestart'",message="spec.updateStrategy.rollingRestart is only allowed with type RollingRestart"
type UpdateStrategySpec struct {
	// type is Manual (the default: outdated pods are counted in status and
	// left alone) or RollingRestart: the operator restarts the Deployments,
	// StatefulSets and DaemonSets whose running pods have an outdated proxy,
	// as `kubectl rollout restart` does, once the control plane and the
	// injector are ready. Pods it cannot restart that way (bare pods, Jobs)
	// are counted in the DataPlaneUpToDate condition, for you to delete.
	// +kubebuilder:default=Manual
	// +optional
	Type UpdateStrategyType `json:"type,omitempty"`

	// rollingRestart tunes RollingRestart.
	// +optional
	RollingRestart *RollingRestartSpec `json:"rollingRestart,omitempty"`
}

// RollingRestartSpec tunes the operator's restarts of outdated workloads.
type RollingRestartSpec struct {
	// maxConcurrentWorkloads is how many workloads restart at once. A
	// workload is restarting until none of its pods runs an outdated proxy;
	// then the next one, by namespace, kind and name, starts.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	MaxConcurrentWorkloads *int32 `json:"maxConcurrentWorkloads,omitempty"`
}

// MeshStatus is what the operator observed of a Mesh.
type MeshStatus struct {
	// conditions: Ready, CAReady, ControlPlaneReady, InjectorReady and DataPlaneUpToDate.
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=status,displayName="Conditions",xDescriptors={"urn:alm:descriptor:io.kubernetes.conditions"}
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation of the spec that this status describes.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=status,displayName="Observed Generation",xDescriptors={"urn:alm:descriptor:text"}
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// ca reports the certificate authority's validity.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=status,displayName="Certificate Authority"
	CA CAStatus `json:"ca,omitzero"`

	// controlPlane reports the control plane's rollout.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=status,displayName="Control Plane"
	ControlPlane ControlPlaneStatus `json:"controlPlane,omitzero"`

	// meshedNamespaces is the number of namespaces labeled for this Mesh.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=status,displayName="Meshed Namespaces",xDescriptors={"urn:alm:descriptor:text"}
	MeshedNamespaces int32 `json:"meshedNamespaces,omitempty"`

	// meshedPods is the number of running pods with this Mesh's sidecar.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=status,displayName="Meshed Pods",xDescriptors={"urn:alm:descriptor:text"}
	MeshedPods int32 `json:"meshedPods"`

	// outdatedPods is the number of meshed pods whose proxy is not the version the Mesh asks for.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=status,displayName="Outdated Pods",xDescriptors={"urn:alm:descriptor:text"}
	OutdatedPods int32 `json:"outdatedPods,omitempty"`
}

// CAStatus reports the certificate authority's validity.
type CAStatus struct {
	// rootNotAfter is when the current root expires. Unset for certManager, whose root is not the mesh's.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=status,displayName="Root Expires",xDescriptors={"urn:alm:descriptor:text"}
	RootNotAfter *metav1.Time `json:"rootNotAfter,omitempty"`

	// issuerNotAfter is when the signing intermediate expires.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=status,displayName="Intermediate Expires",xDescriptors={"urn:alm:descriptor:text"}
	IssuerNotAfter *metav1.Time `json:"issuerNotAfter,omitempty"`

	// issuerRenewalTime is when the intermediate will be rotated.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=status,displayName="Intermediate Rotation",xDescriptors={"urn:alm:descriptor:text"}
	IssuerRenewalTime *metav1.Time `json:"issuerRenewalTime,omitempty"`

	// trustAnchors is the number of roots in the trust bundle: more than one
	// while proxies still hold certificates from a rotated root.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=status,displayName="Trust Anchors",xDescriptors={"urn:alm:descriptor:text"}
	TrustAnchors int32 `json:"trustAnchors,omitempty"`
}

// ControlPlaneStatus reports the control plane's rollout.
type ControlPlaneStatus struct {
	// image the control plane runs.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=status,displayName="Control Plane Image",xDescriptors={"urn:alm:descriptor:text"}
	Image string `json:"image,omitempty"`

	// replicas desired.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// availableReplicas serving.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=status,displayName="Available Control Plane Replicas",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:podCount"}
	AvailableReplicas int32 `json:"availableReplicas,omitempty"`
}

// MeshList is a list of Meshes.
//
// +kubebuilder:object:root=true
type MeshList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the list's metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the Meshes.
	Items []Mesh `json:"items"`
}
