package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/operator-framework/api/pkg/manifests"
	apivalidation "github.com/operator-framework/api/pkg/validation"
	apierrors "github.com/operator-framework/api/pkg/validation/errors"
	interfaces "github.com/operator-framework/api/pkg/validation/interfaces"
	metavalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// defaultK8sVersion is the Kubernetes the project builds and tests on (the
// Makefile's K8S_VERSION).
const defaultK8sVersion = "1.37"

// The registry+v1 bundle annotations and the values they must have
// (operator-registry's pkg/lib/bundle).
const (
	mediaTypeAnnotation      = "operators.operatorframework.io.bundle.mediatype.v1"
	manifestsAnnotation      = "operators.operatorframework.io.bundle.manifests.v1"
	metadataAnnotation       = "operators.operatorframework.io.bundle.metadata.v1"
	packageAnnotation        = "operators.operatorframework.io.bundle.package.v1"
	channelsAnnotation       = "operators.operatorframework.io.bundle.channels.v1"
	defaultChannelAnnotation = "operators.operatorframework.io.bundle.channel.default.v1"
	testMediaTypeAnnotation  = "operators.operatorframework.io.test.mediatype.v1"
	testConfigAnnotation     = "operators.operatorframework.io.test.config.v1"

	registryV1  = "registry+v1"
	scorecardV1 = "scorecard+v1"

	manifestsDir        = "manifests/"
	metadataDir         = "metadata/"
	scorecardDir        = "tests/scorecard/"
	annotationsPath     = "metadata/annotations.yaml"
	scorecardConfigPath = "tests/scorecard/config.yaml"
)

// supportedKinds are the kinds a registry+v1 bundle may hold besides its CSV
// and CRDs: OLM installs nothing else (operator-registry's
// pkg/lib/bundle/supported_resources.go; NetworkPolicy since v1.55).
var supportedKinds = map[string]bool{
	"ClusterRole": true, "ClusterRoleBinding": true, "Role": true, "RoleBinding": true,
	"ServiceAccount": true, "Service": true, "Secret": true, "ConfigMap": true,
	"PrometheusRule": true, "ServiceMonitor": true, "PodDisruptionBudget": true,
	"PriorityClass": true, "VerticalPodAutoscaler": true, "NetworkPolicy": true,
	"ConsoleYAMLSample": true, "ConsoleQuickStart": true, "ConsoleCLIDownload": true, "ConsoleLink": true,
}

// Options are what a run may change.
type Options struct {
	// K8sVersion is the Kubernetes version the bundle must install on ("1.37",
	// "v1.37.2"): an API removed by then is an error, not a warning. Empty
	// means defaultK8sVersion.
	K8sVersion string
}

// validator is one of the library's validators, named as operator-sdk's
// --list-optional names it.
type validator struct {
	name string
	interfaces.Validator
	// about names the object a result of this validator is about.
	about func(b *manifests.Bundle, r apierrors.ManifestResult) string
}

func aboutCSV(b *manifests.Bundle, _ apierrors.ManifestResult) string {
	return "ClusterServiceVersion " + b.CSV.GetName()
}

// libraryValidators are validation.DefaultBundleValidators, then the
// validators of operator-sdk's optional suite=operatorframework.
var libraryValidators = []validator{
	{"csv", apivalidation.ClusterServiceVersionValidator, aboutCSV},
	{"crd", apivalidation.CustomResourceDefinitionValidator, func(_ *manifests.Bundle, r apierrors.ManifestResult) string {
		return "CustomResourceDefinition " + r.Name
	}},
	{"bundle", apivalidation.BundleValidator, func(b *manifests.Bundle, _ apierrors.ManifestResult) string {
		return "bundle " + b.CSV.GetName()
	}},
	{"operatorhubv2", apivalidation.OperatorHubV2Validator, aboutCSV},
	{"standardcapabilities", apivalidation.StandardCapabilitiesValidator, aboutCSV},
	{"standardcategories", apivalidation.StandardCategoriesValidator, aboutCSV},
	{"alpha-deprecated-apis", apivalidation.AlphaDeprecatedAPIsValidator, aboutCSV},
	{"good-practices", apivalidation.GoodPracticesValidator, aboutCSV},
}

// Validate validates the bundle in dir. It returns an error only when there is
// no bundle to validate there (no directory, no manifests/, a manifest that
// does not decode); every problem of a bundle it could read is in the Report.
func Validate(dir string, opts Options) (*Report, error) {
	if opts.K8sVersion == "" {
		opts.K8sVersion = defaultK8sVersion
	}
	info, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", dir, err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("bundle %s is not a directory: pass the bundle's root, the directory holding manifests/ and metadata/", dir)
	}
	r := &Report{Dir: dir, K8sVersion: opts.K8sVersion}
	r.Validators = append(r.Validators, "format", "content")
	for _, v := range libraryValidators {
		r.Validators = append(r.Validators, v.name)
	}

	annotations := checkAnnotations(dir, r)
	checkScorecard(dir, annotations, r)

	manifestsPath := filepath.Join(dir, manifestsDir)
	if info, err := os.Stat(manifestsPath); err != nil || !info.IsDir() {
		return nil, fmt.Errorf("bundle %s has no %s directory: a registry+v1 bundle keeps its CSV and CRDs there", dir, manifestsDir)
	}
	bundle, err := manifests.GetBundleFromDir(manifestsPath)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: cannot load %s: %w", dir, manifestsDir, err)
	}
	// Loaded from manifests/ alone, as operator-sdk loads it, the bundle knows
	// nothing of its package and channels; the checks that use them
	// (good-practices' channel names, the bundle's name) get them here.
	bundle.Package = annotations[packageAnnotation]
	bundle.Channels = splitChannels(annotations[channelsAnnotation])
	bundle.DefaultChannel = annotations[defaultChannelAnnotation]

	checkObjects(bundle, r)

	objs := append(bundle.ObjectsToValidate(), map[string]string{"k8s-version": opts.K8sVersion})
	for _, v := range libraryValidators {
		for _, res := range v.Validate(objs...) {
			about := v.about(bundle, res)
			for _, e := range slices.Concat(res.Errors, res.Warnings) {
				r.add(fromLibrary(about, e), v.name)
			}
		}
	}
	return r, nil
}

// checkAnnotations checks metadata/annotations.yaml as operator-registry's
// ValidateBundleFormat does, and returns its annotations (nil when it has
// none). It is stricter in one place: the package name must not be empty,
// since no catalog can list a bundle without one.
func checkAnnotations(dir string, r *Report) map[string]string {
	const validator = "format"
	problem := func(key, msg, fix string) {
		r.add(Finding{Level: LevelError, Object: annotationsPath, Field: key, Message: msg, Fix: fix}, validator)
	}
	data, err := os.ReadFile(filepath.Join(dir, annotationsPath))
	if err != nil {
		problem("", fmt.Sprintf("cannot read it: %v", err),
			"a registry+v1 bundle names its media type, package and channels in "+annotationsPath+"; write it")
		return nil
	}
	var file struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		problem("", fmt.Sprintf("is not YAML of string annotations: %v", err), "make it a map of strings under annotations:")
		return nil
	}
	a := file.Annotations
	if len(a) == 0 {
		problem("annotations", "no annotations", "list the registry+v1 annotations (mediatype, manifests, metadata, package, channels) under annotations:")
		return nil
	}
	for _, want := range []struct{ key, value string }{
		{mediaTypeAnnotation, registryV1},
		{manifestsAnnotation, manifestsDir},
		{metadataAnnotation, metadataDir},
	} {
		switch got, ok := a[want.key]; {
		case !ok:
			problem(want.key, "missing", fmt.Sprintf("set it to %q", want.value))
		case got != want.value:
			problem(want.key, fmt.Sprintf("is %q", got), fmt.Sprintf("set it to %q", want.value))
		}
	}
	if strings.TrimSpace(a[packageAnnotation]) == "" {
		problem(packageAnnotation, "is empty or missing", "set it to the name of the package the bundle belongs to (the operator's name)")
	}
	channels := splitChannels(a[channelsAnnotation])
	switch {
	case strings.TrimSpace(a[channelsAnnotation]) == "":
		problem(channelsAnnotation, "is empty or missing", "list the channels the bundle is in, comma-separated (e.g. stable)")
	case slices.Contains(channels, ""):
		problem(channelsAnnotation, fmt.Sprintf("%q has an empty channel name", a[channelsAnnotation]), "remove the stray comma")
	}
	if def, ok := a[defaultChannelAnnotation]; ok {
		switch {
		case strings.TrimSpace(def) == "":
			problem(defaultChannelAnnotation, "is empty", "name one of the channels, or remove it")
		case len(channels) > 0 && !slices.Contains(channels, def):
			problem(defaultChannelAnnotation, fmt.Sprintf("%q is not one of the channels %q", def, channels),
				"name one of the channels, or add it to "+channelsAnnotation)
		}
	}
	return a
}

// checkScorecard checks that the annotations and tests/scorecard/ agree: a
// scorecard test configuration the annotations do not point at is never run.
func checkScorecard(dir string, a map[string]string, r *Report) {
	const validator = "format"
	_, statErr := os.Stat(filepath.Join(dir, scorecardDir))
	config, annotated := a[testConfigAnnotation]
	if !annotated {
		if statErr == nil {
			r.add(Finding{Level: LevelWarning, Object: annotationsPath, Field: testConfigAnnotation,
				Message: "missing, though the bundle has " + scorecardDir,
				Fix:     fmt.Sprintf("set it to %q and %s to %q, or remove %s", scorecardDir, testMediaTypeAnnotation, scorecardV1, scorecardDir)}, validator)
		}
		return
	}
	if config != scorecardDir {
		r.add(Finding{Level: LevelError, Object: annotationsPath, Field: testConfigAnnotation,
			Message: fmt.Sprintf("is %q", config), Fix: fmt.Sprintf("set it to %q", scorecardDir)}, validator)
	}
	if got := a[testMediaTypeAnnotation]; got != scorecardV1 {
		r.add(Finding{Level: LevelError, Object: annotationsPath, Field: testMediaTypeAnnotation,
			Message: fmt.Sprintf("is %q", got), Fix: fmt.Sprintf("set it to %q", scorecardV1)}, validator)
	}
	data, err := os.ReadFile(filepath.Join(dir, scorecardConfigPath))
	if err != nil {
		r.add(Finding{Level: LevelError, Object: scorecardConfigPath, Message: fmt.Sprintf("cannot read it: %v", err),
			Fix: "write the scorecard configuration there, or remove " + testConfigAnnotation}, validator)
		return
	}
	var u unstructured.Unstructured
	if err := yaml.Unmarshal(data, &u.Object); err != nil {
		r.add(Finding{Level: LevelError, Object: scorecardConfigPath, Message: fmt.Sprintf("is not YAML: %v", err)}, validator)
		return
	}
	if gvk := u.GroupVersionKind(); gvk.Group != "scorecard.operatorframework.io" || gvk.Kind != "Configuration" {
		r.add(Finding{Level: LevelError, Object: scorecardConfigPath, Field: "kind",
			Message: fmt.Sprintf("is %q, not a scorecard Configuration", gvk),
			Fix:     "make it apiVersion scorecard.operatorframework.io/v1alpha3, kind Configuration"}, validator)
	}
}

// checkObjects checks the objects other than the CSV and CRDs as operator-sdk
// does: a kind OLM installs, and metadata a kube-apiserver would accept.
func checkObjects(b *manifests.Bundle, r *Report) {
	const validator = "content"
	noNameCheck := func(string, bool) []string { return nil }
	for _, u := range b.Objects {
		gvk := u.GroupVersionKind()
		if gvk.Kind == "ClusterServiceVersion" || gvk.Kind == "CustomResourceDefinition" {
			continue
		}
		about := gvk.Kind + " " + u.GetName()
		if !supportedKinds[gvk.Kind] {
			r.add(Finding{Level: LevelError, Object: about, Field: "kind",
				Message: fmt.Sprintf("%s is not a kind OLM installs from a registry+v1 bundle", gvk.GroupKind()),
				Fix:     "remove it from manifests/: have the operator create it, or put it in the CSV's install strategy"}, validator)
		}
		// requiresNamespace false: a bundle's objects carry no namespace, OLM
		// installs them into the operator's.
		for _, e := range metavalidation.ValidateObjectMetaAccessor(u, false, noNameCheck, field.NewPath("metadata")) {
			f := Finding{Level: LevelError, Object: about, Field: e.Field, Message: e.ErrorBody()}
			if e.Field == "metadata.namespace" {
				f.Fix = "remove metadata.namespace: OLM installs the bundle's objects into the operator's namespace"
			}
			r.add(f, validator)
		}
	}
}

func splitChannels(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	channels := strings.Split(s, ",")
	for i := range channels {
		channels[i] = strings.TrimSpace(channels[i])
	}
	return channels
}
