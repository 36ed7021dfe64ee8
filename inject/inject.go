package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/sidecar"
)

// Config is what the operator knows that the Mesh does not say.
type Config struct {
	// ProxyImage is the operator's proxy image, repository:tag, such as
	// ghcr.io/trellis-mesh/trellis:v0.1.0, or pinned with @digest. It is
	// used as it is when the Mesh sets neither spec.proxy.image nor
	// spec.proxy.version; when the Mesh sets only spec.proxy.version, the
	// image is ProxyImage's repository at that tag.
	ProxyImage string
	// Version is the default proxy version: the tag of ProxyImage, which
	// it defaults to when empty. It is the pod's trellis.dev/proxy-version.
	Version string
	// KubernetesMinor is the cluster's minor version, 29 for 1.29. Native
	// sidecars need 29 or later; below (and at 0, unknown) the proxy is a
	// regular container.
	KubernetesMinor int
}

// Report says what Inject did.
type Report struct {
	// Injected is true when the returned pod has a sidecar that it did not have.
	Injected bool
	// Skipped says why the pod was not injected; empty when it was.
	Skipped SkipReason
	// Added lists what was added, as initContainer/<name>, container/<name>
	// and volume/<name>.
	Added []string
	// Warnings are for the user, in the admission response: the pod is
	// admitted but something about it will not work as they may expect.
	Warnings []string
}

// Status is the JSON in an injected pod's trellis.dev/status annotation:
// what Inject added, so that it can be recognised and removed again.
type Status struct {
	// Version of the proxy.
	Version string `json:"version"`
	// Mesh is the Mesh's name.
	Mesh string `json:"mesh"`
	// InitContainers added, in the order they run.
	InitContainers []string `json:"initContainers"`
	// Containers added.
	Containers []string `json:"containers"`
	// Volumes added, sorted.
	Volumes []string `json:"volumes"`
}

// ReadStatus returns the status of an injected pod, or nil when pod has no
// trellis.dev/status annotation.
func ReadStatus(pod *corev1.Pod) (*Status, error) {
	v, ok := pod.Annotations[sidecar.AnnotationStatus]
	if !ok {
		return nil, nil
	}
	var s Status
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return nil, fmt.Errorf("pod %s: annotation %s is not the JSON Trellis writes: %w", PodRef(pod, nil), sidecar.AnnotationStatus, err)
	}
	return &s, nil
}

// Inject returns a copy of pod with mesh's sidecar added, and a report of
// what it did. A pod that Decide says not to inject comes back as an
// unchanged copy, with the reason in the report. An injected pod carries
// the trellis.dev/status annotation, which Decide skips as AlreadyInjected,
// so Inject(Inject(p)) equals Inject(p). pod is never modified.
//
// An error means the pod cannot be injected as it stands: an annotation
// with a bad value, a container or volume with one of Trellis's names, a
// port the proxy needs. Errors name the pod, what is wrong and the fix; the
// admission handler refuses the pod with them.
func Inject(pod *corev1.Pod, namespace *corev1.Namespace, mesh *meshv1.Mesh, cfg Config) (*corev1.Pod, Report, error) {
	if pod == nil || namespace == nil || mesh == nil {
		return nil, Report{}, errors.New("inject: pod, namespace and mesh must not be nil")
	}
	if ok, reason := Decide(pod, namespace, mesh); !ok {
		return pod.DeepCopy(), Report{Skipped: reason}, nil
	}
	ref := PodRef(pod, namespace)
	p, warnings, err := resolve(ref, pod, namespace, mesh, cfg)
	if err != nil {
		return nil, Report{}, err
	}
	if err := checkNamesAndPorts(ref, pod); err != nil {
		return nil, Report{}, err
	}

	out := pod.DeepCopy()
	probes, probeWarnings, err := rewriteProbes(ref, out)
	if err != nil {
		return nil, Report{}, err
	}
	warnings = append(warnings, probeWarnings...)

	defaultContainer := ""
	if len(out.Spec.Containers) > 0 {
		defaultContainer = out.Spec.Containers[0].Name
	}
	status := Status{Version: p.version, Mesh: mesh.Name, Containers: []string{}}

	// trellis-init runs first, so that every later container, init or not,
	// starts with its traffic redirected.
	inits := []corev1.Container{initContainer(p)}
	status.InitContainers = append(status.InitContainers, sidecar.InitContainerName)
	proxy := proxyContainer(p, probes)
	if p.native {
		// Right after trellis-init, so that the user's init containers run
		// inside the mesh; its startup probe holds them (and the app) until
		// the proxy is ready.
		inits = append(inits, proxy)
		status.InitContainers = append(status.InitContainers, sidecar.ProxyContainerName)
	} else {
		// First, so that its postStart hook holds the app's containers,
		// which the kubelet starts in order, until it is ready.
		out.Spec.Containers = append([]corev1.Container{proxy}, out.Spec.Containers...)
		status.Containers = append(status.Containers, sidecar.ProxyContainerName)
	}
	out.Spec.InitContainers = append(inits, out.Spec.InitContainers...)

	// The proxy's projected token needs a named ServiceAccount, and the API
	// server's validation refuses the pod without one. Its ServiceAccount
	// admission plugin names "default" anyway, but webhooks are not
	// guaranteed to run after it.
	if out.Spec.ServiceAccountName == "" {
		out.Spec.ServiceAccountName = out.Spec.DeprecatedServiceAccount
	}
	if out.Spec.ServiceAccountName == "" {
		out.Spec.ServiceAccountName = "default"
	}

	vols := volumes()
	for _, v := range vols {
		status.Volumes = append(status.Volumes, v.Name)
	}
	out.Spec.Volumes = append(out.Spec.Volumes, vols...)

	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	out.Labels[meshv1.MeshLabel] = mesh.Name
	out.Labels[sidecar.LabelProxyVersion] = p.version

	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	statusJSON, err := json.Marshal(status)
	if err != nil {
		return nil, Report{}, fmt.Errorf("pod %s: encoding %s: %w", ref, sidecar.AnnotationStatus, err)
	}
	out.Annotations[sidecar.AnnotationStatus] = string(statusJSON)
	if probes != "" {
		out.Annotations[sidecar.AnnotationAppProbes] = probes
	} else {
		delete(out.Annotations, sidecar.AnnotationAppProbes)
	}
	if _, ok := out.Annotations[sidecar.AnnotationDefaultContainer]; !ok && defaultContainer != "" {
		out.Annotations[sidecar.AnnotationDefaultContainer] = defaultContainer
	}

	report := Report{Injected: true, Warnings: warnings}
	for _, n := range status.InitContainers {
		report.Added = append(report.Added, "initContainer/"+n)
	}
	for _, n := range status.Containers {
		report.Added = append(report.Added, "container/"+n)
	}
	for _, n := range status.Volumes {
		report.Added = append(report.Added, "volume/"+n)
	}
	return out, report, nil
}

// params is everything the added containers depend on, resolved from the
// Mesh (with the CRD's defaults), the Config and the pod's annotations.
type params struct {
	mesh          string
	meshNamespace string
	trustDomain   string
	image         string
	version       string
	native        bool
	// holdApp holds the app until the proxy is ready (ApplicationStart AfterProxyReady).
	holdApp   bool
	mtlsMode  string
	logLevel  string
	accessLog string
	tracing   *meshv1.TracingSpec

	excludeInboundPorts  []int32
	excludeOutboundPorts []int32
	excludeOutboundCIDRs []string
	resources            corev1.ResourceRequirements
}

// resolve reads mesh, cfg and pod's annotations into params, and warns about
// what the pod will not do as the user may expect.
func resolve(ref string, pod *corev1.Pod, namespace *corev1.Namespace, mesh *meshv1.Mesh, cfg Config) (params, []string, error) {
	spec := mesh.Spec
	p := params{
		mesh:          mesh.Name,
		meshNamespace: meshNamespace(mesh),
		trustDomain:   orDefault(spec.TrustDomain, defaultTrustDomain),
		holdApp:       spec.Injection.ApplicationStart != meshv1.ApplicationStartImmediately,
		mtlsMode:      orDefault(string(spec.MTLS.Mode), string(meshv1.MTLSModePermissive)),
		logLevel:      orDefault(string(spec.Proxy.LogLevel), defaultLogLevel),
		accessLog:     orDefault(string(spec.Telemetry.AccessLog), defaultAccessLog),
		tracing:       spec.Telemetry.Tracing,
	}
	var warnings []string
	var err error
	if p.image, p.version, err = ProxyImage(mesh, cfg); err != nil {
		return params{}, nil, err
	}
	if errs := validation.IsValidLabelValue(mesh.Name); len(errs) > 0 {
		return params{}, nil, fmt.Errorf("mesh %s: its name cannot be the value of the pod label %s (%s); use a Mesh with a name of at most 63 characters",
			mesh.Name, meshv1.MeshLabel, strings.Join(errs, "; "))
	}
	if errs := validation.IsValidLabelValue(p.version); len(errs) > 0 {
		return params{}, nil, fmt.Errorf("mesh %s: proxy version %q cannot be the value of the pod label %s (%s); set spec.proxy.version to a tag of at most 63 letters, digits, '-', '_' and '.'",
			mesh.Name, p.version, sidecar.LabelProxyVersion, strings.Join(errs, "; "))
	}

	wantNative := spec.Injection.SidecarMode != meshv1.SidecarModeClassic
	p.native = wantNative && cfg.KubernetesMinor >= nativeSidecarMinor
	switch {
	case wantNative && cfg.KubernetesMinor == 0:
		warnings = append(warnings, fmt.Sprintf("Mesh %s asks for native sidecars, but the cluster's Kubernetes version is not known; %s is added as a regular container", mesh.Name, sidecar.ProxyContainerName))
	case wantNative && !p.native:
		warnings = append(warnings, fmt.Sprintf("Mesh %s asks for native sidecars, which need Kubernetes 1.%d or later; the cluster runs 1.%d, so %s is added as a regular container", mesh.Name, nativeSidecarMinor, cfg.KubernetesMinor, sidecar.ProxyContainerName))
	}
	if !p.native {
		if rp := pod.Spec.RestartPolicy; rp == corev1.RestartPolicyNever || rp == corev1.RestartPolicyOnFailure {
			warnings = append(warnings, fmt.Sprintf("pod restartPolicy is %s but %s is a regular container: it keeps running after the app exits, so a Job's pod does not complete until something calls the proxy's /shutdown on port %d", rp, sidecar.ProxyContainerName, sidecar.AdminPort))
		}
		var early []string
		for _, c := range pod.Spec.InitContainers {
			switch {
			case !isSidecar(c):
				early = append(early, c.Name)
			case c.StartupProbe != nil && c.StartupProbe.Exec == nil:
				warnings = append(warnings, fmt.Sprintf("init container %s is a native sidecar with a startup probe, which %s relays; %s is a regular container that starts after it, so the probe never passes and the pod never starts: use sidecarMode Native",
					c.Name, sidecar.ProxyContainerName, sidecar.ProxyContainerName))
			}
		}
		switch len(early) {
		case 0:
		case 1:
			warnings = append(warnings, fmt.Sprintf("init container %s runs after %s redirects the pod's traffic but before %s starts: its connections fail unless it runs as UID %d or its destinations are in %s or %s",
				early[0], sidecar.InitContainerName, sidecar.ProxyContainerName, sidecar.ProxyUID, sidecar.AnnotationExcludeOutboundPorts, sidecar.AnnotationExcludeOutboundCIDRs))
		default:
			warnings = append(warnings, fmt.Sprintf("init containers %s run after %s redirects the pod's traffic but before %s starts: their connections fail unless they run as UID %d or their destinations are in %s or %s",
				strings.Join(early, ", "), sidecar.InitContainerName, sidecar.ProxyContainerName, sidecar.ProxyUID, sidecar.AnnotationExcludeOutboundPorts, sidecar.AnnotationExcludeOutboundCIDRs))
		}
	}
	if level := namespace.Labels["pod-security.kubernetes.io/enforce"]; level == "baseline" || level == "restricted" {
		warnings = append(warnings, fmt.Sprintf("namespace %s enforces the %s Pod Security Standard, which refuses %s: it runs as root with NET_ADMIN and NET_RAW to redirect the pod's traffic",
			namespace.Name, level, sidecar.InitContainerName))
	}
	if MeshName(&corev1.Pod{}, namespace) == "" {
		warnings = append(warnings, fmt.Sprintf("namespace %s is not labeled for Mesh %s, only the pod is: the pod starts once the operator has put the ConfigMap %s in the namespace, which it does for labeled namespaces",
			namespace.Name, mesh.Name, trustBundleName))
	}
	for _, c := range appContainers(pod) {
		if runsAs(pod, c) == sidecar.ProxyUID {
			warnings = append(warnings, fmt.Sprintf("container %s runs as UID %d, the proxy's: its traffic bypasses the proxy", c.Name, sidecar.ProxyUID))
		}
	}

	if p.excludeInboundPorts, err = ports(ref, pod, mesh, sidecar.AnnotationExcludeInboundPorts, "spec.proxy.excludeInboundPorts", spec.Proxy.ExcludeInboundPorts); err != nil {
		return params{}, nil, err
	}
	if p.excludeOutboundPorts, err = ports(ref, pod, mesh, sidecar.AnnotationExcludeOutboundPorts, "spec.proxy.excludeOutboundPorts", spec.Proxy.ExcludeOutboundPorts); err != nil {
		return params{}, nil, err
	}
	if p.excludeOutboundCIDRs, err = cidrs(ref, pod, mesh); err != nil {
		return params{}, nil, err
	}
	if p.resources, err = proxyResources(ref, pod, mesh); err != nil {
		return params{}, nil, err
	}
	return p, warnings, nil
}

// ProxyImage returns the proxy's image and version. With neither
// spec.proxy.image nor spec.proxy.version set, cfg.ProxyImage is used as it
// is, so an operator that pins its image by digest injects that digest.
func ProxyImage(mesh *meshv1.Mesh, cfg Config) (image, version string, err error) {
	repo, tag := splitImage(cfg.ProxyImage)
	version = mesh.Spec.Proxy.Version
	if version == "" {
		version = orDefault(cfg.Version, tag)
	}
	if version == "" {
		return "", "", fmt.Errorf("mesh %s: no proxy version: spec.proxy.version is empty and the operator has no default (Config.Version and the tag of Config.ProxyImage %q are empty)", mesh.Name, cfg.ProxyImage)
	}
	if mesh.Spec.Proxy.Image == "" && mesh.Spec.Proxy.Version == "" {
		if cfg.ProxyImage == "" {
			return "", "", fmt.Errorf("mesh %s: no proxy image: spec.proxy.image is empty and the operator has no default (Config.ProxyImage)", mesh.Name)
		}
		return cfg.ProxyImage, version, nil
	}
	repo = orDefault(mesh.Spec.Proxy.Image, repo)
	if repo == "" {
		return "", "", fmt.Errorf("mesh %s: no proxy image: spec.proxy.image is empty and the operator has no default (Config.ProxyImage)", mesh.Name)
	}
	return repo + ":" + version, version, nil
}

// splitImage splits an image reference into its repository and tag; a
// digest is dropped from the repository and is not a tag. The colon of a
// registry's port is not a tag separator: it comes before the last slash.
func splitImage(ref string) (repo, tag string) {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		return ref[:i], ref[i+1:]
	}
	return ref, ""
}

// checkNamesAndPorts refuses a pod that already uses a name or port that the
// sidecar needs. Decide has already skipped pods that Trellis injected, so
// any such name is the user's: adding ours would make the pod invalid, or
// mount the user's volume into the proxy.
func checkNamesAndPorts(ref string, pod *corev1.Pod) error {
	ourContainers := []string{sidecar.InitContainerName, sidecar.ProxyContainerName}
	var names []string
	for _, c := range pod.Spec.InitContainers {
		names = append(names, c.Name)
	}
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	for _, c := range pod.Spec.EphemeralContainers {
		names = append(names, c.Name)
	}
	for _, n := range ourContainers {
		if slices.Contains(names, n) {
			return fmt.Errorf("pod %s already has a container named %s and no %s annotation: Trellis adds a container of that name; rename yours", ref, n, sidecar.AnnotationStatus)
		}
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name == sidecar.TokenVolumeName || v.Name == sidecar.TrustBundleVolumeName || v.Name == sidecar.TmpVolumeName {
			return fmt.Errorf("pod %s already has a volume named %s and no %s annotation: Trellis adds a volume of that name; rename yours", ref, v.Name, sidecar.AnnotationStatus)
		}
	}
	// The pod's containers share one network namespace: an app listening on
	// a proxy port makes one of them fail to start.
	for _, c := range appContainers(pod) {
		for _, port := range c.Ports {
			switch port.ContainerPort {
			case sidecar.OutboundPort, sidecar.InboundPort, sidecar.AdminPort:
				return fmt.Errorf("pod %s: container %s declares port %d, which the Trellis proxy listens on (it uses %d, %d and %d); move the app to another port",
					ref, c.Name, port.ContainerPort, sidecar.OutboundPort, sidecar.InboundPort, sidecar.AdminPort)
			}
		}
	}
	return nil
}

// appContainers are the containers that Trellis did not add and that keep
// running: the regular containers and the user's native sidecars.
func appContainers(pod *corev1.Pod) []*corev1.Container {
	var cs []*corev1.Container
	for i := range pod.Spec.InitContainers {
		if isSidecar(pod.Spec.InitContainers[i]) {
			cs = append(cs, &pod.Spec.InitContainers[i])
		}
	}
	for i := range pod.Spec.Containers {
		cs = append(cs, &pod.Spec.Containers[i])
	}
	return cs
}

// isSidecar reports whether an init container is a native sidecar.
func isSidecar(c corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// runsAs is the UID a container runs as when the pod says, else -1 (the
// image's user).
func runsAs(pod *corev1.Pod, c *corev1.Container) int64 {
	if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
		return *c.SecurityContext.RunAsUser
	}
	if pod.Spec.SecurityContext != nil && pod.Spec.SecurityContext.RunAsUser != nil {
		return *pod.Spec.SecurityContext.RunAsUser
	}
	return -1
}

// PodRef names a pod in messages. An admission request for a pod created by
// a controller has a generateName and no name yet, and may have no
// namespace but the request's, which namespace (when not nil) gives.
func PodRef(pod *corev1.Pod, namespace *corev1.Namespace) string {
	name := pod.Name
	switch {
	case name != "":
	case pod.GenerateName != "":
		name = pod.GenerateName + "*"
	default:
		name = "(unnamed)"
	}
	ns := pod.Namespace
	if namespace != nil && namespace.Name != "" {
		ns = namespace.Name
	}
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

func orDefault(v, def string) string {
	if v != "" {
		return v
	}
	return def
}
