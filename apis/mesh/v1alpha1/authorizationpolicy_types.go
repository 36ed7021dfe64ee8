package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AuthorizationPolicy says which callers may send which requests to the
// meshed pods it selects in its namespace. Each pod's own proxy enforces it
// on the traffic that the pod receives; a pod without the sidecar is not
// protected by it.
//
// A request to a pod is decided by the AuthorizationPolicies of the pod's
// namespace that select the pod:
//
//  1. If a rule of a Deny policy matches the request, it is denied.
//  2. Otherwise, if no Allow policy selects the pod, it is allowed.
//  3. Otherwise, it is allowed if a rule of some Allow policy matches it,
//     and denied if none does.
//
// So an Allow policy also denies what it does not allow, as in Istio and
// Linkerd. An Allow policy with no rules selects pods and allows nothing:
// with an empty selector it is the namespace's default of deny, which other
// Allow policies then open up (`spec: {}` is such a policy). There is no
// separate default action: deny by default is an Allow policy with no rules.
//
// A rule matches a request when one of its from entries matches the caller
// and one of its to entries matches the request. A rule without from
// matches every caller, and one without to every request: the empty rule
// {} matches everything, so it allows all as an Allow rule and denies all as
// a Deny rule. A Deny policy must have rules: one without would deny
// nothing.
//
// A denied HTTP request is answered 403 (gRPC: PERMISSION_DENIED); a denied
// TCP connection is closed. The kubelet's probes, which the proxy relays to
// the application itself, are not subject to authorization.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=authz,categories=trellis
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +operator-sdk:csv:customresourcedefinitions:displayName="Authorization Policy",order=3,resources={{Pod,v1}}
type AuthorizationPolicy struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the object's metadata. Its namespace is where the policy
	// selects pods.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired authorization policy. The empty spec, {}, is the
	// namespace's default of deny: every pod of the namespace denies the
	// requests that no other Allow policy allows. (The Go type writes spec
	// out even when it is empty, for that reason.)
	// +required
	Spec AuthorizationPolicySpec `json:"spec"`

	// status is what the control plane observed of the policy.
	// +optional
	Status AuthorizationPolicyStatus `json:"status,omitzero"`
}

// AuthorizationPolicySpec is the desired state of an AuthorizationPolicy.
//
// +kubebuilder:validation:XValidation:rule="self.action != 'Deny' || (has(self.rules) && size(self.rules) > 0)",message="a Deny policy needs at least one rule, or it denies nothing; to deny every request to the selected pods, use action Allow with no rules, or a Deny rule {} that matches everything",fieldPath=.rules
type AuthorizationPolicySpec struct {
	// selector selects the pods of the policy's namespace that the policy
	// applies to, by their labels. Unset or empty ({}), it selects every pod
	// of the namespace.
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="matchExpressions operator must be In, NotIn, Exists or DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))",message="matchExpressions with operator In or NotIn need values, and those with Exists or DoesNotExist take none"
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Pod Selector",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:selector:core:v1:Pod"}
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// action is what the policy does with the requests that its rules
	// match: Allow (the default) lets them through, and makes the selected
	// pods deny whatever no Allow policy matches; Deny refuses them, before
	// any Allow policy is considered.
	// +kubebuilder:default=Allow
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Action",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:select:Allow","urn:alm:descriptor:com.tectonic.ui:select:Deny"}
	Action AuthorizationAction `json:"action,omitempty"`

	// rules say which requests the policy matches; a request matches when
	// any rule matches it. At most 64. An Allow policy with no rules matches
	// nothing: the selected pods deny every request that another Allow
	// policy does not allow. A Deny policy needs at least one rule.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +optional
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Rules"
	Rules []AuthorizationRule `json:"rules,omitempty"`
}

// AuthorizationAction is what a policy does with the requests its rules match.
// +kubebuilder:validation:Enum=Allow;Deny
type AuthorizationAction string

const (
	// AuthorizationActionAllow lets matched requests through; the selected
	// pods deny what no Allow policy matches.
	AuthorizationActionAllow AuthorizationAction = "Allow"
	// AuthorizationActionDeny refuses matched requests, whatever Allow
	// policies say.
	AuthorizationActionDeny AuthorizationAction = "Deny"
)

// AuthorizationRule matches requests by who sends them (from) and what they
// ask for (to). Both must match; what is left out matches everything.
type AuthorizationRule struct {
	// from matches the caller: a request matches when any entry does.
	// Unset: every caller, authenticated or not. At most 8.
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +optional
	From []AuthorizationSource `json:"from,omitempty"`

	// to matches the request: it matches when any entry does. Unset: every
	// request and connection, on every port. At most 8.
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +optional
	To []AuthorizationOperation `json:"to,omitempty"`
}

// AuthorizationSource matches callers by their mesh identity, by their
// namespace, or by their having no identity. It sets exactly one of
// identities, namespaces and unauthenticated; list several entries in from
// to match any of them.
//
// +kubebuilder:validation:XValidation:rule="(has(self.identities) ? 1 : 0) + (has(self.namespaces) ? 1 : 0) + (has(self.unauthenticated) && self.unauthenticated ? 1 : 0) == 1",message="each from entry sets exactly one of identities, namespaces and unauthenticated: true; to match any of several, list them as separate from entries"
type AuthorizationSource struct {
	// identities match callers by the SPIFFE ID of their mutual TLS
	// certificate, spiffe://<trust domain>/ns/<namespace>/sa/<service
	// account>: exactly, or by prefix when the ID ends with *, as
	// spiffe://cluster.local/ns/shop/* for every workload of namespace shop.
	// spiffe://* matches every authenticated caller. At most 16.
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Identities []SPIFFEIDMatch `json:"identities,omitempty"`

	// namespaces match authenticated callers by their workload's
	// namespace: the <namespace> of an identity in the mesh's trust domain.
	// At most 16.
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Namespaces []NamespaceName `json:"namespaces,omitempty"`

	// unauthenticated, when true, matches callers without a mesh identity:
	// plaintext connections, which pods accept only while the Mesh's mTLS
	// mode is Permissive. Such callers match no identities or namespaces
	// entry.
	// +optional
	Unauthenticated bool `json:"unauthenticated,omitempty"`
}

// SPIFFEIDMatch is a SPIFFE ID, spiffe://<trust domain>/<path>, or a prefix
// of one ending with *.
// +kubebuilder:validation:MinLength=10
// +kubebuilder:validation:MaxLength=512
// +kubebuilder:validation:XValidation:rule="self.startsWith('spiffe://')",message="must be a SPIFFE ID starting with spiffe://, such as spiffe://cluster.local/ns/shop/sa/frontend"
// +kubebuilder:validation:XValidation:rule="!self.contains('*') || self.indexOf('*') == size(self) - 1",message="may hold * only as its last character, to match a prefix, such as spiffe://cluster.local/ns/shop/*"
type SPIFFEIDMatch string

// NamespaceName is the name of a Kubernetes namespace.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
type NamespaceName string

// AuthorizationOperation matches what a request asks for. It sets at least
// one of ports, paths and methods, and a request must match each of those
// it sets.
//
// paths and methods match HTTP requests only (gRPC included). A connection
// that the proxy does not read as HTTP fails closed against them: an entry
// that sets them never matches it in an Allow policy, and matches it in a
// Deny policy when the entry's ports do.
//
// +kubebuilder:validation:XValidation:rule="has(self.ports) || has(self.paths) || has(self.methods)",message="each to entry sets at least one of ports, paths and methods; to match every request, leave to out of the rule"
type AuthorizationOperation struct {
	// ports match the pod port that the request arrives on: the Service's
	// targetPort, not its port. At most 16.
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Ports []Port `json:"ports,omitempty"`

	// paths match the request's path, without its query string: exactly,
	// or by prefix when the path ends with *, as /api/* or, for every
	// method of a gRPC service, /trellis.sample.converter.v1.Converter/*.
	// At most 16.
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Paths []HTTPPathMatch `json:"paths,omitempty"`

	// methods match the request's HTTP method. gRPC calls are all POST.
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=9
	// +optional
	Methods []HTTPMethod `json:"methods,omitempty"`
}

// HTTPPathMatch is an HTTP path, such as /temperature, or a prefix of one
// ending with *, such as /api/*.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=1024
// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="must start with /, such as /api/v1/items or /api/*"
// +kubebuilder:validation:XValidation:rule="!self.contains('*') || self.indexOf('*') == size(self) - 1",message="may hold * only as its last character, to match a prefix, such as /api/*"
// +kubebuilder:validation:XValidation:rule="!self.contains('?') && !self.contains('#')",message="is matched without the query string or fragment: remove what follows ? or #"
type HTTPPathMatch string

// HTTPMethod is an HTTP request method.
// +kubebuilder:validation:Enum=GET;HEAD;POST;PUT;DELETE;CONNECT;OPTIONS;TRACE;PATCH
type HTTPMethod string

// AuthorizationPolicyStatus is what the control plane observed of an
// AuthorizationPolicy.
type AuthorizationPolicyStatus struct {
	// conditions: Accepted, True when the proxies of the selected pods
	// enforce the policy. False with reason Invalid when the control plane
	// cannot compile it; the message names the field and the fix. Until it
	// is fixed, the policy fails closed: as an Allow policy it allows
	// nothing, as a Deny policy it denies every request, to the pods it
	// selects, or to every pod of the namespace when the selector itself is
	// what is invalid.
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

// AuthorizationPolicyList is a list of AuthorizationPolicies.
//
// +kubebuilder:object:root=true
type AuthorizationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the list's metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the AuthorizationPolicies.
	Items []AuthorizationPolicy `json:"items"`
}
