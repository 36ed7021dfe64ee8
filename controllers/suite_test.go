package controllers

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/test/testenv"
)

// One API server for the package, with the operator's Mesh controller
// running against it as it runs in a cluster: same cache restrictions, same
// field owner, injection configured. There is no kube-controller-manager, so
// no garbage collector and no Deployment controller: tests patch Deployment
// status themselves, and create the ReplicaSets and pods of workloads.
var (
	cfg       *rest.Config
	k8sClient client.Client
	clock     = &testClock{}
	testCtx   context.Context
)

// testClock is the reconciler's clock; tests move it to reach rotation times.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapLevel())))
	env, c, kc, err := testenv.Start(testenv.Options{CertManager: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg, k8sClient = c, kc
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}()

	scheme := testenv.Scheme()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Cache:   CacheOptions(ValidatingWebhookRef{}),
		Metrics: metricsserver.Options{BindAddress: "0"},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := (&MeshReconciler{
		Client:      mgr.GetClient(),
		APIReader:   mgr.GetAPIReader(),
		Recorder:    mgr.GetEventRecorder("trellis-operator"),
		Images:      Images{Repository: "example.test/trellis", Version: "v9.9.9"},
		Now:         clock.Now,
		CertManager: true,
		// So that Meshes count their pods and restart their workloads.
		// Nothing serves the URL: the tests here create meshed pods, labeled
		// as the injector labels them, only in namespaces that no Mesh's
		// webhook selects. The webhooks package tests injection itself.
		Injector: Injector{
			URL:      "https://127.0.0.1:1" + InjectorPath,
			CABundle: func(context.Context) ([]byte, error) { return []byte("test CA"), nil },
			Config:   inject.Config{ProxyImage: "example.test/trellis:v9.9.9", KubernetesMinor: 37},
		},
	}).SetupWithManager(mgr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := testenv.StartManager(mgr)
	defer stop()
	testCtx = ctx
	return m.Run()
}

// zapLevel keeps the operator's logs to errors unless TRELLIS_TEST_VERBOSE is set.
func zapLevel() zapcore.Level {
	if os.Getenv("TRELLIS_TEST_VERBOSE") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}
