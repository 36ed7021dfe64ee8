//go:build conformance

package conformance

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	gwconformance "sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/kubernetes"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/test/install"
	"github.com/trellis-mesh/trellis/version"
)

// claimedFeatures are the features Trellis claims, each of which turns on
// the suite's tests of it. They are listed in full: given none, the suite
// infers them from a GatewayClass's or an XMesh's status, which Trellis does
// not publish. A feature whose test fails comes off this list, or the proxy
// is fixed.
var claimedFeatures = []features.FeatureName{
	// The profiles' core.
	features.SupportMesh,
	features.SupportHTTPRoute,
	features.SupportGRPCRoute,

	// Extended: both profiles' reports list them and count their tests.
	features.SupportMeshHTTPRouteQueryParamMatching,
	features.SupportMeshHTTPRouteRedirectPath,
	features.SupportMeshHTTPRouteRedirectPort,
	features.SupportMeshHTTPRouteSchemeRedirect,
	features.SupportMeshHTTPRouteBackendRequestHeaderModification,
	features.SupportMeshHTTPRouteRewritePath,

	// Extended too, but their tests (MeshConsumerRoute, MeshFrontendHostname)
	// also need HTTPRouteResponseHeaderModification, which is in neither
	// profile: the reports list these features and count their tests
	// nowhere. The test log has the results.
	features.SupportMeshConsumerRoute,     // a route in the caller's namespace applies to its calls only
	features.SupportMeshClusterIPMatching, // a route applies to calls to the Service's ClusterIP too

	// HTTPRoute features in neither mesh profile, which the tests above and
	// MeshFrontend and MeshPorts (a parentRef's port) need.
	features.SupportHTTPRouteResponseHeaderModification,
	features.SupportHTTPRouteParentRefPort,
}

func TestMain(m *testing.M) {
	if err := installTrellis(); err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// installTrellis installs what a user of Trellis's GAMMA routes has: the
// Gateway API's CRDs (before the Mesh, whose control plane watches the
// routes from its start), the operator and a Mesh. The operator comes from
// the OLM bundle, installed as OLM would (test/e2e installs it with
// kustomize): the suite's meshed echo pods are then the bundle's proof too.
func installTrellis() error {
	cluster, err := install.FromEnv()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, step := range []func(context.Context) error{cluster.GatewayAPICRDs, cluster.OperatorFromBundle, cluster.SampleMesh} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

func TestMeshConformance(t *testing.T) {
	// DefaultOptions parses the suite's flags and makes its clients for
	// $KUBECONFIG; what the flags left unset is Trellis's.
	opts := gwconformance.DefaultOptions(t)
	opts.GatewayClassName = ""
	if len(opts.ConformanceProfiles) == 0 {
		opts.ConformanceProfiles = []suite.ConformanceProfileName{suite.MeshHTTPConformanceProfileName, suite.MeshGRPCConformanceProfileName}
	}
	if len(opts.SupportedFeatures) == 0 && !opts.EnableAllSupportedFeatures {
		opts.SupportedFeatures = claimedFeatures
	}
	if opts.NamespaceLabels == nil {
		opts.NamespaceLabels = map[string]string{}
	}
	// The suite's namespaces are in the Mesh "default": their pods get sidecars.
	opts.NamespaceLabels[meshv1.InjectionLabel] = "enabled"
	impl := &opts.Implementation
	impl.Organization = cmp.Or(impl.Organization, "trellis-mesh")
	impl.Project = cmp.Or(impl.Project, "trellis")
	impl.URL = cmp.Or(impl.URL, "https://github.com/trellis-mesh/trellis")
	impl.Version = cmp.Or(impl.Version, version.Version)
	if len(impl.Contact) == 0 {
		impl.Contact = []string{"https://github.com/trellis-mesh/trellis/issues"}
	}
	if err := impl.Validate(); err != nil {
		t.Fatalf("the report's implementation details: %v", err)
	}

	s, err := suite.NewConformanceTestSuite(opts)
	if err != nil {
		t.Fatalf("creating the conformance suite: %v", err)
	}
	// The mesh half of the suite's Setup (see the package's doc).
	s.Applier.ManifestFS = s.ManifestFS
	s.Applier.MustApplyWithCleanup(t, s.Client, s.TimeoutConfig, s.MeshManifests, s.Cleanup)
	kubernetes.MeshNamespacesMustBeReady(t, s.Client, s.TimeoutConfig, []string{suite.MeshNamespace, suite.MeshConsumerNamespace})

	if err := s.Run(t, tests.ConformanceTests); err != nil {
		t.Fatalf("running the conformance suite: %v", err)
	}
	report, err := s.Report()
	if err != nil {
		t.Fatalf("making the conformance report: %v", err)
	}
	writeReport(t, report, opts.ReportOutputPath)
}

// writeReport logs the report and writes it to path, if one is given, as
// the suite's RunConformanceWithOptions does.
func writeReport(t *testing.T, report *confv1.ConformanceReport, path string) {
	t.Helper()
	raw, err := yaml.Marshal(report)
	if err != nil {
		t.Fatalf("encoding the conformance report: %v", err)
	}
	t.Logf("conformance report:\n%s", raw)
	if path == "" {
		return
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatalf("writing the conformance report: %v", err)
	}
	t.Logf("conformance report written to %s", path)
}
