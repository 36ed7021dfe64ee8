package v1alpha1

// Condition types of a Mesh.
const (
	// ReadyCondition is True when the mesh can serve: its CA has issued and
	// its control plane is available. It summarises the other conditions.
	ReadyCondition = "Ready"
	// CAReadyCondition is True when the signing intermediate is valid and the
	// trust bundle is published.
	CAReadyCondition = "CAReady"
	// ControlPlaneReadyCondition is True when at least one control-plane
	// replica is available.
	ControlPlaneReadyCondition = "ControlPlaneReady"
	// InjectorReadyCondition is True when the injection webhook is configured and serving.
	InjectorReadyCondition = "InjectorReady"
	// DataPlaneUpToDateCondition is True when every meshed pod runs the proxy version the Mesh asks for.
	DataPlaneUpToDateCondition = "DataPlaneUpToDate"
)

// Reasons of Mesh conditions. Each says what the operator saw; the message
// says what to do about it.
const (
	// ReadyReason: every condition that Ready summarises is True.
	ReadyReason = "Ready"
	// NotReadyReason: some condition that Ready summarises is not True; the message names it.
	NotReadyReason = "NotReady"
	// InvalidSpecReason: the spec cannot be acted on; the message names the field and the fix.
	// The operator does not retry until the spec (or what it refers to) changes.
	InvalidSpecReason = "InvalidSpec"
	// DeletingReason: the Mesh is being deleted.
	DeletingReason = "Deleting"

	// CAIssuedReason: the signing intermediate is valid.
	CAIssuedReason = "Issued"
	// CAPendingReason: cert-manager has not yet written the intermediate's Secret.
	CAPendingReason = "Pending"
	// CAIssuerNotFoundReason: the cert-manager issuer named in spec.ca.certManager.issuerRef does not exist.
	CAIssuerNotFoundReason = "IssuerNotFound"
	// CertManagerNotInstalledReason: spec.ca.certManager is set but cert-manager's CRDs are not installed.
	CertManagerNotInstalledReason = "CertManagerNotInstalled"
	// CAInvalidReason: the issued intermediate cannot sign (not a CA, expired, wrong chain).
	CAInvalidReason = "Invalid"

	// ControlPlaneAvailableReason: at least one control-plane replica is available.
	ControlPlaneAvailableReason = "Available"
	// ControlPlaneUnavailableReason: no control-plane replica is available yet.
	ControlPlaneUnavailableReason = "Unavailable"

	// InjectorConfiguredReason: the Mesh's MutatingWebhookConfiguration is
	// applied and trusts the injector's serving certificate.
	InjectorConfiguredReason = "Configured"
	// InjectorNoCABundleReason: the webhook configuration has no CA bundle,
	// so the API server cannot call the injector.
	InjectorNoCABundleReason = "NoCABundle"

	// DataPlaneUpToDateReason: every meshed pod runs the Mesh's proxy version.
	DataPlaneUpToDateReason = "UpToDate"
	// DataPlaneOutdatedReason: some meshed pods run another proxy version.
	DataPlaneOutdatedReason = "Outdated"
)

// Condition type of TrafficPolicies and AuthorizationPolicies.
const (
	// AcceptedCondition is True when the control plane has accepted a policy
	// and sends it to the proxies that enforce it.
	AcceptedCondition = "Accepted"
)

// Reasons of the Accepted condition of TrafficPolicies and
// AuthorizationPolicies. The message names the objects and fields concerned.
const (
	// PolicyAcceptedReason: the policy is in force for everything it targets or selects.
	PolicyAcceptedReason = "Accepted"
	// PolicyTargetNotFoundReason: a Service named in a TrafficPolicy's
	// spec.targetRefs does not exist. The policy applies to the targets that do.
	PolicyTargetNotFoundReason = "TargetNotFound"
	// PolicyConflictedReason: an older TrafficPolicy already targets a
	// Service that this one targets, and stays in force for it; the message
	// names the Service and the other policy. This policy applies to its
	// other targets.
	PolicyConflictedReason = "Conflicted"
	// PolicyInvalidReason: the control plane cannot compile an
	// AuthorizationPolicy that the API server accepted, such as one whose
	// selector has a malformed label value. The policy fails closed until
	// it is fixed (see AuthorizationPolicyStatus).
	PolicyInvalidReason = "Invalid"
)
