package v1alpha1_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/test/testenv"
)

// One API server for the package, with the CRDs from config/crd/bases: the
// tests check what the API server itself accepts, refuses and defaults, as
// kubectl apply meets it. No webhook or controller runs.
var (
	cfg       *rest.Config
	k8sClient client.Client
	testCtx   = context.Background()
)

// testNamespace holds the policies that the tests create.
const testNamespace = "temperature"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	env, rc, c, err := testenv.Start(testenv.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}()
	cfg, k8sClient = rc, c
	if err := c.Create(testCtx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// strict makes the API server refuse unknown and duplicate fields, as
// kubectl apply asks it to.
var strict = client.FieldValidation("Strict")

// manifest is a policy of kind as a user writes it for kubectl apply, with
// spec given as YAML, and a generated name in testNamespace. Unstructured,
// so that a case can say what the Go types cannot (an empty list, a
// duration that does not parse).
func manifest(t *testing.T, kind, spec string) *unstructured.Unstructured {
	t.Helper()
	var s map[string]any
	if err := yaml.Unmarshal([]byte(spec), &s); err != nil {
		t.Fatalf("spec of the case is not YAML: %v", err)
	}
	if s == nil {
		s = map[string]any{}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": meshv1.GroupVersion.String(),
		"kind":       kind,
		"metadata":   map[string]any{"generateName": "case-", "namespace": testNamespace},
		"spec":       s,
	}}
}

// checkRefused creates a policy of kind with spec and fails the test unless
// the API server refuses it as invalid (or, for an unknown field, as a bad
// request), with an error that contains each of want.
func checkRefused(t *testing.T, kind, spec string, want []string) {
	t.Helper()
	err := k8sClient.Create(testCtx, manifest(t, kind, spec), strict)
	if err == nil {
		t.Fatalf("the API server accepted\n%s", spec)
	}
	if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) {
		t.Fatalf("want an Invalid or BadRequest error, got %v", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %q:\n%v", w, err)
		}
	}
}

// checkDefaulted creates a policy of kind with spec and fails the test
// unless the API server accepts it and stores the spec want (YAML): spec
// with the defaults filled in.
func checkDefaulted(t *testing.T, kind, spec, want string) {
	t.Helper()
	obj := manifest(t, kind, spec)
	if err := k8sClient.Create(testCtx, obj, strict); err != nil {
		t.Fatalf("the API server refused\n%s\n%v", spec, err)
	}
	// Compare as JSON values, so that numbers have one type on both sides.
	gotJSON, err := json.Marshal(obj.Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	var got, wantSpec any
	if err := json.Unmarshal(gotJSON, &got); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(want), &wantSpec); err != nil {
		t.Fatalf("want of the case is not YAML: %v", err)
	}
	if !reflect.DeepEqual(got, wantSpec) {
		gotYAML, _ := yaml.Marshal(got)
		t.Errorf("stored spec:\n%s\nwant:\n%s", gotYAML, want)
	}
}
