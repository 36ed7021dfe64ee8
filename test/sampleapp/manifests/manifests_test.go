package manifests

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// objects decodes every manifest strictly, so a misspelt field fails.
type objects struct {
	namespaces      []corev1.Namespace
	deployments     map[string]appsv1.Deployment
	services        map[string]corev1.Service
	serviceAccounts map[string]corev1.ServiceAccount
}

func load(t *testing.T) objects {
	t.Helper()
	objs := objects{deployments: map[string]appsv1.Deployment{}, services: map[string]corev1.Service{}, serviceAccounts: map[string]corev1.ServiceAccount{}}
	for _, name := range Files {
		data, err := FS.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var meta struct{ Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			switch meta.Kind {
			case "Namespace":
				var o corev1.Namespace
				strict(t, name, doc, &o)
				objs.namespaces = append(objs.namespaces, o)
			case "Deployment":
				var o appsv1.Deployment
				strict(t, name, doc, &o)
				objs.deployments[o.Name] = o
			case "Service":
				var o corev1.Service
				strict(t, name, doc, &o)
				objs.services[o.Name] = o
			case "ServiceAccount":
				var o corev1.ServiceAccount
				strict(t, name, doc, &o)
				objs.serviceAccounts[o.Name] = o
			default:
				t.Fatalf("%s: unexpected kind %q", name, meta.Kind)
			}
		}
	}
	return objs
}

func strict(t *testing.T, file string, doc []byte, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, into); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func TestKustomizationListsEveryFile(t *testing.T) {
	data, err := FS.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct{ Resources []string }
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(k.Resources, Files) {
		t.Errorf("kustomization.yaml resources %q; want %q", k.Resources, Files)
	}
}

func TestNamespaceIsNotMeshed(t *testing.T) {
	objs := load(t)
	if len(objs.namespaces) != 1 || objs.namespaces[0].Name != Namespace {
		t.Fatalf("namespaces %v; want one named %s", objs.namespaces, Namespace)
	}
	for k := range objs.namespaces[0].Labels {
		if strings.Contains(k, "trellis") {
			t.Errorf("namespace label %s: the tests decide whether it is meshed", k)
		}
	}
}

func TestDeployments(t *testing.T) {
	cases := map[string]struct {
		image  string
		labels map[string]string
		port   corev1.ContainerPort
		// grpcProbe: the readiness probe is gRPC, else HTTP GET.
		grpcProbe bool
		// env that must be set to these values.
		env map[string]string
	}{
		TemperatureAPI: {
			image:  "ghcr.io/trellis-mesh/sample-temperature-api:v0.1.0",
			labels: map[string]string{"app": "temperature-api"},
			port:   corev1.ContainerPort{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
			env:    map[string]string{"CONVERTER_ADDR": "converter:9090", "CONVERTER_TIMEOUT": "2s"},
		},
		"converter-v1": {
			image:     "ghcr.io/trellis-mesh/sample-converter:v0.1.0",
			labels:    map[string]string{"app": "converter", "version": "v1"},
			port:      corev1.ContainerPort{Name: "grpc", ContainerPort: 9090, Protocol: corev1.ProtocolTCP},
			grpcProbe: true,
			env:       map[string]string{"VERSION": "v1", "FAIL_PERCENT": "0", "DELAY": "0s"},
		},
		"converter-v2": {
			image:     "ghcr.io/trellis-mesh/sample-converter:v0.1.0",
			labels:    map[string]string{"app": "converter", "version": "v2"},
			port:      corev1.ContainerPort{Name: "grpc", ContainerPort: 9090, Protocol: corev1.ProtocolTCP},
			grpcProbe: true,
			env:       map[string]string{"VERSION": "v2", "FAIL_PERCENT": "0", "DELAY": "0s"},
		},
	}
	objs := load(t)
	if len(objs.deployments) != len(cases) {
		t.Errorf("%d Deployments; want %d", len(objs.deployments), len(cases))
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d, ok := objs.deployments[name]
			if !ok {
				t.Fatal("missing")
			}
			if d.Namespace != Namespace {
				t.Errorf("namespace %q", d.Namespace)
			}
			sel, err := deploymentSelector(d)
			if err != nil {
				t.Fatal(err)
			}
			if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				t.Errorf("selector %v does not match the pod labels %v", sel, d.Spec.Template.Labels)
			}
			for k, v := range tc.labels {
				if d.Spec.Template.Labels[k] != v {
					t.Errorf("pod label %s=%q; want %q", k, d.Spec.Template.Labels[k], v)
				}
			}
			pod := d.Spec.Template.Spec
			if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
				t.Error("pod securityContext.runAsNonRoot is not true")
			} else if psc.RunAsUser == nil || *psc.RunAsUser == 0 || *psc.RunAsUser == 2102 {
				t.Errorf("pod runAsUser %v; want a non-root UID other than the proxy's 2102", psc.RunAsUser)
			}
			if len(pod.Containers) != 1 {
				t.Fatalf("%d containers; want 1", len(pod.Containers))
			}
			c := pod.Containers[0]
			if c.Image != tc.image || c.ImagePullPolicy != corev1.PullIfNotPresent {
				t.Errorf("image %s pull %s; want %s IfNotPresent", c.Image, c.ImagePullPolicy, tc.image)
			}
			if len(c.Command) != 1 || c.Command[0] != "/usr/local/bin/"+containerBinary(tc.image) {
				t.Errorf("command %q", c.Command)
			}
			if !slices.Contains(c.Ports, tc.port) {
				t.Errorf("ports %v; want %v", c.Ports, tc.port)
			}
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				t.Errorf("container securityContext %+v; want read-only root, no privilege escalation, all capabilities dropped", sc)
			}
			req := c.Resources.Requests
			if req.Cpu().String() != "10m" || req.Memory().String() != "16Mi" {
				t.Errorf("requests cpu %s memory %s; want 10m 16Mi", req.Cpu(), req.Memory())
			}
			p := c.ReadinessProbe
			switch {
			case p == nil:
				t.Error("no readiness probe")
			case tc.grpcProbe && (p.GRPC == nil || p.GRPC.Port != tc.port.ContainerPort):
				t.Errorf("readiness probe %+v; want gRPC on %d", p.ProbeHandler, tc.port.ContainerPort)
			case !tc.grpcProbe && (p.HTTPGet == nil || p.HTTPGet.Path != "/readyz"):
				t.Errorf("readiness probe %+v; want HTTP GET /readyz", p.ProbeHandler)
			}
			env := map[string]string{}
			podName := false
			for _, e := range c.Env {
				env[e.Name] = e.Value
				if e.Name == "POD_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
					podName = true
				}
			}
			for k, v := range tc.env {
				if env[k] != v {
					t.Errorf("env %s=%q; want %q", k, env[k], v)
				}
			}
			if !podName {
				t.Error("POD_NAME is not the pod's name (fieldRef metadata.name)")
			}
		})
	}
}

// converterPorts are the converter Services' ports: gRPC, and the same
// conversion over HTTP for the HTTPRoute demonstrations.
var converterPorts = []corev1.ServicePort{servicePort("grpc", 9090, ptr("grpc")), servicePort("http", 8080, ptr("http"))}

func TestServices(t *testing.T) {
	cases := map[string]struct {
		selector map[string]string
		ports    []corev1.ServicePort
		// selects are the Deployments whose pods the Service must select.
		selects []string
	}{
		TemperatureAPI: {
			selector: map[string]string{"app": "temperature-api"},
			ports:    []corev1.ServicePort{servicePort("http", 8080, nil)},
			selects:  []string{TemperatureAPI},
		},
		Converter: {
			selector: map[string]string{"app": "converter"},
			ports:    converterPorts,
			selects:  []string{ConverterV1, ConverterV2},
		},
		ConverterV1: {
			selector: map[string]string{"app": "converter", "version": "v1"},
			ports:    converterPorts,
			selects:  []string{ConverterV1},
		},
		ConverterV2: {
			selector: map[string]string{"app": "converter", "version": "v2"},
			ports:    converterPorts,
			selects:  []string{ConverterV2},
		},
	}
	objs := load(t)
	if len(objs.services) != len(cases) {
		t.Errorf("%d Services; want %d", len(objs.services), len(cases))
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s, ok := objs.services[name]
			if !ok {
				t.Fatal("missing")
			}
			if s.Namespace != Namespace {
				t.Errorf("namespace %q", s.Namespace)
			}
			if !labels.Equals(s.Spec.Selector, tc.selector) {
				t.Errorf("selector %v; want %v", s.Spec.Selector, tc.selector)
			}
			if !slices.EqualFunc(s.Spec.Ports, tc.ports, equalPorts) {
				t.Errorf("ports %+v; want %+v", s.Spec.Ports, tc.ports)
			}
			sel := labels.SelectorFromSet(s.Spec.Selector)
			for dname, d := range objs.deployments {
				want := slices.Contains(tc.selects, dname)
				if got := sel.Matches(labels.Set(d.Spec.Template.Labels)); got != want {
					t.Errorf("selects the pods of %s: %t; want %t", dname, got, want)
				}
			}
		})
	}
}

func deploymentSelector(d appsv1.Deployment) (labels.Selector, error) {
	if d.Spec.Selector == nil {
		return nil, errors.New("no selector")
	}
	return labels.SelectorFromSet(d.Spec.Selector.MatchLabels), nil
}

// containerBinary is the binary an image runs, from its name:
// sample-temperature-api → temperature-api.
func containerBinary(image string) string {
	name := image[strings.LastIndex(image, "/")+1:]
	name, _, _ = strings.Cut(name, ":")
	return strings.TrimPrefix(name, "sample-")
}

func servicePort(name string, port int32, appProtocol *string) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, Protocol: corev1.ProtocolTCP, AppProtocol: appProtocol}
}

func equalPorts(a, b corev1.ServicePort) bool {
	return a.Name == b.Name && a.Port == b.Port && a.Protocol == b.Protocol &&
		a.TargetPort.String() == b.Name && ptrEq(a.AppProtocol, b.AppProtocol)
}

func ptr[T any](v T) *T { return &v }

func ptrEq(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// Each workload runs as its own ServiceAccount, so that the mesh tells
// them apart (identities, AuthorizationPolicies).
func TestServiceAccounts(t *testing.T) {
	objs := load(t)
	for deploy, sa := range map[string]string{TemperatureAPI: TemperatureAPI, ConverterV1: Converter, ConverterV2: Converter} {
		d, ok := objs.deployments[deploy]
		if !ok {
			t.Fatalf("no Deployment %s", deploy)
		}
		if got := d.Spec.Template.Spec.ServiceAccountName; got != sa {
			t.Errorf("Deployment %s runs as %q, want %q", deploy, got, sa)
		}
		if _, ok := objs.serviceAccounts[sa]; !ok {
			t.Errorf("no ServiceAccount %s", sa)
		}
	}
}
