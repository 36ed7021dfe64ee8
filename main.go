// Command manager is the Trellis operator: it reconciles Mesh objects and
// serves the operator's admission webhooks.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/controllers"
	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/kubeversion"
	"github.com/trellis-mesh/trellis/version"
	"github.com/trellis-mesh/trellis/webhookcert"
	"github.com/trellis-mesh/trellis/webhooks"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "trellis-operator:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		metricsAddr     string
		probeAddr       string
		webhookPort     int
		certDir         string
		webhookSvc      string
		webhookCfg      string
		webhookSelector string
		leaderElect     bool
		image           string
		imageVersion    string
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "address of the metrics endpoint; 0 disables it")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	flag.IntVar(&webhookPort, "webhook-port", 9443, "port of the admission webhook server")
	flag.StringVar(&certDir, "webhook-cert-dir", filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs"),
		"directory with the webhook's tls.crt and tls.key; when empty at start, in a cluster, the operator issues its own")
	flag.StringVar(&webhookSvc, "webhook-service", "trellis-webhook-service", "the webhook's Service, in the operator's namespace: the name its own certificate is for")
	flag.StringVar(&webhookCfg, "validating-webhook-configuration", "trellis-validating-webhook-configuration", "the ValidatingWebhookConfiguration whose caBundle an operator-issued certificate goes into")
	flag.StringVar(&webhookSelector, "validating-webhook-selector", "", "find the operator's ValidatingWebhookConfiguration, whose caBundle the sidecar injector shares, by these labels rather than by name: "+
		"under OLM, which names it itself, olm.webhook-description-generate-name=vmesh.trellis.dev")
	flag.BoolVar(&leaderElect, "leader-elect", false, "elect a leader, so only one operator replica reconciles")
	flag.StringVar(&image, "image", version.Image, "image repository of the control plane and proxy, when a Mesh names none")
	flag.StringVar(&imageVersion, "image-version", version.Version, "image tag of the control plane and proxy, when a Mesh names none")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	setupLog := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(meshv1.AddToScheme(scheme))
	utilruntime.Must(cmapi.AddToScheme(scheme))

	// HTTP/2 stays off on the webhook and metrics servers: the rapid-reset
	// and stream-cancellation CVEs made that the Kubernetes projects' default.
	noHTTP2 := func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }

	restConfig := ctrl.GetConfigOrDie()
	vwcRef := controllers.ValidatingWebhookRef{Name: webhookCfg}
	if webhookSelector != "" {
		sel, err := labels.Parse(webhookSelector)
		if err != nil {
			return fmt.Errorf("--validating-webhook-selector %q is not a label selector (such as olm.webhook-description-generate-name=vmesh.trellis.dev): %w", webhookSelector, err)
		}
		vwcRef = controllers.ValidatingWebhookRef{Selector: sel}
	}

	// Neither cert-manager nor OLM mounted a certificate: issue one, before
	// the webhook server starts and looks for it.
	var provisioner *webhookcert.Provisioner
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" && !webhookcert.HasExternalCertificate(certDir) {
		c, err := client.New(restConfig, client.Options{Scheme: scheme})
		if err != nil {
			return err
		}
		provisioner = &webhookcert.Provisioner{
			Client: c, Namespace: ns, ServiceName: webhookSvc, SecretName: "trellis-webhook-serving",
			CertDir: certDir, ValidatingWebhooks: []string{webhookCfg},
		}
		if err := provisioner.Ensure(context.Background()); err != nil {
			return fmt.Errorf("issuing the webhook serving certificate: %w", err)
		}
		setupLog.Info("serving webhooks with a certificate the operator issued", "dir", certDir)
	}

	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  controllers.CacheOptions(vwcRef),
		Metrics:                metricsserver.Options{BindAddress: metricsAddr, TLSOpts: []func(*tls.Config){noHTTP2}},
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "trellis-operator.mesh.trellis.dev",
		WebhookServer: webhook.NewServer(webhook.Options{
			Port:    webhookPort,
			CertDir: certDir,
			TLSOpts: []func(*tls.Config){noHTTP2},
		}),
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}

	if provisioner != nil {
		if err := mgr.Add(provisioner); err != nil {
			return err
		}
	}

	certManager, err := servesKind(mgr.GetRESTMapper(), schema.GroupKind{Group: cmapi.SchemeGroupVersion.Group, Kind: cmapi.CertificateKind})
	if err != nil {
		return err
	}
	setupLog.Info("starting", "version", version.Version, "certManager", certManager)

	minor, err := kubeversion.Minor(restConfig)
	if err != nil {
		return err
	}
	injectCfg := inject.Config{ProxyImage: image + ":" + imageVersion, Version: imageVersion, KubernetesMinor: minor}
	// The API server can call the injector only where the operator runs in
	// the cluster, behind its webhook Service.
	var injector controllers.Injector
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		injector = controllers.Injector{
			Service:           &client.ObjectKey{Namespace: ns, Name: webhookSvc},
			CABundle:          controllers.ValidatingWebhookCABundle(mgr.GetClient(), vwcRef),
			ValidatingWebhook: vwcRef,
			Config:            injectCfg,
		}
	} else {
		setupLog.Info("POD_NAMESPACE is not set: running outside the cluster, so no sidecar injection is configured")
	}

	if err := (&controllers.MeshReconciler{
		Client:      mgr.GetClient(),
		Recorder:    mgr.GetEventRecorder("trellis-operator"),
		Images:      controllers.Images{Repository: image, Version: imageVersion},
		CertManager: certManager,
		Injector:    injector,
		APIReader:   mgr.GetAPIReader(),
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the Mesh controller: %w", err)
	}
	if err := webhooks.SetupMeshWebhook(mgr); err != nil {
		return fmt.Errorf("setting up the Mesh webhook: %w", err)
	}
	webhooks.SetupPodInjector(mgr, injectCfg)

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return err
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}

// servesKind reports whether the API server serves a kind, such as
// cert-manager's Certificate, which is optional.
func servesKind(mapper meta.RESTMapper, gk schema.GroupKind) (bool, error) {
	_, err := mapper.RESTMapping(gk)
	switch {
	case err == nil:
		return true, nil
	case meta.IsNoMatchError(err):
		return false, nil
	default:
		return false, fmt.Errorf("discovering %s: %w", gk, err)
	}
}
