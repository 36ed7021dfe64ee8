package main

import (
	"bufio"
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/operator-framework/api/pkg/operators/v1alpha1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func generateFixture(t *testing.T, objs []*unstructured.Unstructured) map[string][]byte {
	t.Helper()
	api, err := loadAPI("testdata/api")
	if err != nil {
		t.Fatal(err)
	}
	files, err := generate(objs, api, fixtureOptions)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// The bundle depends on its input only: two runs give the same files, and
// so does the input in another order (kustomize's order is its own).
func TestGenerateIsDeterministic(t *testing.T) {
	first := generateFixture(t, fixtureObjects(t))
	second := generateFixture(t, fixtureObjects(t))
	reversed := fixtureObjects(t)
	slices.Reverse(reversed)
	third := generateFixture(t, reversed)
	for name, other := range map[string]map[string][]byte{"a second run": second, "the input reversed": third} {
		if !reflect.DeepEqual(slices.Sorted(maps.Keys(first)), slices.Sorted(maps.Keys(other))) {
			t.Fatalf("%s writes %v, the first %v", name, slices.Sorted(maps.Keys(other)), slices.Sorted(maps.Keys(first)))
		}
		for path, data := range first {
			if !bytes.Equal(data, other[path]) {
				t.Errorf("%s writes another %s:\n%s\nthe first:\n%s", name, path, other[path], data)
			}
		}
	}

	// And writing them replaces the bundle: a file of an older run goes.
	dir := t.TempDir()
	stale := filepath.Join(dir, manifestsDir, "gone_v1_service.yaml")
	if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeFiles(dir, first); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("a stale manifest survives writeFiles: %v", err)
	}
	for path, data := range first {
		got, err := os.ReadFile(filepath.Join(dir, path))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s on disk differs: %v", path, err)
		}
	}
}

func TestGenerate(t *testing.T) {
	files := generateFixture(t, fixtureObjects(t))
	wantFiles := []string{
		"bundle.Dockerfile",
		"bundle/manifests/example.com_widgets.yaml",
		"bundle/manifests/widget-viewer_rbac.authorization.k8s.io_v1_clusterrole.yaml",
		"bundle/manifests/widget.clusterserviceversion.yaml",
		"bundle/metadata/annotations.yaml",
		"bundle/tests/scorecard/config.yaml",
	}
	if got := slices.Sorted(maps.Keys(files)); !reflect.DeepEqual(got, wantFiles) {
		t.Errorf("files = %v, want %v (no Namespace, webhook Service, ServiceAccount, bindings or operator roles)", got, wantFiles)
	}

	var csv v1alpha1.ClusterServiceVersion
	if err := yaml.UnmarshalStrict(files["bundle/manifests/widget.clusterserviceversion.yaml"], &csv); err != nil {
		t.Fatal(err)
	}
	if csv.Name != "widget.v1.2.3" || csv.Spec.Version.String() != "1.2.3" {
		t.Errorf("CSV %s version %s, want widget.v1.2.3 version 1.2.3", csv.Name, csv.Spec.Version)
	}
	if _, ok := csv.Annotations["createdAt"]; ok {
		t.Error("the CSV has a createdAt, which changes on every run")
	}
	for k, want := range map[string]string{
		"capabilities":                                  "Basic Install", // from the base
		"containerImage":                                "registry.example/widget:v1.2.3",
		"operators.operatorframework.io/builder":        builder,
		"operators.operatorframework.io/project_layout": "go.kubebuilder.io/v4",
	} {
		if got := csv.Annotations[k]; got != want {
			t.Errorf("annotation %s = %q, want %q", k, got, want)
		}
	}
	var examples []map[string]any
	if err := yaml.Unmarshal([]byte(csv.Annotations["alm-examples"]), &examples); err != nil || len(examples) != 1 || examples[0]["kind"] != "Widget" {
		t.Errorf("alm-examples = %s (%v), want the Widget sample", csv.Annotations["alm-examples"], err)
	}

	deps := csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs
	if len(deps) != 1 || deps[0].Name != "widget-operator" {
		t.Fatalf("deployments = %+v, want widget-operator", deps)
	}
	c := deps[0].Spec.Template.Spec.Containers[0]
	wantArgs := []string{"--leader-elect", "--image=registry.example/widget", "--image-version=v1.2.3"}
	if c.Image != "registry.example/widget:v1.2.3" || !reflect.DeepEqual(c.Args, wantArgs) {
		t.Errorf("container runs %s %v, want IMAGE:VERSION and %v", c.Image, c.Args, wantArgs)
	}
	wantImages := []v1alpha1.RelatedImage{
		{Name: "widget-controlplane", Image: "registry.example/widget:v1.2.3"},
		{Name: "widget-operator", Image: "registry.example/widget:v1.2.3"},
		{Name: "widget-proxy", Image: "registry.example/widget:v1.2.3"},
	}
	if !reflect.DeepEqual(csv.Spec.RelatedImages, wantImages) {
		t.Errorf("relatedImages = %+v, want %+v", csv.Spec.RelatedImages, wantImages)
	}
	if owned := csv.Spec.CustomResourceDefinitions.Owned; len(owned) != 1 || owned[0].Name != "widgets.example.com" || owned[0].Version != "v1" {
		t.Errorf("owned CRDs = %+v", owned)
	}
	if n := len(csv.Spec.WebhookDefinitions); n != 2 {
		t.Errorf("%d webhookdefinitions, want 2", n)
	}

	var viewer map[string]any
	if err := yaml.Unmarshal(files["bundle/manifests/widget-viewer_rbac.authorization.k8s.io_v1_clusterrole.yaml"], &viewer); err != nil {
		t.Fatal(err)
	}
	if viewer["kind"] != "ClusterRole" {
		t.Errorf("the viewer role's file holds %v", viewer)
	}
}

// An object OLM cannot install from a bundle is an error, not left out.
func TestGenerateRefusesUnknownKinds(t *testing.T) {
	objs := fixtureObjects(t)
	extra := &unstructured.Unstructured{}
	extra.SetAPIVersion("cert-manager.io/v1")
	extra.SetKind("Certificate")
	extra.SetName("serving")
	api, err := loadAPI("testdata/api")
	if err != nil {
		t.Fatal(err)
	}
	_, err = generate(append(objs, extra), api, fixtureOptions)
	if err == nil || !strings.Contains(err.Error(), "Certificate serving cannot go in a registry+v1 bundle") {
		t.Errorf("got %v, want an error naming the Certificate", err)
	}
}

// annotationsOf reads an annotations.yaml.
func annotationsOf(t *testing.T, data []byte) map[string]string {
	t.Helper()
	var a struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := yaml.UnmarshalStrict(data, &a); err != nil {
		t.Fatal(err)
	}
	return a.Annotations
}

// labelsAndCopies reads a bundle.Dockerfile's LABELs and COPY destinations.
func labelsAndCopies(t *testing.T, data []byte) (map[string]string, map[string]string) {
	t.Helper()
	labels, copies := map[string]string{}, map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) == 2 && fields[0] == "LABEL":
			k, v, ok := strings.Cut(fields[1], "=")
			if !ok {
				t.Fatalf("bad LABEL line %q", sc.Text())
			}
			labels[k] = v
		case len(fields) == 3 && fields[0] == "COPY":
			copies[fields[2]] = fields[1]
		}
	}
	return labels, copies
}

// The bundle image's labels are the bundle's annotations, word for word,
// and it copies each directory the annotations name to where they name it.
func checkDockerfileMatchesAnnotations(t *testing.T, annotations, dockerfile []byte) {
	t.Helper()
	want := annotationsOf(t, annotations)
	labels, copies := labelsAndCopies(t, dockerfile)
	if !reflect.DeepEqual(labels, want) {
		t.Errorf("bundle.Dockerfile's labels\n%v\ndiffer from annotations.yaml\n%v", labels, want)
	}
	for key, from := range map[string]string{
		"operators.operatorframework.io.bundle.manifests.v1": "bundle/manifests",
		"operators.operatorframework.io.bundle.metadata.v1":  "bundle/metadata",
		"operators.operatorframework.io.test.config.v1":      "bundle/tests/scorecard",
	} {
		dest := "/" + want[key]
		if copies[dest] != from {
			t.Errorf("bundle.Dockerfile copies %q to %s, want %s (annotation %s)", copies[dest], dest, from, key)
		}
	}
	if len(want) == 0 {
		t.Error("no annotations")
	}
}

func TestDockerfileMatchesAnnotations(t *testing.T) {
	files := generateFixture(t, fixtureObjects(t))
	checkDockerfileMatchesAnnotations(t, files["bundle/metadata/annotations.yaml"], files["bundle.Dockerfile"])
	if got := annotationsOf(t, files["bundle/metadata/annotations.yaml"])["operators.operatorframework.io.bundle.package.v1"]; got != "widget" {
		t.Errorf("package %q, want widget", got)
	}
}

// The same holds for the committed bundle.
func TestCommittedDockerfileMatchesAnnotations(t *testing.T) {
	annotations, err := os.ReadFile("../../bundle/metadata/annotations.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dockerfile, err := os.ReadFile("../../bundle.Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	checkDockerfileMatchesAnnotations(t, annotations, dockerfile)
}

// Under OLM the operator finds its webhooks' Service and validating
// configuration by what OLM makes of the CSV: the Service
// <deploymentName>-service (dots made dashes) and a configuration labeled
// with the webhookdefinition's generateName. The committed CSV's operator
// flags (config/manifests/manager_olm_patch.yaml) must name those.
func TestCommittedCSVNamesOLMWebhooks(t *testing.T) {
	data, err := os.ReadFile("../../bundle/manifests/trellis.clusterserviceversion.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var csv v1alpha1.ClusterServiceVersion
	if err := yaml.UnmarshalStrict(data, &csv); err != nil {
		t.Fatal(err)
	}
	args := map[string]string{}
	deps := csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs
	if len(deps) != 1 {
		t.Fatalf("%d deployments, want the operator's", len(deps))
	}
	for _, a := range deps[0].Spec.Template.Spec.Containers[0].Args {
		if k, v, ok := strings.Cut(a, "="); ok {
			args[k] = v
		}
	}
	var validating []string
	for _, w := range csv.Spec.WebhookDefinitions {
		if want := strings.ReplaceAll(w.DeploymentName, ".", "-") + "-service"; args["--webhook-service"] != want {
			t.Errorf("--webhook-service=%s, but OLM serves webhook %s through Service %s", args["--webhook-service"], w.GenerateName, want)
		}
		if w.Type == v1alpha1.ValidatingAdmissionWebhook {
			validating = append(validating, "olm.webhook-description-generate-name="+w.GenerateName)
		}
	}
	if !slices.Contains(validating, args["--validating-webhook-selector"]) {
		t.Errorf("--validating-webhook-selector=%s selects none of OLM's validating configurations %v", args["--validating-webhook-selector"], validating)
	}
}
