package inject

import (
	"encoding/json"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/sidecar"
)

// fuzzAnnotations are the pod metadata that the fuzzer sets: every
// annotation Inject reads, and the opt-in label.
var fuzzAnnotations = []struct {
	label bool
	key   string
}{
	{false, sidecar.AnnotationExcludeInboundPorts},
	{false, sidecar.AnnotationExcludeOutboundPorts},
	{false, sidecar.AnnotationExcludeOutboundCIDRs},
	{false, sidecar.AnnotationProxyCPURequest},
	{false, sidecar.AnnotationProxyMemoryRequest},
	{false, sidecar.AnnotationProxyCPULimit},
	{false, sidecar.AnnotationProxyMemoryLimit},
	{false, sidecar.AnnotationDefaultContainer},
	{false, sidecar.AnnotationAppProbes},
	{false, sidecar.AnnotationStatus},
	{true, meshv1.InjectPodLabel},
}

// FuzzInject injects the golden inputs, mutated: a container or volume
// renamed, a port changed, a probe of any kind put on any container, an
// annotation or the opt-in label set, the cluster's version and the sidecar
// mode changed, and any JSON decoded over the pod. It checks that Inject
// does not panic or modify its input; that what it returns is as valid as
// what it was given, by the rules of structuralProblems (a stand-in for the
// API server's validation, which cannot be imported; the integration tier
// admits injected pods into a real kube-apiserver); and that injecting
// again changes nothing.
//
// The golden inputs are the seed corpus; a seed picks one by index rather
// than holding its YAML, so that the fuzzer does not spend its time
// minimising kilobytes of YAML whenever it finds a new path.
func FuzzInject(f *testing.F) {
	cases := goldenCases(f)
	for i := range cases {
		n := uint8(i)
		f.Add(n, "", int32(0), uint8(0), uint8(0), uint8(0), "", uint8(33), false, []byte(nil))
		f.Add(n, "app", int32(8080), uint8(1), uint8(1), uint8(0), "8081", uint8(29), false, []byte(nil))
		f.Add(n, "grpc", int32(9090), uint8(3+5), uint8(2), uint8(2), "10.0.0.0/8", uint8(28), true, []byte(nil))
		f.Add(n, "http", int32(80), uint8(1+15), uint8(0), uint8(3), "100m", uint8(0), false, []byte(nil))
		f.Add(n, sidecar.ProxyContainerName, int32(65536), uint8(2+10), uint8(5), uint8(6), "1Gi", uint8(33), true, []byte(nil))
		f.Add(n, sidecar.TokenVolumeName, int32(-1), uint8(4), uint8(200), uint8(10), "true", uint8(30), false, []byte(nil))
		f.Add(n, "", int32(0), uint8(0), uint8(0), uint8(200), "", uint8(33), false,
			[]byte(`{"spec":{"initContainers":[{"name":"side","restartPolicy":"Always","readinessProbe":{"tcpSocket":{"port":9}}}]}}`))
		f.Add(n, "", int32(0), uint8(0), uint8(0), uint8(200), "", uint8(33), false,
			[]byte(`{"metadata":{"annotations":{"trellis.dev/app-probes":"{}"}},"spec":{"volumes":[{"name":"x"}]}}`))
	}
	f.Fuzz(func(t *testing.T, which uint8, name string, port int32, probe, target, annotation uint8, value string, minor uint8, classic bool, overlay []byte) {
		c := cases[int(which)%len(cases)]
		pod, namespace, mesh := c.pod.DeepCopy(), c.namespace.DeepCopy(), c.mesh.DeepCopy()
		if len(overlay) > 0 {
			// Fields in overlay replace the pod's; a bad overlay leaves a
			// partly decoded pod, which is as good a pod to inject.
			_ = json.Unmarshal(overlay, pod)
		}
		mutate(pod, name, port, probe, target)
		if a := fuzzAnnotations[int(annotation)%len(fuzzAnnotations)]; annotation < 128 {
			if a.label {
				pod.Labels = setKey(pod.Labels, a.key, value)
			} else {
				pod.Annotations = setKey(pod.Annotations, a.key, value)
			}
		}
		cfg := c.cfg
		cfg.KubernetesMinor = int(minor)
		if classic {
			mesh.Spec.Injection.SidecarMode = meshv1.SidecarModeClassic
		}

		before := pod.DeepCopy()
		out, report, err := Inject(pod, namespace, mesh, cfg)
		if !equality.Semantic.DeepEqual(before, pod) {
			t.Fatalf("Inject modified its input pod")
		}
		if err != nil {
			if out != nil || err.Error() == "" {
				t.Fatalf("Inject failed (%v) and returned a pod, or no message", err)
			}
			return
		}
		if !report.Injected {
			if report.Skipped == "" || !equality.Semantic.DeepEqual(out, pod) {
				t.Fatalf("not injected, but skipped %q with the pod changed", report.Skipped)
			}
			return
		}

		had := structuralProblems(pod)
		for _, p := range structuralProblems(out) {
			if !slices.Contains(had, p) {
				t.Errorf("injection made the pod invalid: %s", p)
			}
		}
		if ok, reason := Decide(out, namespace, mesh); ok || reason != AlreadyInjected {
			t.Errorf("Decide on the injected pod = %v, %q; want false, %q", ok, reason, AlreadyInjected)
		}
		status, err := ReadStatus(out)
		if err != nil || status == nil {
			t.Fatalf("ReadStatus of the injected pod: %v, %v", status, err)
		}
		for _, n := range status.InitContainers {
			if !slices.ContainsFunc(out.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == n }) {
				t.Errorf("status lists init container %s, which the pod does not have", n)
			}
		}

		again, report2, err := Inject(out, namespace, mesh, cfg)
		if err != nil || report2.Injected || !equality.Semantic.DeepEqual(again, out) {
			t.Fatalf("injecting twice differs from injecting once: %v, %+v", err, report2)
		}
	})
}

// mutate changes one container of pod: its name (or, with the high bit of
// target, the first volume's), its first port, and one of its probes.
func mutate(pod *corev1.Pod, name string, port int32, probe, target uint8) {
	var cs []*corev1.Container
	for i := range pod.Spec.InitContainers {
		cs = append(cs, &pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		cs = append(cs, &pod.Spec.Containers[i])
	}
	if len(cs) == 0 {
		return
	}
	c := cs[int(target&0x7f)%len(cs)]
	if name != "" {
		if target&0x80 != 0 && len(pod.Spec.Volumes) > 0 {
			pod.Spec.Volumes[0].Name = name
		} else {
			c.Name = name
		}
	}
	if port != 0 {
		if len(c.Ports) == 0 {
			c.Ports = []corev1.ContainerPort{{}}
		}
		c.Ports[0].ContainerPort = port
		if name != "" {
			c.Ports[0].Name = name
		}
	}
	// probe: kind (none, http, tcp, grpc, exec), which probe, named port.
	kind, which, named := probe%5, (probe/5)%3, (probe/15)%2 == 1
	if kind == 0 {
		return
	}
	p := &corev1.Probe{PeriodSeconds: int32(probe)}
	ps := intstr.FromInt32(port)
	if named {
		ps = intstr.FromString(name)
	}
	switch kind {
	case 1:
		p.HTTPGet = &corev1.HTTPGetAction{Path: "/" + name, Port: ps}
	case 2:
		p.TCPSocket = &corev1.TCPSocketAction{Port: ps}
	case 3:
		p.GRPC = &corev1.GRPCAction{Port: port, Service: ptr.To(name)}
	case 4:
		p.Exec = &corev1.ExecAction{Command: []string{"true"}}
	}
	*probeKinds[which].probe(c) = p
}

func setKey(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}
