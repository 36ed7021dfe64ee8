package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// validBundle is a minimal bundle with everything OperatorHub wants: every
// broken bundle below is a copy of it with one thing changed.
const validBundle = "testdata/bundle"

// projectBundle is Trellis's own bundle (make bundle writes it).
const projectBundle = "../../bundle"

func TestValidBundle(t *testing.T) {
	r, err := Validate(validBundle, Options{K8sVersion: "1.37"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Findings) > 0 {
		t.Errorf("%s: want no error and no warning, got:\n%s", validBundle, report(t, r))
	}
	var out, errOut bytes.Buffer
	if code := run([]string{validBundle}, &out, &errOut); code != 0 {
		t.Errorf("exit code %d, want 0; stdout:\n%s\nstderr:\n%s", code, &out, &errOut)
	}
	if !strings.Contains(out.String(), "valid: 0 errors, 0 warnings") {
		t.Errorf("summary missing from:\n%s", &out)
	}
}

func TestBrokenBundles(t *testing.T) {
	cases := map[string]struct {
		// edit breaks the copy of validBundle in dir.
		edit       func(t *testing.T, dir string)
		k8sVersion string // empty: the default
		level      Level
		// want are the parts of one finding's line that name the problem.
		want []string
	}{
		"CSV without installModes": {
			edit:  editCSV(func(csv map[string]any) { delete(at(csv, "spec"), "installModes") }),
			level: LevelError,
			want:  []string{"ClusterServiceVersion trellis.v0.1.0", "spec.installModes", "install modes not found", "list the install modes"},
		},
		"CSV without displayName": {
			edit:  editCSV(func(csv map[string]any) { delete(at(csv, "spec"), "displayName") }),
			level: LevelError,
			want:  []string{"ClusterServiceVersion trellis.v0.1.0", "spec.displayName", "required field missing"},
		},
		"CSV without alm-examples": {
			edit:  editCSV(func(csv map[string]any) { delete(at(csv, "metadata", "annotations"), "alm-examples") }),
			level: LevelWarning,
			want:  []string{"metadata.annotations.alm-examples", "example annotations not found"},
		},
		"CSV without an icon": {
			edit:  editCSV(func(csv map[string]any) { delete(at(csv, "spec"), "icon") }),
			level: LevelWarning,
			want:  []string{"spec.icon", "not specified", "operatorhubv2"},
		},
		"CSV without minKubeVersion": {
			edit:  editCSV(func(csv map[string]any) { delete(at(csv, "spec"), "minKubeVersion") }),
			level: LevelWarning,
			want:  []string{"minKubeVersion is not informed"},
		},
		"CSV with a category OperatorHub does not have": {
			edit:  editCSV(func(csv map[string]any) { at(csv, "metadata", "annotations")["categories"] = "Networking,Plumbing" }),
			level: LevelError,
			want:  []string{"metadata.annotations.categories", `"Plumbing"`, "standardcategories"},
		},
		"CSV with an unknown capability level": {
			edit:  editCSV(func(csv map[string]any) { at(csv, "metadata", "annotations")["capabilities"] = "Basic" }),
			level: LevelError,
			want:  []string{"metadata.annotations.capabilities", "standardcapabilities"},
		},
		"owned CRD without a description": {
			edit: editCSV(func(csv map[string]any) {
				owned := at(csv, "spec", "customresourcedefinitions")["owned"].([]any)
				delete(owned[0].(map[string]any), "description")
			}),
			level: LevelWarning,
			want:  []string{`owned CRD "meshes.mesh.trellis.dev" has an empty description`, "good-practices"},
		},
		"container without resource requests": {
			edit: editCSV(func(csv map[string]any) {
				deployments := at(csv, "spec", "install", "spec")["deployments"].([]any)
				containers := at(deployments[0].(map[string]any), "spec", "template", "spec")["containers"].([]any)
				delete(containers[0].(map[string]any), "resources")
			}),
			level: LevelWarning,
			want:  []string{"resource requests for the container: (manager)"},
		},
		"owned CRD missing from the bundle": {
			edit:  func(t *testing.T, dir string) { remove(t, dir, "manifests/mesh.trellis.dev_meshes.yaml") },
			level: LevelError,
			want:  []string{"bundle trellis.v0.1.0", "owned CRD", "not found in bundle", "add the CRD's manifest"},
		},
		"empty package name": {
			edit:  editAnnotations(func(a map[string]any) { a[packageAnnotation] = "" }),
			level: LevelError,
			want:  []string{annotationsPath, packageAnnotation, "is empty"},
		},
		"wrong media type": {
			edit:  editAnnotations(func(a map[string]any) { a[mediaTypeAnnotation] = "plain+v0" }),
			level: LevelError,
			want:  []string{mediaTypeAnnotation, `is "plain+v0"`, `set it to "registry+v1"`},
		},
		"no channels": {
			edit:  editAnnotations(func(a map[string]any) { delete(a, channelsAnnotation) }),
			level: LevelError,
			want:  []string{channelsAnnotation, "is empty or missing"},
		},
		"default channel not among the channels": {
			edit:  editAnnotations(func(a map[string]any) { a[defaultChannelAnnotation] = "stable" }),
			level: LevelError,
			want:  []string{defaultChannelAnnotation, `"stable" is not one of the channels`},
		},
		"channel named against the convention": {
			edit: editAnnotations(func(a map[string]any) {
				a[channelsAnnotation] = "alpha"
				a[defaultChannelAnnotation] = "alpha"
			}),
			level: LevelWarning,
			want:  []string{`channel(s) ["alpha"]`, "naming convention", "good-practices"},
		},
		"no metadata/annotations.yaml": {
			edit:  func(t *testing.T, dir string) { remove(t, dir, "metadata") },
			level: LevelError,
			want:  []string{annotationsPath, "cannot read it"},
		},
		"scorecard configuration missing": {
			edit:  func(t *testing.T, dir string) { remove(t, dir, scorecardConfigPath) },
			level: LevelError,
			want:  []string{scorecardConfigPath, "cannot read it"},
		},
		"scorecard configuration the annotations do not name": {
			edit:  editAnnotations(func(a map[string]any) { delete(a, testConfigAnnotation) }),
			level: LevelWarning,
			want:  []string{testConfigAnnotation, "missing, though the bundle has tests/scorecard/"},
		},
		"ClusterRole of an API removed in 1.22": {
			edit: editYAML("manifests/trellis-metrics-reader_rbac.authorization.k8s.io_v1_clusterrole.yaml", func(o map[string]any) {
				o["apiVersion"] = "rbac.authorization.k8s.io/v1beta1"
			}),
			level: LevelError,
			want:  []string{"removed in v1.22", `ClusterRole: (["trellis-metrics-reader"])`, "operatorhubv2, alpha-deprecated-apis"},
		},
		"PodDisruptionBudget of an API removed in 1.25": {
			edit: write("manifests/pdb.yaml", `apiVersion: policy/v1beta1
kind: PodDisruptionBudget
metadata:
  name: trellis-operator
spec:
  minAvailable: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: trellis-operator
`),
			level: LevelError,
			want:  []string{"removed in v1.25", `PodDisruptionBudget: (["trellis-operator"])`},
		},
		"removed API, installing on a Kubernetes that still has it": {
			edit: func(t *testing.T, dir string) {
				editCSV(func(csv map[string]any) { at(csv, "spec")["minKubeVersion"] = "1.20.0" })(t, dir)
				editYAML("manifests/trellis-metrics-reader_rbac.authorization.k8s.io_v1_clusterrole.yaml", func(o map[string]any) {
					o["apiVersion"] = "rbac.authorization.k8s.io/v1beta1"
				})(t, dir)
			},
			k8sVersion: "1.21",
			level:      LevelWarning,
			want:       []string{"removed in v1.22", "ClusterRole"},
		},
		"kind OLM does not install": {
			edit: write("manifests/deployment.yaml", `apiVersion: apps/v1
kind: Deployment
metadata:
  name: extra
`),
			level: LevelError,
			want:  []string{"Deployment extra", "Deployment.apps is not a kind OLM installs"},
		},
		"object with a namespace": {
			edit: editYAML("manifests/trellis-metrics-reader_rbac.authorization.k8s.io_v1_clusterrole.yaml", func(o map[string]any) {
				at(o, "metadata")["namespace"] = "trellis-system"
			}),
			level: LevelError,
			want:  []string{"ClusterRole trellis-metrics-reader", "metadata.namespace", "remove metadata.namespace"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := copyBundle(t, validBundle)
			tc.edit(t, dir)
			r, err := Validate(dir, Options{K8sVersion: tc.k8sVersion})
			if err != nil {
				t.Fatal(err)
			}
			if !hasFinding(r, tc.level, tc.want) {
				t.Errorf("want a %s with %q, got:\n%s", tc.level, tc.want, report(t, r))
			}
			args := []string{dir}
			if tc.k8sVersion != "" {
				args = []string{"--k8s-version", tc.k8sVersion, dir}
			}
			var out, errOut bytes.Buffer
			if code := run(args, &out, &errOut); code != 1 {
				t.Errorf("exit code %d, want 1; stdout:\n%s\nstderr:\n%s", code, &out, &errOut)
			}
		})
	}
}

func TestUnusable(t *testing.T) {
	noManifests := copyBundle(t, validBundle)
	remove(t, noManifests, "manifests")
	badCSV := copyBundle(t, validBundle)
	write("manifests/trellis.clusterserviceversion.yaml", "apiVersion: operators.coreos.com/v1alpha1\nkind: ClusterServiceVersion\nspec: [not, a, map]\n")(t, badCSV)

	cases := map[string]struct {
		args []string
		// stderr names the problem.
		stderr string
	}{
		"no argument":         {nil, "usage:"},
		"two bundles":         {[]string{validBundle, validBundle}, "usage:"},
		"unknown flag":        {[]string{"--select-optional", "suite=operatorframework", validBundle}, "flag provided but not defined"},
		"bad k8s version":     {[]string{"--k8s-version", "latest", validBundle}, `--k8s-version "latest" is not a Kubernetes version`},
		"no such directory":   {[]string{filepath.Join(t.TempDir(), "nothing")}, "no such file or directory"},
		"a file, not a dir":   {[]string{filepath.Join(validBundle, annotationsPath)}, "is not a directory"},
		"no manifests/":       {[]string{noManifests}, "has no manifests/ directory"},
		"a CSV that is wrong": {[]string{badCSV}, "cannot load manifests/"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(tc.args, &out, &errOut); code != 2 {
				t.Errorf("exit code %d, want 2; stdout:\n%s\nstderr:\n%s", code, &out, &errOut)
			}
			if !strings.Contains(errOut.String(), tc.stderr) {
				t.Errorf("stderr does not say %q:\n%s", tc.stderr, &errOut)
			}
		})
	}
}

// TestProjectBundle validates the bundle make bundle writes, and a copy of it
// without a required field, so that a bundle that passes is not one this
// tool cannot fail.
func TestProjectBundle(t *testing.T) {
	if _, err := os.Stat(projectBundle); err != nil {
		t.Skipf("no project bundle: %v", err)
	}
	r, err := Validate(projectBundle, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Findings) > 0 {
		t.Errorf("%s: want no error and no warning, got:\n%s", projectBundle, report(t, r))
	}

	dir := copyBundle(t, projectBundle)
	csvs, _ := filepath.Glob(filepath.Join(dir, "manifests", "*.clusterserviceversion.yaml"))
	if len(csvs) != 1 {
		t.Fatalf("want one manifests/*.clusterserviceversion.yaml in %s, got %q", projectBundle, csvs)
	}
	rel, _ := filepath.Rel(dir, csvs[0])
	editYAML(rel, func(csv map[string]any) { delete(at(csv, "spec"), "displayName") })(t, dir)
	r, err = Validate(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !hasFinding(r, LevelError, []string{"spec.displayName", "required field missing"}) {
		t.Errorf("without spec.displayName: want an error naming it, got:\n%s", report(t, r))
	}
}

func hasFinding(r *Report, level Level, want []string) bool {
	for _, f := range r.Findings {
		line := f.String()
		if f.Level != level {
			continue
		}
		found := true
		for _, w := range want {
			found = found && strings.Contains(line, w)
		}
		if found {
			return true
		}
	}
	return false
}

func report(t *testing.T, r *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func copyBundle(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "bundle")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

func remove(t *testing.T, dir, rel string) {
	t.Helper()
	if err := os.RemoveAll(filepath.Join(dir, rel)); err != nil {
		t.Fatal(err)
	}
}

func write(rel, content string) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, rel), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// editYAML returns an edit that decodes the file rel of a bundle, changes it
// with change and writes it back.
func editYAML(rel string, change func(map[string]any)) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		t.Helper()
		path := filepath.Join(dir, rel)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(data, &obj); err != nil {
			t.Fatal(err)
		}
		change(obj)
		if data, err = yaml.Marshal(obj); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func editCSV(change func(map[string]any)) func(*testing.T, string) {
	return editYAML("manifests/trellis.clusterserviceversion.yaml", change)
}

func editAnnotations(change func(map[string]any)) func(*testing.T, string) {
	return editYAML(annotationsPath, func(o map[string]any) { change(at(o, "annotations")) })
}

// at returns the map at path in obj.
func at(obj map[string]any, path ...string) map[string]any {
	for _, p := range path {
		obj = obj[p].(map[string]any)
	}
	return obj
}
