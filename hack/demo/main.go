// Command demo shows Trellis's operator at work on this machine, with no
// cluster: it starts a real kube-apiserver and etcd, installs the CRDs and the
// webhook configuration, runs the operator binary (bin/manager) against them,
// applies the sample Mesh and prints what the operator made of it.
//
// There is no kubelet, so the control plane's pods never run: the Mesh stays
// not Ready with ControlPlaneReady False, and says so. `make cluster-up` (a
// later issue) brings a whole node.
//
// Run by `make demo`, which builds what it needs first.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/trellis-mesh/trellis/test/testenv"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func run() error {
	root := testenv.RepoRoot()
	state := filepath.Join(root, ".demo")
	if err := os.MkdirAll(state, 0o755); err != nil {
		return err
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	kubectlBin := filepath.Join(assets, "kubectl")
	manager := filepath.Join(root, "bin", "manager")
	if _, err := os.Stat(manager); err != nil {
		return fmt.Errorf("%s is missing: run `make demo`, which builds it", manager)
	}

	step("starting kube-apiserver and etcd (%s)", assets)
	env, err := testenv.New(testenv.Options{Webhooks: true})
	if err != nil {
		return err
	}
	start := time.Now()
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting the API server: %w", err)
	}
	defer func() {
		step("stopping the API server")
		_ = env.Stop()
	}()
	fmt.Printf("API server at %s, ready in %s; CRDs and the Mesh webhook configuration installed\n", cfg.Host, time.Since(start).Round(time.Millisecond))

	user, err := env.AddUser(envtest.User{Name: "demo-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kubeconfigBytes, err := user.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(state, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kubeconfigBytes, 0o600); err != nil {
		return err
	}

	step("starting the operator: %s (log: .demo/operator.log)", manager)
	wh := env.WebhookInstallOptions
	logFile, err := os.Create(filepath.Join(state, "operator.log"))
	if err != nil {
		return err
	}
	defer func() { _ = logFile.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	op := exec.CommandContext(ctx, manager,
		fmt.Sprintf("--webhook-port=%d", wh.LocalServingPort),
		"--webhook-cert-dir="+wh.LocalServingCertDir,
		"--metrics-bind-address=0",
		"--health-probe-bind-address=127.0.0.1:18081",
	)
	op.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	op.Stdout, op.Stderr = logFile, logFile
	// Ask the operator to stop, as its Deployment would, rather than kill it.
	op.Cancel = func() error { return op.Process.Signal(syscall.SIGTERM) }
	op.WaitDelay = 10 * time.Second
	if err := op.Start(); err != nil {
		return err
	}
	defer func() { cancel(); _ = op.Wait() }()
	if err := waitHTTP("http://127.0.0.1:18081/readyz", 60*time.Second); err != nil {
		return fmt.Errorf("the operator did not become ready (see .demo/operator.log): %w", err)
	}
	fmt.Printf("operator ready (pid %d)\n", op.Process.Pid)

	kubectl := func(args ...string) (string, error) {
		c := exec.Command(kubectlBin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		out, err := c.CombinedOutput()
		return string(out), err
	}
	show := func(args ...string) {
		fmt.Printf("$ kubectl %s\n", strings.Join(args, " "))
		out, _ := kubectl(args...)
		fmt.Print(out)
	}

	step("applying the sample Mesh")
	show("apply", "-f", filepath.Join(root, "config", "samples", "mesh_v1alpha1_mesh.yaml"))
	if out, err := kubectl("wait", "mesh/default", "--for=condition=CAReady", "--timeout=60s"); err != nil {
		return fmt.Errorf("the Mesh's CA did not become ready: %s", out)
	}

	step("the Mesh and its status")
	show("get", "mesh")
	show("get", "mesh", "default", "-o",
		`jsonpath={range .status.conditions[*]}{.type}{"\t"}{.status}{"\t"}{.reason}{"\t"}{.message}{"\n"}{end}`)

	step("what the operator created")
	show("-n", "trellis-system", "get", "deployment,service,serviceaccount,poddisruptionbudget,role,rolebinding,secret,configmap",
		"-l", "app.kubernetes.io/managed-by=trellis-operator")
	show("get", "clusterrole,clusterrolebinding", "-l", "mesh.trellis.dev/owner=default")

	step("a namespace labeled for the mesh gets the trust bundle")
	show("create", "namespace", "shop")
	show("label", "namespace", "shop", "trellis-injection=enabled")
	if out, err := kubectl("-n", "shop", "wait", "configmap/trellis-ca-bundle", "--for=create", "--timeout=30s"); err != nil {
		return fmt.Errorf("no trust bundle in the labeled namespace: %s", out)
	}
	show("-n", "shop", "get", "configmap", "trellis-ca-bundle")

	step("an invalid Mesh is refused, naming the field and the fix")
	bad := `apiVersion: mesh.trellis.dev/v1alpha1
kind: Mesh
metadata:
  name: second
spec:
  namespace: trellis-system
`
	badFile := filepath.Join(state, "invalid-mesh.yaml")
	if err := os.WriteFile(badFile, []byte(bad), 0o644); err != nil {
		return err
	}
	show("apply", "-f", badFile)

	fmt.Println(`
The control plane's Deployment exists but has no pods: this demo runs an API
server, not a node, so ControlPlaneReady stays False and the Mesh not Ready,
as its status says. Try it yourself while the demo runs:

  export KUBECONFIG=` + kubeconfig + `
  ` + kubectlBin + ` get mesh default -o yaml`)

	if term.IsTerminal(int(os.Stdin.Fd())) {
		fmt.Println("\nPress Ctrl-C to stop the demo.")
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
	}
	return nil
}

func waitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url) //nolint:gosec // the demo's own operator on loopback
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return errors.New("timed out waiting for " + url)
}
