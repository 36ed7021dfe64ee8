package webhooks

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/trellis-mesh/trellis/controllers"
	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/test/testenv"
)

// One API server for the package, calling the operator's webhooks served by
// this test process: the Mesh webhook as config/webhook configures it, and
// the injector as the Mesh controller, which runs here too, configures it.
var (
	cfg        *rest.Config
	k8sClient  client.Client
	testCtx    context.Context
	webhookOpt envtest.WebhookInstallOptions
	// stopOperator stops the manager that TestMain started.
	stopOperator func()
	// injectorCalls counts the admissions that reached the injector.
	injectorCalls atomic.Int64
	// testInjectConfig is the operator's default proxy and cluster version.
	testInjectConfig = inject.Config{ProxyImage: "ghcr.io/trellis-mesh/trellis:v0.1.0", KubernetesMinor: 37}
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	env, c, kc, err := testenv.Start(testenv.Options{CertManager: true, Webhooks: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg, k8sClient = c, kc
	defer func() { _ = env.Stop() }()
	webhookOpt = env.WebhookInstallOptions

	ctx, stop, err := startOperator()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	testCtx, stopOperator = ctx, stop
	defer func() { stopOperator() }()
	return m.Run()
}

// injectorURL is where the API server calls the injector in these tests.
func injectorURL() string {
	return "https://" + webhookOpt.LocalServingHost + ":" + strconv.Itoa(webhookOpt.LocalServingPort) + controllers.InjectorPath
}

// countingHandler counts the admissions that reach the injector.
type countingHandler struct{ admission.Handler }

func (h countingHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	injectorCalls.Add(1)
	return h.Handler.Handle(ctx, req)
}

// startOperator runs what the operator's main runs: the Mesh controller,
// with injection configured to call this process, the Mesh webhook and the
// injector. It returns once the webhook server answers.
func startOperator() (context.Context, func(), error) {
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  testenv.Scheme(),
		Cache:   controllers.CacheOptions(controllers.ValidatingWebhookRef{}),
		Metrics: metricsserver.Options{BindAddress: "0"},
		// A test stops the operator and starts another in the same process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    webhookOpt.LocalServingHost,
			Port:    webhookOpt.LocalServingPort,
			CertDir: webhookOpt.LocalServingCertDir,
			TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
		}),
	})
	if err != nil {
		return nil, nil, err
	}
	if err := (&controllers.MeshReconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("trellis-operator"),
		Images:   controllers.Images{Repository: "ghcr.io/trellis-mesh/trellis", Version: "v0.1.0"},
		Injector: controllers.Injector{
			URL:      injectorURL(),
			CABundle: func(context.Context) ([]byte, error) { return webhookOpt.LocalServingCAData, nil },
			Config:   testInjectConfig,
		},
	}).SetupWithManager(mgr); err != nil {
		return nil, nil, err
	}
	if err := SetupMeshWebhook(mgr); err != nil {
		return nil, nil, err
	}
	mgr.GetWebhookServer().Register(controllers.InjectorPath, &webhook.Admission{Handler: countingHandler{&PodInjector{
		Cache:     mgr.GetCache(),
		APIReader: mgr.GetAPIReader(),
		Config:    testInjectConfig,
		Recorder:  mgr.GetEventRecorder("trellis-injector"),
	}}})
	ctx, stop := testenv.StartManager(mgr)
	// Wait for the webhook server before any test writes a Mesh.
	if err := waitForWebhook(ctx, mgr); err != nil {
		stop()
		return nil, nil, err
	}
	return ctx, stop, nil
}

func waitForWebhook(ctx context.Context, mgr ctrl.Manager) error {
	check := mgr.GetWebhookServer().StartedChecker()
	for i := 0; i < 200; i++ {
		if err := check(nil); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("the webhook server did not start")
}
