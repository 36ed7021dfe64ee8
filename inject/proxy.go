package inject

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/trellis-mesh/trellis/sidecar"
)

// The containers and volumes that Inject adds. Fields that the API server
// would default are set to its defaults, so that an injected pod reads the
// same before and after admission.

// initContainer redirects the pod's traffic to the proxy, then exits.
func initContainer(p params) corev1.Container {
	inbound := append([]int32{sidecar.AdminPort}, p.excludeInboundPorts...)
	slices.Sort(inbound)
	inbound = slices.Compact(inbound)
	args := []string{
		"init",
		fmt.Sprintf("--outbound-port=%d", sidecar.OutboundPort),
		fmt.Sprintf("--inbound-port=%d", sidecar.InboundPort),
		fmt.Sprintf("--proxy-uid=%d", sidecar.ProxyUID),
		// The admin port is never redirected: the kubelet probes the proxy
		// (and, through it, the app) there.
		"--exclude-inbound-ports=" + joinPorts(inbound),
	}
	if len(p.excludeOutboundPorts) > 0 {
		args = append(args, "--exclude-outbound-ports="+joinPorts(p.excludeOutboundPorts))
	}
	if len(p.excludeOutboundCIDRs) > 0 {
		args = append(args, "--exclude-outbound-cidrs="+strings.Join(p.excludeOutboundCIDRs, ","))
	}
	return corev1.Container{
		Name:    sidecar.InitContainerName,
		Image:   p.image,
		Command: []string{sidecar.ProxyBinary},
		Args:    args,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("10Mi"),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceMemory: resource.MustParse("50Mi"),
			},
		},
		// Root with NET_ADMIN and NET_RAW, to write the pod's netfilter
		// rules (nftables, over netlink: no iptables binary, no lock file,
		// so nothing to write on the read-only root); nothing else.
		SecurityContext: &corev1.SecurityContext{
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
			RunAsUser:                ptr.To[int64](0),
			RunAsNonRoot:             ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
		},
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
	}
}

// proxyContainer is the sidecar. appProbes is the JSON of the app's
// original probes, "" when there are none.
func proxyContainer(p params, appProbes string) corev1.Container {
	c := corev1.Container{
		Name:    sidecar.ProxyContainerName,
		Image:   p.image,
		Command: []string{sidecar.ProxyBinary},
		Args:    []string{"run"},
		Ports: []corev1.ContainerPort{
			{ContainerPort: sidecar.OutboundPort, Protocol: corev1.ProtocolTCP},
			{ContainerPort: sidecar.InboundPort, Protocol: corev1.ProtocolTCP},
			{Name: sidecar.AdminPortName, ContainerPort: sidecar.AdminPort, Protocol: corev1.ProtocolTCP},
		},
		Env:       proxyEnv(p, appProbes),
		Resources: p.resources,
		VolumeMounts: []corev1.VolumeMount{
			{Name: sidecar.TokenVolumeName, MountPath: sidecar.TokenDir, ReadOnly: true},
			{Name: sidecar.TrustBundleVolumeName, MountPath: sidecar.TrustBundleDir, ReadOnly: true},
			{Name: sidecar.TmpVolumeName, MountPath: sidecar.TmpDir},
		},
		ReadinessProbe: adminProbe("/ready", 2, 3),
		LivenessProbe:  adminProbe("/live", 10, 3),
		SecurityContext: &corev1.SecurityContext{
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			RunAsUser:                ptr.To[int64](sidecar.ProxyUID),
			RunAsGroup:               ptr.To[int64](sidecar.ProxyUID),
			RunAsNonRoot:             ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
		},
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
	}
	switch {
	case p.native:
		// A native sidecar: it starts before the containers after it and
		// stops after them, and does not keep a Job's pod running.
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
		if p.holdApp {
			// The kubelet starts the next container once this probe
			// passes: 10 minutes for the proxy to get its certificate.
			c.StartupProbe = adminProbe("/ready", 1, 600)
		}
	case p.holdApp:
		// The kubelet starts regular containers in order and waits for
		// each one's postStart hook, so this holds the app.
		c.Lifecycle = &corev1.Lifecycle{
			PostStart: &corev1.LifecycleHandler{
				Exec: &corev1.ExecAction{Command: []string{sidecar.ProxyBinary, "wait-ready"}},
			},
		}
	}
	return c
}

// adminProbe is a probe of the proxy's own admin endpoint at path.
func adminProbe(path string, periodSeconds, failureThreshold int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{
			HTTPGet: &corev1.HTTPGetAction{
				Path:   path,
				Port:   intstr.FromInt32(sidecar.AdminPort),
				Scheme: corev1.URISchemeHTTP,
			},
		},
		TimeoutSeconds:   3,
		PeriodSeconds:    periodSeconds,
		SuccessThreshold: 1,
		FailureThreshold: failureThreshold,
	}
}

func proxyEnv(p params, appProbes string) []corev1.EnvVar {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path},
		}}
	}
	env := []corev1.EnvVar{
		field(sidecar.EnvPodName, "metadata.name"),
		field(sidecar.EnvPodNamespace, "metadata.namespace"),
		field(sidecar.EnvPodIP, "status.podIP"),
		field(sidecar.EnvServiceAccount, "spec.serviceAccountName"),
		field(sidecar.EnvNodeName, "spec.nodeName"),
		{Name: sidecar.EnvControlPlane, Value: fmt.Sprintf("%s.%s.svc:%d", controlPlaneName, p.meshNamespace, controlPlaneGRPCPort)},
		{Name: sidecar.EnvTrustDomain, Value: p.trustDomain},
		{Name: sidecar.EnvMesh, Value: p.mesh},
		{Name: sidecar.EnvMTLSMode, Value: p.mtlsMode},
		{Name: sidecar.EnvLogLevel, Value: p.logLevel},
	}
	if appProbes != "" {
		// The kubelet expands $(VAR) in values and turns $$ into $: escaped,
		// the proxy sees exactly the annotation's JSON.
		env = append(env, corev1.EnvVar{Name: sidecar.EnvAppProbes, Value: strings.ReplaceAll(appProbes, "$", "$$")})
	}
	if t := p.tracing; t != nil {
		sampling := int32(defaultSampling)
		if t.SamplingPercent != nil {
			sampling = *t.SamplingPercent
		}
		env = append(env,
			corev1.EnvVar{Name: sidecar.EnvTracingEndpoint, Value: t.Endpoint},
			corev1.EnvVar{Name: sidecar.EnvTracingSamplingPercent, Value: strconv.Itoa(int(sampling))},
		)
	}
	return append(env, corev1.EnvVar{Name: sidecar.EnvAccessLog, Value: p.accessLog})
}

// volumes are the proxy's volumes, sorted by name.
func volumes() []corev1.Volume {
	return []corev1.Volume{
		{
			Name: sidecar.TrustBundleVolumeName,
			VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: trustBundleName},
				DefaultMode:          ptr.To(corev1.ConfigMapVolumeSourceDefaultMode),
			}},
		},
		{
			Name:         sidecar.TmpVolumeName,
			VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}},
		},
		{
			// Its own token, not the automounted one: audience trellis, so
			// a leaked proxy token is no use against the API server.
			Name: sidecar.TokenVolumeName,
			VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{
					ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
						Audience:          sidecar.TokenAudience,
						ExpirationSeconds: ptr.To[int64](sidecar.TokenExpirationSeconds),
						Path:              sidecar.TokenFile,
					},
				}},
				DefaultMode: ptr.To(corev1.ProjectedVolumeSourceDefaultMode),
			}},
		},
	}
}

func joinPorts(ps []int32) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}
