package webhooks

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/trellis-mesh/trellis/test/testenv"
)

// One API server for the package, calling the operator's webhooks served by
// this test process, as config/webhook configures them. No controller runs.
var (
	cfg        *rest.Config
	k8sClient  client.Client
	testCtx    context.Context
	webhookOpt envtest.WebhookInstallOptions
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

	scheme := testenv.Scheme()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    webhookOpt.LocalServingHost,
			Port:    webhookOpt.LocalServingPort,
			CertDir: webhookOpt.LocalServingCertDir,
			TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
		}),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := SetupMeshWebhook(mgr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := testenv.StartManager(mgr)
	defer stop()
	testCtx = ctx
	// Wait for the webhook server before any test writes a Mesh.
	if err := waitForWebhook(ctx, mgr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
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
