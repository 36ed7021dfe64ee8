package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TrafficPolicy says how meshed clients send traffic to one or more Services
// of its namespace: how they balance requests across the Services' endpoints,
// how many connections and requests they open, when they give up on a
// connection or a request, when they stop sending to an endpoint that keeps
// failing, and how much they may retry. Routing (splits, matches, rewrites,
// per-route timeouts and retries) is not here: it belongs to Gateway API
// HTTPRoutes and GRPCRoutes whose parentRef is the Service.
//
// A TrafficPolicy is enforced by the calling pods' proxies, each on its own:
// limits are per client pod, not across the mesh.
//
// One TrafficPolicy is in force per Service, as a whole: policies are not
// merged. When several target the same Service, the oldest (by creation
// time; between policies created in the same second, the first by name)
// applies to it, and the others report Accepted False with reason Conflicted
// for it, as Gateway API policies do.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=tp,categories=trellis
// +kubebuilder:metadata:labels="gateway.networking.k8s.io/policy=Direct"
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Targets",type=string,JSONPath=`.spec.targetRefs[*].name`,priority=1
// +kubebuilder:printcolumn:name="Load Balancer",type=string,JSONPath=`.spec.loadBalancer`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +operator-sdk:csv:customresourcedefinitions:displayName="Traffic Policy",order=2,resources={{Service,v1}}
type TrafficPolicy struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the object's metadata. Its creation time decides which of
	// two TrafficPolicies targeting the same Service is in force.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired traffic policy.
	// +required
	Spec TrafficPolicySpec `json:"spec,omitzero"`

	// status is what the control plane observed of the policy.
	// +optional
	Status TrafficPolicyStatus `json:"status,omitzero"`
}

// TrafficPolicySpec is the desired state of a TrafficPolicy. Every field but
// targetRefs is optional: what is unset behaves as for a Service that no
// TrafficPolicy targets.
type TrafficPolicySpec struct {
	// targetRefs are the Services, in the policy's namespace, that the policy
	// applies to: from 1 to 16, each named once. The policy governs the
	// traffic that meshed clients send to each Service's endpoints, whatever
	// namespace the clients are in. When an HTTPRoute or GRPCRoute splits a
	// Service's traffic across other Services (such as converter across
	// converter-v1 and converter-v2), each backend Service's own
	// TrafficPolicy governs its endpoints; target the backends too.
	// +listType=map
	// +listMapKey=group
	// +listMapKey=kind
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +required
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Target Services"
	TargetRefs []LocalPolicyTargetReference `json:"targetRefs,omitempty"`

	// loadBalancer is how a client spreads requests across a Service's ready
	// endpoints: LeastRequest (the default) sends each request to whichever
	// of two endpoints picked at random has fewer requests in flight;
	// RoundRobin takes them in turn; Random picks one at random.
	// gRPC and HTTP/2 requests are balanced one by one, not per connection.
	// +kubebuilder:default=LeastRequest
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Load Balancer",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:select:LeastRequest","urn:alm:descriptor:com.tectonic.ui:select:RoundRobin","urn:alm:descriptor:com.tectonic.ui:select:Random"}
	LoadBalancer LoadBalancerAlgorithm `json:"loadBalancer,omitempty"`

	// connectTimeout is how long a client waits for a TCP connection (and
	// the mutual TLS handshake) to an endpoint before it tries another.
	// Between 1ms and 1h; 10s by default.
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms') && duration(self) <= duration('1h')",message="must be between 1ms and 1h, such as 10s"
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Connect Timeout",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:text"}
	ConnectTimeout metav1.Duration `json:"connectTimeout,omitzero"`

	// requestTimeout is how long a client waits for a whole response to a
	// request sent to the Service, retries included, when the request's
	// route sets no timeout of its own: an HTTPRoute rule's
	// timeouts.request takes precedence. It applies to requests sent to the
	// Service the client named, also when a route passes them on to
	// backend Services. A gRPC client's own deadline still holds: the
	// shorter one wins. It bounds streaming calls as a whole too, so leave
	// it unset for a Service that holds long streams. Between 1ms and 24h.
	// Unset: no timeout.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms') && duration(self) <= duration('24h')",message="must be between 1ms and 24h, such as 15s; unset it for no timeout"
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Request Timeout",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:text"}
	RequestTimeout *metav1.Duration `json:"requestTimeout,omitempty"`

	// connectionLimits bound the connections and requests that each client
	// pod has open or queued to the Service; a request beyond them fails at
	// once with 503 (gRPC: UNAVAILABLE) instead of piling up. Unset: no limits.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Connection Limits"
	ConnectionLimits *ConnectionLimits `json:"connectionLimits,omitempty"`

	// outlierDetection is circuit breaking per endpoint: a client stops
	// sending to an endpoint that fails several times in a row, for a while,
	// and sends to the others. Unset: endpoints are never ejected for failing
	// (they still leave when they are no longer ready).
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Outlier Detection"
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`

	// retryBudget caps the retries that clients make to the Service, so that
	// retries asked for by routes (an HTTPRoute rule's retry) cannot multiply
	// the load on a Service that is already failing. Unset: the mesh's
	// default budget, 20 percent plus 10 retries per second.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Retry Budget"
	RetryBudget *RetryBudget `json:"retryBudget,omitempty"`
}

// LocalPolicyTargetReference names a Service in the policy's namespace, as a
// Gateway API local policy attachment does.
type LocalPolicyTargetReference struct {
	// group of the target: "" (the core API group, the only one allowed).
	// +kubebuilder:default=""
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == ''",message="must be \"\" (the core API group): a TrafficPolicy targets Services"
	// +optional
	Group string `json:"group,omitempty"`

	// kind of the target: Service (the only one allowed).
	// +kubebuilder:default=Service
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == 'Service'",message="must be Service: a TrafficPolicy targets Services; to shape traffic to a workload, target the Service in front of it"
	// +optional
	Kind string `json:"kind,omitempty"`

	// name of the Service, in the policy's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	// +required
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Service",xDescriptors={"urn:alm:descriptor:io.kubernetes:Service"}
	Name string `json:"name"`
}

// LoadBalancerAlgorithm is how a client picks an endpoint for each request.
// +kubebuilder:validation:Enum=LeastRequest;RoundRobin;Random
type LoadBalancerAlgorithm string

const (
	// LoadBalancerLeastRequest sends each request to whichever of two
	// endpoints picked at random has fewer requests in flight (power of two
	// choices).
	LoadBalancerLeastRequest LoadBalancerAlgorithm = "LeastRequest"
	// LoadBalancerRoundRobin takes the endpoints in turn.
	LoadBalancerRoundRobin LoadBalancerAlgorithm = "RoundRobin"
	// LoadBalancerRandom picks an endpoint at random.
	LoadBalancerRandom LoadBalancerAlgorithm = "Random"
)

// ConnectionLimits bound what each client pod has open or queued to a
// Service, across all of its endpoints. Each unset limit is no limit.
type ConnectionLimits struct {
	// maxConnections is the most opaque TCP connections a client has open
	// to the Service's endpoints together; one more is closed at once.
	// (HTTP and gRPC requests share the proxies' connections: bound them
	// with maxPendingRequests.)
	// +kubebuilder:validation:Minimum=1
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Max Connections",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:number"}
	MaxConnections *int32 `json:"maxConnections,omitempty"`

	// maxPendingRequests is the most HTTP and gRPC requests a client has in
	// flight to the Service's endpoints together; one more is answered 503
	// (gRPC UNAVAILABLE) at once.
	// +kubebuilder:validation:Minimum=1
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Max Pending Requests",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:number"}
	MaxPendingRequests *int32 `json:"maxPendingRequests,omitempty"`
}

// OutlierDetection ejects failing endpoints from a client's load balancing.
// A failure is a connection that cannot be made, a request that times out,
// an HTTP 5xx response, or a gRPC UNAVAILABLE, INTERNAL, UNKNOWN or
// DEADLINE_EXCEEDED status.
type OutlierDetection struct {
	// consecutiveErrors is how many failures in a row eject an endpoint.
	// Between 1 and 1000; 5 by default.
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Consecutive Errors",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:number"}
	ConsecutiveErrors *int32 `json:"consecutiveErrors,omitempty"`

	// interval is how often a client reviews its ejections: an ejected
	// endpoint comes back at the first review after its ejection time is
	// over. Between 100ms and 10m; 10s by default.
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('100ms') && duration(self) <= duration('10m')",message="must be between 100ms and 10m, such as 10s"
	// +optional
	Interval metav1.Duration `json:"interval,omitzero"`

	// baseEjectionTime is how long an endpoint is ejected the first time.
	// An endpoint that fails again as soon as it comes back stays out
	// longer: its nth ejection in a row lasts n times baseEjectionTime.
	// Between 1s and 1h; 30s by default.
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('1h')",message="must be between 1s and 1h, such as 30s"
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Base Ejection Time",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:text"}
	BaseEjectionTime metav1.Duration `json:"baseEjectionTime,omitzero"`

	// maxEjectionPercent is the most of a Service's endpoints, in percent,
	// that a client ejects at the same time, rounded down, so that a failure
	// of the whole Service does not leave it nothing to send to. Between 0
	// (never eject) and 100; 50 by default.
	// +kubebuilder:default=50
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	MaxEjectionPercent *int32 `json:"maxEjectionPercent,omitempty"`
}

// RetryBudget caps a client's retries to a Service: over the last 10
// seconds, retries may be at most percent of the requests, plus
// minRetriesPerSecond, so that a lightly loaded client can still retry. A
// retry beyond the budget is not made; the failure is returned as it came.
type RetryBudget struct {
	// percent is the most retries, in percent of the requests, that a client
	// makes to the Service. Between 0 (retry only within
	// minRetriesPerSecond) and 100; 20 by default.
	// +kubebuilder:default=20
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Retry Budget Percent",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:number"}
	Percent *int32 `json:"percent,omitempty"`

	// minRetriesPerSecond is how many retries per second a client may
	// always make, whatever percent allows. Between 0 and 10000; 10 by
	// default.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +optional
	MinRetriesPerSecond *int32 `json:"minRetriesPerSecond,omitempty"`
}

// TrafficPolicyStatus is what the control plane observed of a TrafficPolicy.
type TrafficPolicyStatus struct {
	// conditions: Accepted, True when the policy is in force for every
	// Service it targets. Otherwise False, with reason TargetNotFound when
	// some target Service does not exist, else Conflicted when an older
	// TrafficPolicy holds some target; the message names those Services.
	// The policy is in force for the rest of its targets either way.
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=status,displayName="Conditions",xDescriptors={"urn:alm:descriptor:io.kubernetes.conditions"}
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation of the spec that this status describes.
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=status,displayName="Observed Generation",xDescriptors={"urn:alm:descriptor:text"}
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// TrafficPolicyList is a list of TrafficPolicies.
//
// +kubebuilder:object:root=true
type TrafficPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the list's metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the TrafficPolicies.
	Items []TrafficPolicy `json:"items"`
}
