package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
)

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Scheme knows Kubernetes' types, Trellis's and cert-manager's.
func Scheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(meshv1.AddToScheme(s))
	utilruntime.Must(cmapi.AddToScheme(s))
	return s
}

// moduleDir is where the Go module cache holds a dependency of this module.
func moduleDir(module string) (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module).Output()
	if err != nil {
		return "", fmt.Errorf("locating module %s (go list -m): %w", module, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Options choose what a test environment has besides Trellis's CRDs.
type Options struct {
	// CertManager installs cert-manager's CRDs, from the module this project builds against.
	CertManager bool
	// Webhooks installs the operator's webhook configurations from
	// config/webhook and serves them from the test process.
	Webhooks bool
}

// New returns an envtest Environment, not started, or an error that says how
// to get the binaries.
func New(opts Options) (*envtest.Environment, error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		return nil, fmt.Errorf("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, or set KUBEBUILDER_ASSETS=$(hack/build-k8s.sh | tail -n1)")
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			return nil, fmt.Errorf("KUBEBUILDER_ASSETS=%s has no %s: run hack/build-k8s.sh", assets, bin)
		}
	}
	root := RepoRoot()
	crds := []string{filepath.Join(root, "config", "crd", "bases")}
	if opts.CertManager {
		dir, err := moduleDir("github.com/cert-manager/cert-manager")
		if err != nil {
			return nil, err
		}
		crds = append(crds, filepath.Join(dir, "deploy", "crds"))
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     crds,
		ErrorIfCRDPathMissing: true,
		Scheme:                Scheme(),
	}
	if opts.Webhooks {
		env.WebhookInstallOptions = envtest.WebhookInstallOptions{
			Paths: []string{filepath.Join(root, "config", "webhook", "manifests.yaml")},
		}
	}
	return env, nil
}

// StartManager runs mgr until the returned stop is called; stop waits for it
// to end and reports how it ended. Calling stop again does nothing.
func StartManager(mgr manager.Manager) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				fmt.Fprintln(os.Stderr, "manager:", err)
			}
		})
	}
}

// Start starts a test environment and returns it, its config and a client
// that knows Trellis's and cert-manager's types. The caller stops env.
func Start(opts Options) (env *envtest.Environment, cfg *rest.Config, c client.Client, err error) {
	env, err = New(opts)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg, err = env.Start()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("starting envtest: %w", err)
	}
	c, err = client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		_ = env.Stop()
		return nil, nil, nil, err
	}
	return env, cfg, c, nil
}
