package inject

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/sidecar"
)

// TestOperatorNames checks the names copied from package controllers,
// which neither inject nor sidecar may import, against the source they were
// copied from.
func TestOperatorNames(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "controllers", "names.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, decl := range []string{
		`TrustBundleName = "` + trustBundleName + `"`,
		`TrustBundleName = "` + sidecar.TrustBundleVolumeName + `"`,
		`TrustBundleKey = "` + sidecar.TrustBundleFile + `"`,
		`ControlPlaneName = "` + controlPlaneName + `"`,
		`ControlPlaneGRPCPort = ` + "15012",
	} {
		if !strings.Contains(strings.Join(strings.Fields(string(src)), " "), decl) {
			t.Errorf("controllers/names.go has no %s: update the copy in inject/names.go or sidecar/names.go", decl)
		}
	}
	if controlPlaneGRPCPort != 15012 {
		t.Errorf("controlPlaneGRPCPort = %d, want 15012 as in controllers/names.go", controlPlaneGRPCPort)
	}
}

// meshedPod is a pod in a namespace labeled for the default Mesh.
func meshedPod() (*corev1.Pod, *corev1.Namespace, *meshv1.Mesh) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "web", Image: "nginx",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{meshv1.InjectionLabel: "enabled"}}}
	mesh := &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	return pod, ns, mesh
}

func TestInjectErrors(t *testing.T) {
	cases := map[string]struct {
		pod  func(*corev1.Pod)
		mesh func(*meshv1.Mesh)
		cfg  func(*Config)
		want []string // substrings of the error
	}{
		"inbound port not a number": {
			pod: func(p *corev1.Pod) {
				p.Annotations = map[string]string{sidecar.AnnotationExcludeInboundPorts: "80,http"}
			},
			want: []string{sidecar.AnnotationExcludeInboundPorts, `"http"`, "shop/web"}},
		"outbound port zero": {
			pod:  func(p *corev1.Pod) { p.Annotations = map[string]string{sidecar.AnnotationExcludeOutboundPorts: "0"} },
			want: []string{sidecar.AnnotationExcludeOutboundPorts, `"0"`}},
		"outbound port too big": {
			pod: func(p *corev1.Pod) {
				p.Annotations = map[string]string{sidecar.AnnotationExcludeOutboundPorts: "65536"}
			},
			want: []string{sidecar.AnnotationExcludeOutboundPorts, `"65536"`}},
		"port range": {
			pod: func(p *corev1.Pod) {
				p.Annotations = map[string]string{sidecar.AnnotationExcludeInboundPorts: "8000-8100"}
			},
			want: []string{sidecar.AnnotationExcludeInboundPorts, `"8000-8100"`}},
		"cidr": {
			pod: func(p *corev1.Pod) {
				p.Annotations = map[string]string{sidecar.AnnotationExcludeOutboundCIDRs: "10.0.0.0/33"}
			},
			want: []string{sidecar.AnnotationExcludeOutboundCIDRs, `"10.0.0.0/33"`}},
		"cpu request": {
			pod:  func(p *corev1.Pod) { p.Annotations = map[string]string{sidecar.AnnotationProxyCPURequest: "lots"} },
			want: []string{sidecar.AnnotationProxyCPURequest, `"lots"`}},
		"memory request negative": {
			pod:  func(p *corev1.Pod) { p.Annotations = map[string]string{sidecar.AnnotationProxyMemoryRequest: "-1Mi"} },
			want: []string{sidecar.AnnotationProxyMemoryRequest, `"-1Mi"`}},
		"cpu limit": {
			pod:  func(p *corev1.Pod) { p.Annotations = map[string]string{sidecar.AnnotationProxyCPULimit: "1 core"} },
			want: []string{sidecar.AnnotationProxyCPULimit, `"1 core"`}},
		"memory limit": {
			pod:  func(p *corev1.Pod) { p.Annotations = map[string]string{sidecar.AnnotationProxyMemoryLimit: "64MB!"} },
			want: []string{sidecar.AnnotationProxyMemoryLimit, `"64MB!"`}},
		"cpu request over the annotated limit": {
			pod: func(p *corev1.Pod) {
				p.Annotations = map[string]string{sidecar.AnnotationProxyCPURequest: "2", sidecar.AnnotationProxyCPULimit: "1"}
			},
			want: []string{"cpu request 2", sidecar.AnnotationProxyCPURequest, "limit 1", sidecar.AnnotationProxyCPULimit}},
		"memory limit under the Mesh's request": {
			pod:  func(p *corev1.Pod) { p.Annotations = map[string]string{sidecar.AnnotationProxyMemoryLimit: "10Mi"} },
			want: []string{"memory request 20Mi (from the default)", "limit 10Mi (from annotation " + sidecar.AnnotationProxyMemoryLimit}},
		"Mesh's own resources named": {
			pod: func(p *corev1.Pod) { p.Annotations = map[string]string{sidecar.AnnotationProxyCPULimit: "10m"} },
			mesh: func(m *meshv1.Mesh) {
				m.Spec.Proxy.Resources = &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}}
			},
			want: []string{"(from Mesh default spec.proxy.resources)"}},
		"init container named trellis-init": {
			pod: func(p *corev1.Pod) {
				p.Spec.InitContainers = []corev1.Container{{Name: sidecar.InitContainerName, Image: "x"}}
			},
			want: []string{"container named trellis-init"}},
		"container named trellis-proxy": {
			pod: func(p *corev1.Pod) {
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: sidecar.ProxyContainerName, Image: "x"})
			},
			want: []string{"container named trellis-proxy"}},
		"ephemeral container named trellis-proxy": {
			pod: func(p *corev1.Pod) {
				p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: sidecar.ProxyContainerName}}}
			},
			want: []string{"container named trellis-proxy"}},
		"volume trellis-token": {
			pod:  func(p *corev1.Pod) { p.Spec.Volumes = []corev1.Volume{{Name: sidecar.TokenVolumeName}} },
			want: []string{"volume named trellis-token"}},
		"volume trellis-ca-bundle": {
			pod:  func(p *corev1.Pod) { p.Spec.Volumes = []corev1.Volume{{Name: sidecar.TrustBundleVolumeName}} },
			want: []string{"volume named trellis-ca-bundle"}},
		"app on the outbound port": {
			pod:  func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].ContainerPort = sidecar.OutboundPort },
			want: []string{"container web declares port 15001"}},
		"user sidecar on the inbound port": {
			pod: func(p *corev1.Pod) {
				p.Spec.InitContainers = []corev1.Container{{Name: "side", Image: "x", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
					Ports: []corev1.ContainerPort{{ContainerPort: sidecar.InboundPort}}}}
			},
			want: []string{"container side declares port 15006"}},
		"Mesh port out of range": {
			mesh: func(m *meshv1.Mesh) { m.Spec.Proxy.ExcludeOutboundPorts = []meshv1.Port{0} },
			want: []string{"mesh default", "spec.proxy.excludeOutboundPorts", "0"}},
		"Mesh CIDR": {
			mesh: func(m *meshv1.Mesh) { m.Spec.Proxy.ExcludeOutboundCIDRs = []meshv1.CIDR{"metadata"} },
			want: []string{"mesh default", "spec.proxy.excludeOutboundCIDRs", `"metadata"`}},
		"version not a label value": {
			mesh: func(m *meshv1.Mesh) { m.Spec.Proxy.Version = strings.Repeat("v", 64) },
			want: []string{"spec.proxy.version", sidecar.LabelProxyVersion}},
		"operator version with build metadata": {
			cfg:  func(c *Config) { c.Version = "v0.1.0+dirty" },
			want: []string{`"v0.1.0+dirty"`, sidecar.LabelProxyVersion}},
		"no image": {
			cfg:  func(c *Config) { *c = Config{Version: "v1", KubernetesMinor: 33} },
			want: []string{"no proxy image"}},
		"no version": {
			cfg:  func(c *Config) { *c = Config{ProxyImage: "ghcr.io/trellis-mesh/trellis", KubernetesMinor: 33} },
			want: []string{"no proxy version"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			pod, ns, mesh := meshedPod()
			cfg := defaultConfig
			if tc.pod != nil {
				tc.pod(pod)
			}
			if tc.mesh != nil {
				tc.mesh(mesh)
			}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			out, _, err := Inject(pod, ns, mesh, cfg)
			if err == nil {
				t.Fatalf("Inject succeeded; want an error with %q", tc.want)
			}
			if out != nil {
				t.Errorf("Inject returned a pod with its error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestInjectNil(t *testing.T) {
	pod, ns, mesh := meshedPod()
	for name, args := range map[string]struct {
		pod  *corev1.Pod
		ns   *corev1.Namespace
		mesh *meshv1.Mesh
	}{"pod": {nil, ns, mesh}, "namespace": {pod, nil, mesh}, "mesh": {pod, ns, nil}} {
		if _, _, err := Inject(args.pod, args.ns, args.mesh, defaultConfig); err == nil {
			t.Errorf("nil %s: no error", name)
		}
	}
}

func TestProxyImage(t *testing.T) {
	cases := map[string]struct {
		specImage, specVersion string
		cfg                    Config
		wantImage, wantVersion string
	}{
		"operator default": {cfg: Config{ProxyImage: "ghcr.io/trellis-mesh/trellis:v0.1.0", Version: "v0.1.0"},
			wantImage: "ghcr.io/trellis-mesh/trellis:v0.1.0", wantVersion: "v0.1.0"},
		"version from the image's tag": {cfg: Config{ProxyImage: "ghcr.io/trellis-mesh/trellis:v0.1.0"},
			wantImage: "ghcr.io/trellis-mesh/trellis:v0.1.0", wantVersion: "v0.1.0"},
		"operator pinned by digest": {cfg: Config{ProxyImage: "ghcr.io/trellis-mesh/trellis:v0.1.0@sha256:0123", Version: "v0.1.0"},
			wantImage: "ghcr.io/trellis-mesh/trellis:v0.1.0@sha256:0123", wantVersion: "v0.1.0"},
		"Mesh version, operator repository": {specVersion: "v0.2.0", cfg: Config{ProxyImage: "ghcr.io/trellis-mesh/trellis:v0.1.0@sha256:0123", Version: "v0.1.0"},
			wantImage: "ghcr.io/trellis-mesh/trellis:v0.2.0", wantVersion: "v0.2.0"},
		"Mesh repository, operator version": {specImage: "mirror.example.com:5000/trellis", cfg: Config{ProxyImage: "ghcr.io/trellis-mesh/trellis:v0.1.0", Version: "v0.1.0"},
			wantImage: "mirror.example.com:5000/trellis:v0.1.0", wantVersion: "v0.1.0"},
		"registry port, no tag": {specVersion: "v3", cfg: Config{ProxyImage: "localhost:5000/trellis", Version: "v0.1.0"},
			wantImage: "localhost:5000/trellis:v3", wantVersion: "v3"},
		"both from the Mesh": {specImage: "example.com/t", specVersion: "v9",
			wantImage: "example.com/t:v9", wantVersion: "v9"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			mesh := &meshv1.Mesh{Spec: meshv1.MeshSpec{Proxy: meshv1.ProxySpec{Image: tc.specImage, Version: tc.specVersion}}}
			image, version, err := ProxyImage(mesh, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if image != tc.wantImage || version != tc.wantVersion {
				t.Errorf("proxyImage = %q, %q; want %q, %q", image, version, tc.wantImage, tc.wantVersion)
			}
		})
	}
}

func TestKubernetesVersionUnknown(t *testing.T) {
	pod, ns, mesh := meshedPod()
	cfg := defaultConfig
	cfg.KubernetesMinor = 0
	out, report, err := Inject(pod, ns, mesh, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Spec.Containers) == 0 || out.Spec.Containers[0].Name != sidecar.ProxyContainerName {
		t.Errorf("with the cluster's version unknown, want %s as the first regular container", sidecar.ProxyContainerName)
	}
	if !containsSubstring(report.Warnings, "not known") {
		t.Errorf("no warning that the cluster's version is not known: %q", report.Warnings)
	}
}

func TestWarnsOfSidecarStartupProbeInClassicMode(t *testing.T) {
	pod, ns, mesh := meshedPod()
	mesh.Spec.Injection.SidecarMode = meshv1.SidecarModeClassic
	pod.Spec.InitContainers = []corev1.Container{{
		Name: "side", Image: "x", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(9)}}},
	}}
	_, report, err := Inject(pod, ns, mesh, defaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	if !containsSubstring(report.Warnings, "init container side is a native sidecar with a startup probe") {
		t.Errorf("no warning that the sidecar's startup probe cannot pass: %q", report.Warnings)
	}
	mesh.Spec.Injection.SidecarMode = meshv1.SidecarModeNative
	if _, report, _ = Inject(pod, ns, mesh, defaultConfig); len(report.Warnings) > 0 {
		t.Errorf("native mode: warnings %q, want none", report.Warnings)
	}
}

func TestWarnsOfTheProxyUID(t *testing.T) {
	pod, ns, mesh := meshedPod()
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](sidecar.ProxyUID)}
	_, report, err := Inject(pod, ns, mesh, defaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	if !containsSubstring(report.Warnings, "container web runs as UID 2102") {
		t.Errorf("no warning that the app runs as the proxy's UID: %q", report.Warnings)
	}
	// The container's own user wins over the pod's.
	pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr.To[int64](1000)}
	_, report, _ = Inject(pod, ns, mesh, defaultConfig)
	if containsSubstring(report.Warnings, "UID 2102") {
		t.Errorf("warned of UID 2102 for a container that runs as 1000: %q", report.Warnings)
	}
}

// TestAppProbesEnv checks that the proxy's variable holds, after the
// kubelet's $(VAR) expansion, exactly the annotation's JSON.
func TestAppProbesEnv(t *testing.T) {
	pod, ns, mesh := meshedPod()
	pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
		HTTPGet: &corev1.HTTPGetAction{Path: "/ready?x=$(TRELLIS_MESH)&y=$$", Port: intstr.FromString("http")},
	}}
	out, _, err := Inject(pod, ns, mesh, defaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	annotation := out.Annotations[sidecar.AnnotationAppProbes]
	var probes AppProbes
	if err := json.Unmarshal([]byte(annotation), &probes); err != nil {
		t.Fatalf("annotation %s: %v", sidecar.AnnotationAppProbes, err)
	}
	h := probes["web/readyz"].HTTPGet
	if h == nil || h.Path != "/ready?x=$(TRELLIS_MESH)&y=$$" || h.Port != intstr.FromInt32(8080) {
		t.Errorf("recorded readiness probe = %+v; want the original path with port http resolved to 8080", h)
	}
	env := proxyOf(t, out).Env
	if got := expand(envValue(env, sidecar.EnvAppProbes), env); got != annotation {
		t.Errorf("%s after the kubelet's expansion = %s; want the annotation %s", sidecar.EnvAppProbes, got, annotation)
	}
}

// TestRelayedProbeKept: a pod whose probes are already relayed, without the
// status annotation (a copy of an injected pod's spec with the sidecar
// removed, say), keeps them, and the originals the pod recorded.
func TestRelayedProbeKept(t *testing.T) {
	pod, ns, mesh := meshedPod()
	relay := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Path: "/app-health/web/livez", Port: intstr.FromInt32(sidecar.AdminPort), Scheme: corev1.URISchemeHTTP,
	}}, PeriodSeconds: 7}
	pod.Spec.Containers[0].LivenessProbe = relay.DeepCopy()
	pod.Annotations = map[string]string{sidecar.AnnotationAppProbes: `{"web/livez":{"tcpSocket":{"port":8080}},"gone/readyz":{"tcpSocket":{"port":1}}}`}
	out, _, err := Inject(pod, ns, mesh, defaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.Spec.Containers[0].LivenessProbe; !reflect.DeepEqual(got, relay) {
		t.Errorf("relayed probe changed to %+v", got)
	}
	if got, want := out.Annotations[sidecar.AnnotationAppProbes], `{"web/livez":{"tcpSocket":{"port":8080}}}`; got != want {
		t.Errorf("%s = %s, want %s (the relayed probe's original, and nothing for probes that are gone)", sidecar.AnnotationAppProbes, got, want)
	}
}

func TestReadStatus(t *testing.T) {
	pod, ns, mesh := meshedPod()
	if s, err := ReadStatus(pod); s != nil || err != nil {
		t.Errorf("ReadStatus of a pod that is not injected = %v, %v; want nil, nil", s, err)
	}
	out, _, err := Inject(pod, ns, mesh, defaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ReadStatus(out)
	if err != nil {
		t.Fatal(err)
	}
	want := &Status{Version: "v0.1.0", Mesh: "default", InitContainers: []string{sidecar.InitContainerName, sidecar.ProxyContainerName},
		Containers: []string{}, Volumes: []string{sidecar.TrustBundleVolumeName, sidecar.TmpVolumeName, sidecar.TokenVolumeName}}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("ReadStatus = %+v, want %+v", s, want)
	}
	out.Annotations[sidecar.AnnotationStatus] = "{"
	if _, err := ReadStatus(out); err == nil || !strings.Contains(err.Error(), sidecar.AnnotationStatus) {
		t.Errorf("ReadStatus of a bad annotation: %v; want an error naming %s", err, sidecar.AnnotationStatus)
	}
}

func proxyOf(t *testing.T, pod *corev1.Pod) corev1.Container {
	t.Helper()
	for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		if c.Name == sidecar.ProxyContainerName {
			return c
		}
	}
	t.Fatalf("no %s container", sidecar.ProxyContainerName)
	return corev1.Container{}
}

func envValue(env []corev1.EnvVar, name string) string {
	for _, e := range env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// expand is the kubelet's expansion of $(VAR) in an environment value
// (k8s.io/kubernetes/third_party/forked/golang/expansion), reduced to what
// the test needs: $$ is $, $(NAME) of a variable defined before is its value.
func expand(s string, env []corev1.EnvVar) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			if end := strings.IndexByte(s[i:], ')'); end > 0 {
				if v := envValue(env, s[i+2:i+end]); v != "" {
					b.WriteString(v)
					i += end
					continue
				}
			}
			b.WriteByte('$')
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func containsSubstring(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
