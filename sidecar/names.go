package sidecar

// Names and numbers that the injected pod, the proxy and the operator share.
// The proxy binary reads the paths and ports from here; uninjection and the
// operator's outdated-pod count read the labels and annotations.
const (
	// InitContainerName sets up the pod's traffic redirection, then exits.
	InitContainerName = "trellis-init"
	// ProxyContainerName is the sidecar proxy.
	ProxyContainerName = "trellis-proxy"
	// TokenVolumeName holds the proxy's projected ServiceAccount token.
	TokenVolumeName = "trellis-token"
	// TrustBundleVolumeName holds the mesh's roots; it has the name of the
	// ConfigMap it mounts, controllers.TrustBundleName (inject's
	// TestOperatorNames checks the copy).
	TrustBundleVolumeName = "trellis-ca-bundle"
	// TmpVolumeName is the proxy's writable scratch space: its root
	// filesystem is read-only.
	TmpVolumeName = "trellis-tmp"

	// TokenDir is where the proxy finds its token, in the file named TokenFile.
	TokenDir = "/var/run/trellis/token"
	// TokenFile is the token's file name in TokenDir.
	TokenFile = "token"
	// TrustBundleDir is where the proxy finds the mesh's roots, in the file
	// named by the trust bundle ConfigMap's key (ca.crt).
	TrustBundleDir = "/var/run/trellis/ca-bundle"
	// TrustBundleFile is the roots' file name in TrustBundleDir: the trust
	// bundle ConfigMap's key, controllers.TrustBundleKey (inject's
	// TestOperatorNames checks the copy).
	TrustBundleFile = "ca.crt"
	// TmpDir is where TmpVolumeName is mounted in the proxy.
	TmpDir = "/tmp"

	// ProxyBinary is the path of the proxy in the Trellis image. Its
	// subcommands: init (trellis-init), run (trellis-proxy), wait-ready
	// (the Classic mode postStart hook).
	ProxyBinary = "/usr/local/bin/proxy"

	// OutboundPort receives the app's redirected outbound connections.
	OutboundPort = 15001
	// InboundPort receives the pod's redirected inbound connections.
	InboundPort = 15006
	// AdminPort serves /ready, /live, /metrics, /shutdown and the app probe
	// relay (/app-health/...). It is never redirected.
	AdminPort = 15020
	// AdminPortName names AdminPort on the proxy container, for scrapers.
	AdminPortName = "trellis-admin"
	// ProxyUID runs the proxy; trellis-init leaves this UID's traffic alone,
	// which is how the proxy's own connections escape redirection.
	ProxyUID = 2102

	// TokenAudience is the audience of the proxy's token; the control plane
	// accepts no other in its TokenReview.
	TokenAudience = "trellis"
	// TokenExpirationSeconds is the lifetime the kubelet asks for the token;
	// it refreshes the file at 80% of it.
	TokenExpirationSeconds = 3600

	// AppHealthPathPrefix starts the paths on AdminPort to which the app's
	// probes are rewritten: /app-health/<container>/<livez|readyz|startupz>.
	AppHealthPathPrefix = "/app-health/"
)

// Labels and annotations on injected pods, and the annotations a pod can set
// to tune its proxy. The namespace and pod labels that opt in and out are in
// the API package (meshv1.InjectionLabel, MeshLabel, InjectPodLabel); the
// pod label naming its Mesh is meshv1.MeshLabel too.
const (
	// LabelProxyVersion on an injected pod is its proxy's version, so the
	// operator can count outdated pods with a label selector.
	LabelProxyVersion = "trellis.dev/proxy-version"

	// AnnotationStatus on an injected pod is the JSON of an inject.Status:
	// what was added. Its presence is how an injected pod is recognised.
	AnnotationStatus = "trellis.dev/status"
	// AnnotationAppProbes is the JSON of inject.AppProbes: the app's probes
	// as they were before they were rewritten. The proxy gets the same JSON in
	// its TRELLIS_APP_PROBES variable.
	AnnotationAppProbes = "trellis.dev/app-probes"
	// AnnotationDefaultContainer is kubectl's: logs and exec go to the
	// container it names when none is given.
	AnnotationDefaultContainer = "kubectl.kubernetes.io/default-container"

	// AnnotationExcludeInboundPorts lists pod ports, comma-separated, whose
	// inbound traffic bypasses the proxy, on top of the Mesh's.
	AnnotationExcludeInboundPorts = "trellis.dev/exclude-inbound-ports"
	// AnnotationExcludeOutboundPorts lists destination ports whose outbound
	// traffic bypasses the proxy, on top of the Mesh's.
	AnnotationExcludeOutboundPorts = "trellis.dev/exclude-outbound-ports"
	// AnnotationExcludeOutboundCIDRs lists destination networks whose
	// outbound traffic bypasses the proxy, on top of the Mesh's.
	AnnotationExcludeOutboundCIDRs = "trellis.dev/exclude-outbound-cidrs"

	// AnnotationProxyCPURequest overrides the Mesh's proxy CPU request.
	AnnotationProxyCPURequest = "trellis.dev/proxy-cpu-request"
	// AnnotationProxyMemoryRequest overrides the Mesh's proxy memory request.
	AnnotationProxyMemoryRequest = "trellis.dev/proxy-memory-request"
	// AnnotationProxyCPULimit overrides the Mesh's proxy CPU limit.
	AnnotationProxyCPULimit = "trellis.dev/proxy-cpu-limit"
	// AnnotationProxyMemoryLimit overrides the Mesh's proxy memory limit.
	AnnotationProxyMemoryLimit = "trellis.dev/proxy-memory-limit"
)

// Environment variables of the proxy container.
const (
	EnvPodName        = "TRELLIS_POD_NAME"
	EnvPodNamespace   = "TRELLIS_POD_NAMESPACE"
	EnvPodIP          = "TRELLIS_POD_IP"
	EnvServiceAccount = "TRELLIS_SERVICE_ACCOUNT"
	EnvNodeName       = "TRELLIS_NODE_NAME"
	// EnvControlPlane is the control plane's gRPC address, host:port.
	EnvControlPlane = "TRELLIS_CONTROL_PLANE"
	EnvTrustDomain  = "TRELLIS_TRUST_DOMAIN"
	// EnvMesh is the Mesh's name.
	EnvMesh = "TRELLIS_MESH"
	// EnvMTLSMode is Permissive or Strict.
	EnvMTLSMode = "TRELLIS_MTLS_MODE"
	EnvLogLevel = "TRELLIS_LOG_LEVEL"
	// EnvAppProbes is the JSON of inject.AppProbes, as in
	// AnnotationAppProbes, which the proxy decodes with appprobe.ParseProbes;
	// unset when the app has no probe to relay.
	EnvAppProbes = "TRELLIS_APP_PROBES"
	// EnvTracingEndpoint is the OTLP/gRPC collector, host:port; unset when
	// the Mesh does not export spans.
	EnvTracingEndpoint = "TRELLIS_TRACING_ENDPOINT"
	// EnvTracingSamplingPercent is 0 to 100; set with EnvTracingEndpoint.
	EnvTracingSamplingPercent = "TRELLIS_TRACING_SAMPLING_PERCENT"
	// EnvAccessLog is Off or JSON.
	EnvAccessLog = "TRELLIS_ACCESS_LOG"
)
