package v1alpha1_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/test/testenv"
)

// TestFieldsDescribed: `kubectl explain` has something to say about every
// field of the policies' spec and status, as the CRDs in config/crd/bases
// (written by `make manifests` from the types' comments) describe them.
func TestFieldsDescribed(t *testing.T) {
	for _, file := range []string{
		"mesh.trellis.dev_trafficpolicies.yaml",
		"mesh.trellis.dev_authorizationpolicies.yaml",
	} {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "crd", "bases", file))
			if err != nil {
				t.Fatal(err)
			}
			var crd struct {
				Spec struct {
					Versions []struct {
						Name   string
						Schema struct {
							OpenAPIV3Schema schema `json:"openAPIV3Schema"`
						}
					}
				}
			}
			if err := yaml.Unmarshal(data, &crd); err != nil {
				t.Fatal(err)
			}
			if len(crd.Spec.Versions) != 1 {
				t.Fatalf("%d versions, want 1", len(crd.Spec.Versions))
			}
			root := crd.Spec.Versions[0].Schema.OpenAPIV3Schema
			var fields int
			for _, top := range []string{"spec", "status"} {
				s, ok := root.Properties[top]
				if !ok {
					t.Fatalf("the schema has no %s", top)
				}
				fields += checkDescribed(t, top, s)
			}
			// A walk that found nothing would pass whatever the comments say.
			if fields < 15 {
				t.Errorf("found only %d fields under spec and status", fields)
			}
		})
	}
}

// schema is the part of an OpenAPI v3 schema that kubectl explain walks.
type schema struct {
	Description          string            `json:"description"`
	Properties           map[string]schema `json:"properties"`
	Items                *schema           `json:"items"`
	AdditionalProperties *schema           `json:"additionalProperties"`
}

// checkDescribed reports the field s, at path, if it has no description,
// and each field under it that has none. It returns how many fields it saw.
func checkDescribed(t *testing.T, path string, s schema) int {
	t.Helper()
	if s.Description == "" {
		t.Errorf("%s has no description", path)
	}
	return 1 + checkFieldsOf(t, path, s)
}

// checkFieldsOf checks the fields of s, of its items and of its map values:
// a list's items and a map's values are described by the field that holds
// them, but their own fields need descriptions.
func checkFieldsOf(t *testing.T, path string, s schema) int {
	t.Helper()
	names := make([]string, 0, len(s.Properties))
	for name := range s.Properties {
		names = append(names, name)
	}
	sort.Strings(names)
	n := 0
	for _, name := range names {
		n += checkDescribed(t, path+"."+name, s.Properties[name])
	}
	if s.Items != nil {
		n += checkFieldsOf(t, path+"[]", *s.Items)
	}
	if s.AdditionalProperties != nil {
		n += checkFieldsOf(t, path+"{}", *s.AdditionalProperties)
	}
	return n
}

// printedRow is what `kubectl get -o wide` shows for the object resource/name
// in testNamespace: the API server's Table, column name to cell.
func printedRow(t *testing.T, resource, name string) map[string]string {
	t.Helper()
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("%s/apis/%s/namespaces/%s/%s/%s", strings.TrimSuffix(cfg.Host, "/"), meshv1.GroupVersion, testNamespace, resource, name)
	req, err := http.NewRequestWithContext(testCtx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s as a Table: %s: %s", url, resp.Status, body)
	}
	var table metav1.Table
	if err := json.Unmarshal(body, &table); err != nil {
		t.Fatal(err)
	}
	if len(table.Rows) != 1 {
		t.Fatalf("table has %d rows, want 1", len(table.Rows))
	}
	row := map[string]string{}
	for i, col := range table.ColumnDefinitions {
		if i < len(table.Rows[0].Cells) {
			row[col.Name] = fmt.Sprint(table.Rows[0].Cells[i])
		}
	}
	return row
}

// TestSamplesAccepted: the policy samples in config/samples are valid for
// the API server, as kubectl apply would send them.
func TestSamplesAccepted(t *testing.T) {
	for _, file := range []string{"mesh_v1alpha1_trafficpolicy.yaml", "mesh_v1alpha1_authorizationpolicy.yaml"} {
		data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "samples", file))
		if err != nil {
			t.Fatal(err)
		}
		docs := strings.Split(string(data), "\n---\n")
		for i, doc := range docs {
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
				t.Fatalf("%s, document %d: %v", file, i, err)
			}
			if obj.GetNamespace() != testNamespace {
				t.Errorf("%s %s is in namespace %q, want the sample app's %q", obj.GetKind(), obj.GetName(), obj.GetNamespace(), testNamespace)
			}
			if err := k8sClient.Create(testCtx, obj, strict, client.DryRunAll); err != nil {
				t.Errorf("%s, document %d: %v", file, i, err)
			}
		}
		if len(docs) < 2 {
			t.Errorf("%s has %d documents, want at least 2", file, len(docs))
		}
	}
}
