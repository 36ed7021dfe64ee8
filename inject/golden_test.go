package inject

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/sidecar"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from what Inject returns")

// A golden case is testdata/<case>.input.yaml, a YAML document list of a
// Mesh, a Namespace, a Pod and optionally a Config (kind: Config, the fields
// of testConfig), and testdata/<case>.golden.yaml, which is either the
// report as comments followed by the returned pod, or "error: " and the
// error's text.
type goldenCase struct {
	name      string
	mesh      *meshv1.Mesh
	namespace *corev1.Namespace
	pod       *corev1.Pod
	cfg       Config
}

// testConfig is the kind: Config document of an input, which sets the
// Config. Unset fields keep defaultConfig's.
type testConfig struct {
	Kind            string `json:"kind"`
	ProxyImage      string `json:"proxyImage,omitempty"`
	Version         string `json:"version,omitempty"`
	KubernetesMinor int    `json:"kubernetesMinor,omitempty"`
}

// defaultConfig is what an operator built at v0.1.0 on a current cluster passes.
var defaultConfig = Config{
	ProxyImage:      "ghcr.io/trellis-mesh/trellis:v0.1.0",
	Version:         "v0.1.0",
	KubernetesMinor: 33,
}

func goldenCases(t testing.TB) []goldenCase {
	t.Helper()
	inputs, err := filepath.Glob(filepath.Join("testdata", "*.input.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) == 0 {
		t.Fatal("no testdata/*.input.yaml")
	}
	var cases []goldenCase
	for _, in := range inputs {
		data, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		c, err := parseInput(data)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		c.name = strings.TrimSuffix(filepath.Base(in), ".input.yaml")
		cases = append(cases, c)
	}
	return cases
}

// parseInput reads an input file; strictly, so that a misspelt field in a
// fixture fails rather than testing less than it says.
func parseInput(data []byte) (goldenCase, error) {
	c := goldenCase{cfg: defaultConfig}
	for i, doc := range bytes.Split(data, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return goldenCase{}, fmt.Errorf("document %d: %w", i, err)
		}
		var err error
		switch tm.Kind {
		case "Mesh":
			c.mesh = &meshv1.Mesh{}
			err = yaml.UnmarshalStrict(doc, c.mesh)
		case "Namespace":
			c.namespace = &corev1.Namespace{}
			err = yaml.UnmarshalStrict(doc, c.namespace)
		case "Pod":
			c.pod = &corev1.Pod{}
			err = yaml.UnmarshalStrict(doc, c.pod)
		case "Config":
			var tc testConfig
			if err = yaml.UnmarshalStrict(doc, &tc); err == nil {
				if tc.ProxyImage != "" {
					c.cfg.ProxyImage = tc.ProxyImage
				}
				if tc.Version != "" {
					c.cfg.Version = tc.Version
				}
				if tc.KubernetesMinor != 0 {
					c.cfg.KubernetesMinor = tc.KubernetesMinor
				}
			}
		default:
			err = fmt.Errorf("kind %q is not Mesh, Namespace, Pod or Config", tm.Kind)
		}
		if err != nil {
			return goldenCase{}, fmt.Errorf("document %d: %w", i, err)
		}
	}
	if c.mesh == nil || c.namespace == nil || c.pod == nil {
		return goldenCase{}, fmt.Errorf("want a Mesh, a Namespace and a Pod")
	}
	return c, nil
}

// render is what a golden file holds for one call of Inject.
func render(pod *corev1.Pod, report Report, err error) ([]byte, error) {
	if err != nil {
		return []byte("error: " + err.Error() + "\n"), nil
	}
	var b bytes.Buffer
	if report.Injected {
		b.WriteString("# injected\n")
	} else {
		fmt.Fprintf(&b, "# skipped: %s\n", report.Skipped)
	}
	for _, a := range report.Added {
		fmt.Fprintf(&b, "# added: %s\n", a)
	}
	for _, w := range report.Warnings {
		fmt.Fprintf(&b, "# warning: %s\n", w)
	}
	y, err := yaml.Marshal(pod)
	if err != nil {
		return nil, err
	}
	b.Write(y)
	return b.Bytes(), nil
}

func goldenPath(name string) string {
	return filepath.Join("testdata", name+".golden.yaml")
}

// TestGolden injects each input and compares with its golden file; -update
// rewrites the golden files, which must then be read before committing.
func TestGolden(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			before := c.pod.DeepCopy()
			pod, report, err := Inject(c.pod, c.namespace, c.mesh, c.cfg)
			if !equality.Semantic.DeepEqual(before, c.pod) {
				t.Errorf("Inject modified its input pod")
			}
			switch {
			case err != nil:
			case report.Injected:
				if problems := structuralProblems(pod); len(problems) > 0 {
					t.Errorf("the injected pod would be refused by the API server: %v", problems)
				}
			case !equality.Semantic.DeepEqual(pod, c.pod):
				t.Errorf("skipped (%s), but the returned pod differs from the input", report.Skipped)
			}
			got, rerr := render(pod, report, err)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if *update {
				if err := os.WriteFile(goldenPath(c.name), got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(goldenPath(c.name))
			if err != nil {
				t.Fatalf("%v (run go test ./inject -run TestGolden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Inject output differs from %s (-want +got):\n%s", goldenPath(c.name), lineDiff(string(want), string(got)))
			}
		})
	}
}

// TestGoldenIdempotent injects each golden output again: it must come back
// unchanged, as AlreadyInjected when the first call injected it.
func TestGoldenIdempotent(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			data, err := os.ReadFile(goldenPath(c.name))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.HasPrefix(data, []byte("error: ")) {
				t.Skip("the golden output is an error")
			}
			var golden corev1.Pod
			if err := yaml.UnmarshalStrict(data, &golden); err != nil {
				t.Fatal(err)
			}
			again, report, err := Inject(&golden, c.namespace, c.mesh, c.cfg)
			if err != nil {
				t.Fatalf("injecting the golden pod: %v", err)
			}
			if report.Injected {
				t.Errorf("injecting the golden pod injected it again: %v", report.Added)
			}
			if _, injected := golden.Annotations[sidecar.AnnotationStatus]; injected && report.Skipped != AlreadyInjected {
				t.Errorf("injecting the golden pod: skipped %q, want %q", report.Skipped, AlreadyInjected)
			}
			if !equality.Semantic.DeepEqual(&golden, again) {
				a, _ := yaml.Marshal(again)
				t.Errorf("injecting the golden pod changed it (-golden +again):\n%s", lineDiff(string(data), string(a)))
			}
		})
	}
}

// lineDiff is a small line diff for failure messages: the lines only in
// want (-) and only in got (+), in order.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	inW, inG := map[string]int{}, map[string]int{}
	for _, l := range w {
		inW[l]++
	}
	for _, l := range g {
		inG[l]++
	}
	var b strings.Builder
	for _, l := range w {
		if inG[l] == 0 {
			fmt.Fprintf(&b, "-%s\n", l)
		}
	}
	for _, l := range g {
		if inW[l] == 0 {
			fmt.Fprintf(&b, "+%s\n", l)
		}
	}
	if b.Len() == 0 {
		return "(the same lines, in another order)"
	}
	return b.String()
}
