// Command bundlegen writes Trellis's OLM bundle (registry+v1, laid out as
// operator-sdk's `generate bundle` lays it out) from `kustomize build
// config/manifests` on its standard input and the API types' source:
//
//	bundle/manifests/trellis.clusterserviceversion.yaml  the CSV
//	bundle/manifests/<group>_<plural>.yaml              the CRDs
//	bundle/manifests/<name>_<apiVersion>_<kind>.yaml    other objects OLM installs
//	bundle/metadata/annotations.yaml                    package, channels
//	bundle/tests/scorecard/config.yaml                  config/scorecard
//	bundle.Dockerfile                                   labels = annotations
//
// The CSV is config/manifests/bases' with the rest filled in: the
// Deployment (every container runs IMAGE:VERSION, and the operator's
// --image and --image-version name the same), the rules bound to its
// ServiceAccount (ClusterRoleBindings to clusterPermissions, RoleBindings
// to permissions), the webhook configurations as webhookdefinitions, the
// owned CRDs with the descriptors of the API's +operator-sdk:csv markers,
// the samples as alm-examples, and relatedImages. What went into the CSV
// is not written again; the Namespace is dropped, as OLM installs into the
// OperatorGroup's; anything else OLM cannot install from a bundle is an
// error.
//
// The output depends on nothing but the input: no timestamps (no
// createdAt), sorted keys and lists, and the bundle's directories are
// replaced as a whole, so `make bundle` twice gives no diff.
//
// It is not operator-sdk, which cannot be installed here; it uses the same
// CSV types (github.com/operator-framework/api) and markers.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/version"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bundlegen:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		opts    options
		input   string
		apis    string
		project string
		outDir  string
	)
	flag.StringVar(&opts.version, "version", version.Version, "the bundle's version (the Makefile's VERSION): the CSV's, and the image tag")
	flag.StringVar(&opts.image, "image", version.Image, "the repository of the Trellis image (the Makefile's IMAGE)")
	flag.StringVar(&opts.channels, "channels", "candidate", "the bundle's channels, comma-separated")
	flag.StringVar(&opts.defaultChannel, "default-channel", "candidate", "the bundle's default channel")
	flag.StringVar(&input, "input", "-", "`kustomize build config/manifests` output; - for standard input")
	flag.StringVar(&apis, "apis", "apis/mesh/v1alpha1", "directories of the API types, comma-separated: their doc comments and +operator-sdk:csv markers")
	flag.StringVar(&project, "project", "PROJECT", "the kubebuilder PROJECT file: the package name and layout")
	flag.StringVar(&outDir, "output-dir", ".", "the repository root, where bundle/ and bundle.Dockerfile go")
	flag.Parse()

	var p struct {
		ProjectName string   `json:"projectName"`
		Layout      []string `json:"layout"`
	}
	data, err := os.ReadFile(project)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(data, &p); err != nil {
		return fmt.Errorf("%s: %w", project, err)
	}
	if p.ProjectName == "" || len(p.Layout) == 0 {
		return fmt.Errorf("%s names no projectName or layout", project)
	}
	opts.packageName, opts.layout = p.ProjectName, strings.Join(p.Layout, ",")

	var r io.Reader = os.Stdin
	if input != "-" {
		f, err := os.Open(input)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		r = f
	}
	objs, err := readObjects(r)
	if err != nil {
		return fmt.Errorf("reading the manifests: %w", err)
	}
	api, err := loadAPI(strings.Split(apis, ",")...)
	if err != nil {
		return err
	}
	files, err := generate(objs, api, opts)
	if err != nil {
		return err
	}
	return writeFiles(outDir, files)
}
