package webhooks

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/inject"
)

// TestInjectionPatchGivesTheInjectedPod applies the handler's patch to each
// golden input of package inject, as the API server would, and checks that
// the result is the pod Inject returned.
func TestInjectionPatchGivesTheInjectedPod(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("..", "inject", "testdata", "*.input.yaml"))
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	mesh := &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{meshv1.InjectionLabel: "enabled"}}}
	patched := 0
	for _, in := range inputs {
		t.Run(strings.TrimSuffix(filepath.Base(in), ".input.yaml"), func(t *testing.T) {
			b, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			// An input is a Pod, with the Mesh and Namespace it needs when
			// not the defaults.
			var raw []byte
			mesh, ns := mesh.DeepCopy(), ns.DeepCopy()
			for _, doc := range strings.Split(string(b), "\n---\n") {
				j, err := yaml.YAMLToJSON([]byte(doc))
				if err != nil {
					t.Fatal(err)
				}
				var tm metav1.TypeMeta
				_ = json.Unmarshal(j, &tm)
				switch tm.Kind {
				case "Pod":
					raw = j
				case "Mesh":
					err = json.Unmarshal(j, mesh)
				case "Namespace":
					err = json.Unmarshal(j, ns)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			pod := &corev1.Pod{}
			if err := json.Unmarshal(raw, pod); err != nil {
				t.Fatal(err)
			}
			out, report, err := inject.Inject(pod, ns, mesh, testInjectConfig)
			if err != nil || !report.Injected {
				t.Skipf("not injected here: %v %s", err, report.Skipped)
			}
			ops, err := injectionPatch(pod, out)
			if err != nil {
				t.Fatal(err)
			}
			opsJSON, err := json.Marshal(ops)
			if err != nil {
				t.Fatal(err)
			}
			p, err := jsonpatch.DecodePatch(opsJSON)
			if err != nil {
				t.Fatal(err)
			}
			res, err := p.Apply(raw)
			if err != nil {
				t.Fatalf("applying %s: %v", opsJSON, err)
			}
			got := &corev1.Pod{}
			if err := json.Unmarshal(res, got); err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(got, out) {
				t.Errorf("patched pod differs from the injected one:\ngot  %+v\nwant %+v", got.Spec, out.Spec)
			}
			patched++
		})
	}
	if patched < 5 {
		t.Errorf("only %d golden inputs were injected and patched", patched)
	}
}
