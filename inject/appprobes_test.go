package inject

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/trellis-mesh/trellis/proxy/appprobe"
	"github.com/trellis-mesh/trellis/sidecar"
)

// unrelayed are the fields of a ProbeHandler that the injector may write
// and the proxy does not read, as paths in its JSON: exec probes are never
// relayed, and the relay runs HTTP probes over HTTP/1.1 and gRPC ones in
// plaintext whatever Kubernetes' newer protocol and mode fields say. A field
// that Kubernetes adds, and the injector therefore copies, fails
// TestAppProbesDecodeInTheProxy until the proxy reads it or it is listed
// here.
var unrelayed = []string{"exec", "httpGet.protocol", "grpc.mode"}

// TestAppProbesDecodeInTheProxy injects a pod with every kind of probe the
// proxy relays and checks that the proxy's own types (package appprobe,
// which must not import Kubernetes) decode, from the proxy's variable after
// the kubelet's expansion, what the injector recorded in Kubernetes' types,
// and lose nothing but the fields in unrelayed.
func TestAppProbesDecodeInTheProxy(t *testing.T) {
	pod, ns, mesh := meshedPod()
	web := &pod.Spec.Containers[0]
	web.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Path: "/healthz?deep=1&cost=$$5", Port: intstr.FromString("http"), Host: "web.local", Scheme: corev1.URISchemeHTTPS,
		HTTPHeaders: []corev1.HTTPHeader{{Name: "Host", Value: "web.example"}, {Name: "Accept", Value: ""}, {Name: "X-Probe", Value: "1"}, {Name: "X-Probe", Value: "2"}},
	}}, PeriodSeconds: 3}
	web.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{
		Port: intstr.FromInt32(9090), Host: "127.0.0.1",
	}}}
	web.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9000}}} // the injector fills in the service
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{
		Name: "converter", Image: "converter",
		LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{
			Port: 9001, Service: ptr.To("converter"), Mode: ptr.To(corev1.GRPCProbeModeTLS),
		}}},
		StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Port: intstr.FromInt32(8081), Protocol: ptr.To(corev1.HTTPProtocolHTTP2),
		}}},
	})
	pod.Spec.InitContainers = []corev1.Container{{
		Name: "log-shipper", Image: "shipper", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		// A port name the container does not declare stays a name.
		LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("metrics")}}},
	}}

	out, _, err := Inject(pod, ns, mesh, defaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	recorded := out.Annotations[sidecar.AnnotationAppProbes]
	var injected AppProbes
	if err := json.Unmarshal([]byte(recorded), &injected); err != nil {
		t.Fatalf("annotation %s: %v", sidecar.AnnotationAppProbes, err)
	}
	wantKeys := []string{"converter/readyz", "converter/startupz", "log-shipper/livez", "web/livez", "web/readyz", "web/startupz"}
	if got := sortedKeys(injected); !cmp.Equal(got, wantKeys) {
		t.Fatalf("the injector recorded probes %v, want %v", got, wantKeys)
	}

	env := proxyOf(t, out).Env
	proxy, err := appprobe.ParseProbes(expand(envValue(env, sidecar.EnvAppProbes), env))
	if err != nil {
		t.Fatalf("the proxy cannot decode %s: %v", sidecar.EnvAppProbes, err)
	}
	if got := sortedKeys(proxy); !cmp.Equal(got, wantKeys) {
		t.Errorf("the proxy decoded probes %v, want %v", got, wantKeys)
	}
	for key, h := range injected {
		if diff := cmp.Diff(inProxy(h), proxy[key]); diff != "" {
			t.Errorf("%s: the proxy's probe differs from the injector's (-want +got):\n%s", key, diff)
		}
		// Nothing the injector wrote is lost but what the proxy does not
		// relay: the proxy's probe encodes back to the injector's JSON.
		want, got := jsonObject(t, h), jsonObject(t, proxy[key])
		for _, path := range unrelayed {
			deletePath(want, path)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: the proxy drops fields of the injector's JSON (-injector +proxy):\n%s", key, diff)
		}
	}
	// The fields listed as unrelayed are really written, so the list is
	// not stale.
	if injected["converter/readyz"].GRPC.Mode == nil || injected["converter/startupz"].HTTPGet.Protocol == nil {
		t.Error("the injector no longer records grpc.mode or httpGet.protocol: update unrelayed")
	}
}

// FuzzAppProbesDecode checks that whatever JSON Kubernetes' types accept
// as AppProbes, the proxy's types accept and read the same.
func FuzzAppProbesDecode(f *testing.F) {
	for _, seed := range []string{
		`{"web/livez":{"httpGet":{"path":"/healthz?x=1","port":8080,"host":"h","scheme":"HTTPS","httpHeaders":[{"name":"Accept","value":""}],"protocol":"HTTP2"}}}`,
		`{"web/readyz":{"tcpSocket":{"port":"http","host":"127.0.0.1"}},"db/startupz":{"grpc":{"port":9000,"service":"","mode":"TLS"}}}`,
		`{"a/livez":{"exec":{"command":["true"]}},"b/livez":null,"c/livez":{"grpc":{"port":1,"service":null}}}`,
		`{"a/livez":{"httpGet":{"port":1,"port":"x"}},"b/livez":{"tcpSocket":{"port":"x","port":2}}}`,
		`{"a/livez":{"HTTPGET":{"PORT":null}}}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		var injected AppProbes
		if json.Unmarshal([]byte(v), &injected) != nil {
			return
		}
		proxy, err := appprobe.ParseProbes(v)
		if err != nil {
			t.Fatalf("Kubernetes' types decode %s, the proxy's do not: %v", v, err)
		}
		if len(proxy) != len(injected) {
			t.Fatalf("%s: the proxy decoded %d probes, Kubernetes' types %d", v, len(proxy), len(injected))
		}
		for key, h := range injected {
			if diff := cmp.Diff(inProxy(h), proxy[key]); diff != "" {
				t.Errorf("%s: %s differs (-kubernetes +proxy):\n%s", v, key, diff)
			}
		}
	})
}

// inProxy is what the proxy should read of h, field by field.
func inProxy(h corev1.ProbeHandler) appprobe.Handler {
	var out appprobe.Handler
	port := func(p intstr.IntOrString) appprobe.Port {
		if p.Type == intstr.String {
			return appprobe.Port{Named: true, Name: p.StrVal}
		}
		return appprobe.Port{Number: p.IntVal}
	}
	if a := h.HTTPGet; a != nil {
		out.HTTPGet = &appprobe.HTTPGetAction{Path: a.Path, Port: port(a.Port), Host: a.Host, Scheme: string(a.Scheme)}
		for _, hd := range a.HTTPHeaders {
			out.HTTPGet.HTTPHeaders = append(out.HTTPGet.HTTPHeaders, appprobe.HTTPHeader{Name: hd.Name, Value: hd.Value})
		}
	}
	if a := h.TCPSocket; a != nil {
		out.TCPSocket = &appprobe.TCPSocketAction{Port: port(a.Port), Host: a.Host}
	}
	if a := h.GRPC; a != nil {
		out.GRPC = &appprobe.GRPCAction{Port: a.Port, Service: a.Service}
	}
	return out
}

// jsonObject is v's JSON as a generic object.
func jsonObject(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// deletePath deletes the field at a dotted path, "grpc.mode", from m.
func deletePath(m map[string]any, path string) {
	for {
		first, rest, nested := strings.Cut(path, ".")
		if !nested {
			delete(m, first)
			return
		}
		next, ok := m[first].(map[string]any)
		if !ok {
			return
		}
		m, path = next, rest
	}
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
