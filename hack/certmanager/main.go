// Command cert-manager runs cert-manager's controller and CA injector for
// Trellis's local cluster, built from cert-manager's own Go packages
// (github.com/cert-manager/cert-manager on the Go module proxy). The
// programs cert-manager ships (cmd/controller, cmd/cainjector) are separate
// Go modules whose tags the module proxy cannot serve, so this command
// assembles the same parts: the controller's registered control loops over
// its ContextFactory, and the CA injector's reconcilers on a
// controller-runtime manager. It runs the loops that config/default needs
// (Issuers, ClusterIssuers, the Certificate life cycle, the approver, the
// self-signed and CA issuers) and no ACME, Vault or Venafi issuer, no
// ingress or Gateway shim, and no webhook: cert-manager's own admission
// webhook only validates cert-manager's objects, and Trellis's test
// install applies none that are invalid.
//
//	cert-manager controller [--cluster-resource-namespace cert-manager]
//	cert-manager cainjector
//
// hack/build-cert-manager.sh builds it; test/install.CertManager deploys
// it with cert-manager's CRDs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/controller/cainjector"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"

	// The control loops below register themselves with the controller
	// package, and the issuers with the issuer package, when imported.
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

// controllers are the control loops the controller runs, by the names
// they register under.
var controllers = []string{
	"issuers",
	"clusterissuers",
	"certificates-trigger",
	"certificates-key-manager",
	"certificates-request-manager",
	"certificates-issuing",
	"certificates-readiness",
	"certificates-revision-manager",
	"certificaterequests-approver",
	"certificaterequests-issuer-selfsigned",
	"certificaterequests-issuer-ca",
}

const usage = `usage: cert-manager controller [flags] | cert-manager cainjector [flags]`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	klog.InitFlags(nil)
	ctrl.SetLogger(klog.NewKlogr())
	ctx = logf.NewContext(ctx, klog.NewKlogr())

	var err error
	switch os.Args[1] {
	case "controller":
		err = runController(ctx, os.Args[2:])
	case "cainjector":
		err = runCAInjector(ctx, os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "cert-manager: unknown component %q\n%s\n", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "cert-manager:", err)
		os.Exit(1)
	}
}

func runController(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cert-manager controller", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file; in a pod, the pod's ServiceAccount")
	clusterNS := fs.String("cluster-resource-namespace", "cert-manager", "namespace of the Secrets that ClusterIssuers read")
	workers := fs.Int("workers", 2, "workers per control loop")
	_ = fs.Parse(args)

	factory, err := controller.NewContextFactory(ctx, controller.ContextOptions{
		Kubeconfig:         *kubeconfig,
		KubernetesAPIQPS:   20,
		KubernetesAPIBurst: 50,
		IssuerOptions:      controller.IssuerOptions{ClusterResourceNamespace: *clusterNS},
		CertificateOptions: controller.CertificateOptions{
			// cert-manager's defaults.
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	})
	if err != nil {
		return err
	}
	loops := make([]controller.Interface, 0, len(controllers))
	for _, name := range controllers {
		newLoop, ok := controller.Known()[name]
		if !ok {
			return fmt.Errorf("control loop %q is not registered: its package is not imported", name)
		}
		loop, err := newLoop(factory)
		if err != nil {
			return fmt.Errorf("control loop %s: %w", name, err)
		}
		loops = append(loops, loop)
	}
	// The loops asked the shared informers for what they watch while they
	// were made; start the informers now, as cert-manager's controller does.
	cctx, err := factory.Build()
	if err != nil {
		return err
	}
	cctx.KubeSharedInformerFactory.Start(ctx.Done())
	cctx.SharedInformerFactory.Start(ctx.Done())
	cctx.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())

	g, gctx := errgroup.WithContext(ctx)
	for i, loop := range loops {
		g.Go(func() error {
			if err := loop.Run(*workers, gctx); err != nil {
				return fmt.Errorf("control loop %s: %w", controllers[i], err)
			}
			return nil
		})
	}
	klog.InfoS("cert-manager controller running", "loops", controllers)
	return g.Wait()
}

func runCAInjector(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cert-manager cainjector", flag.ExitOnError)
	_ = fs.Parse(args)

	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextv1.AddToScheme, cmapi.AddToScheme} {
		if err := add(scheme); err != nil {
			return err
		}
	}
	// The injectors apply their patches with the user agent's first word
	// as field manager: it must not be empty.
	cfg := util.RestConfigWithUserAgent(ctrl.GetConfigOrDie(), "cainjector")
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		// The injectors watch only the Secrets' metadata and read their
		// data from the API server, as cert-manager's cainjector does.
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
	})
	if err != nil {
		return err
	}
	if err := cainjector.RegisterAllInjectors(ctx, mgr, cainjector.SetupOptions{
		EnableCertificatesDataSource: true,
		EnabledReconcilersFor: map[string]bool{
			cainjector.MutatingWebhookConfigurationName:   true,
			cainjector.ValidatingWebhookConfigurationName: true,
			cainjector.CustomResourceDefinitionName:       true,
		},
	}); err != nil {
		return err
	}
	klog.InfoS("cert-manager cainjector running")
	return mgr.Start(ctx)
}
