package main

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/sidecar"
)

var (
	testMesh = &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	testCfg  = inject.Config{ProxyImage: "ghcr.io/trellis-mesh/trellis:v0.1.0", KubernetesMinor: 33}
)

func TestInjectSampleAppManifests(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("..", "..", "test", "sampleapp", "manifests", "converter.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	results, err := injectManifests(bytes.NewReader(in), &out, testMesh, testCfg, "temperature")
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 {
		t.Fatalf("%d workloads reported, want the 2 converter Deployments", len(results))
	}
	docs := splitDocs(t, out.Bytes())
	if want := len(splitDocs(t, in)); len(docs) != want {
		t.Fatalf("%d documents out, want the %d in", len(docs), want)
	}
	for _, d := range docs {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(d, &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "Deployment":
			var dep appsv1.Deployment
			if err := yaml.UnmarshalStrict(d, &dep); err != nil {
				t.Fatalf("injected Deployment does not read back strictly: %v", err)
			}
			spec := dep.Spec.Template.Spec
			if len(spec.InitContainers) < 2 || spec.InitContainers[0].Name != sidecar.InitContainerName ||
				spec.InitContainers[1].Name != sidecar.ProxyContainerName {
				t.Errorf("%s: init containers %v, want trellis-init then the native trellis-proxy", dep.Name, names(spec.InitContainers))
			}
			if dep.Spec.Template.Namespace != "" || dep.Spec.Template.GenerateName != "" {
				t.Errorf("%s: template metadata got namespace/generateName: %+v", dep.Name, dep.Spec.Template.ObjectMeta)
			}
		case "Service", "ServiceAccount":
			if bytes.Contains(d, []byte("trellis")) {
				t.Errorf("a %s was changed:\n%s", meta.Kind, d)
			}
		default:
			t.Errorf("unexpected kind %q", meta.Kind)
		}
	}

	// Injecting the output again changes nothing.
	var again bytes.Buffer
	if _, err := injectManifests(bytes.NewReader(out.Bytes()), &again, testMesh, testCfg, "temperature"); err != nil {
		t.Fatal(err)
	}
	if again.String() != out.String() {
		t.Errorf("a second injection changed the manifest")
	}
}

func TestInjectPodCronJobAndOptOut(t *testing.T) {
	in := `# a comment-only document first
---
apiVersion: v1
kind: Pod
metadata:
  name: one
spec:
  containers:
  - name: app
    image: app:1
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
  namespace: batch
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: job
            image: job:1
---
apiVersion: v1
kind: Pod
metadata:
  name: out
  labels:
    trellis.dev/inject: "false"
spec:
  containers:
  - name: app
    image: app:1
`
	var out bytes.Buffer
	results, err := injectManifests(strings.NewReader(in), &out, testMesh, testCfg, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 3 || !results[0].report.Injected || !results[1].report.Injected || results[2].report.Skipped != inject.OptedOut {
		t.Fatalf("results %+v: want the Pod and the CronJob injected, the opted-out Pod skipped", results)
	}
	docs := splitDocs(t, out.Bytes())
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(docs[0], &pod); err != nil {
		t.Fatal(err)
	}
	if pod.Annotations[sidecar.AnnotationStatus] == "" || pod.Namespace != "" {
		t.Errorf("Pod: not injected, or given a namespace it did not name: %+v", pod.ObjectMeta)
	}
	var cj batchv1.CronJob
	if err := yaml.UnmarshalStrict(docs[1], &cj); err != nil {
		t.Fatal(err)
	}
	if n := len(cj.Spec.JobTemplate.Spec.Template.Spec.InitContainers); n != 2 {
		t.Errorf("CronJob: %d init containers, want 2", n)
	}
	if !strings.Contains(string(docs[2]), `trellis.dev/inject: "false"`) || strings.Contains(string(docs[2]), "trellis-init") {
		t.Errorf("opted-out Pod changed:\n%s", docs[2])
	}
}

func TestInjectErrorsNameTheDocument(t *testing.T) {
	cases := map[string]struct{ in, want string }{
		"List":         {"apiVersion: v1\nkind: List\nitems: []\n", "document 1: kind List is not supported"},
		"bad field":    {"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    spec:\n      containers: 3\n", "document 2: Deployment default/d"},
		"no template":  {"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {}\n", "Deployment default/d: no pod template at .spec.template"},
		"not YAML map": {"- a\n- b\n", "document 1: not a Kubernetes object"},
		"our name": {"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: trellis-proxy\n    image: x\n",
			"trellis-proxy"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := injectManifests(strings.NewReader(tc.in), &bytes.Buffer{}, testMesh, testCfg, "default")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func splitDocs(t *testing.T, b []byte) [][]byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufioReader(b))
	var docs [][]byte
	for {
		d, err := r.Read()
		if err != nil {
			return docs
		}
		docs = append(docs, d)
	}
}

func names(cs []corev1.Container) []string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name)
	}
	return n
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
