package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/test/testenv"
)

// Cluster runs kubectl and kustomize against the cluster of $KUBECONFIG.
type Cluster struct {
	Kubectl   string // kubectl's path
	Kustomize string // kustomize's path
}

// FromEnv is the cluster that hack/with-cluster.sh describes in KUBECONFIG,
// KUBECTL and KUSTOMIZE.
func FromEnv() (Cluster, error) {
	c := Cluster{Kubectl: os.Getenv("KUBECTL"), Kustomize: os.Getenv("KUSTOMIZE")}
	if os.Getenv("KUBECONFIG") == "" || c.Kubectl == "" || c.Kustomize == "" {
		return Cluster{}, errors.New("KUBECONFIG, KUBECTL and KUSTOMIZE must be set, as hack/with-cluster.sh sets them: run the tests with make")
	}
	return c, nil
}

// GatewayAPICRDs installs the experimental channel's HTTPRoute, GRPCRoute
// and ReferenceGrant CRDs of the Gateway API module this project builds
// against, so that the cluster serves the API the control plane reads. It
// must come before the Mesh: the control plane watches the routes from its
// start.
func (c Cluster) GatewayAPICRDs(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		return fmt.Errorf("locating module sigs.k8s.io/gateway-api (go list -m): %w", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "experimental")
	args := []string{"apply", "--server-side"}
	for _, kind := range []string{"httproutes", "grpcroutes", "referencegrants"} {
		args = append(args, "-f", filepath.Join(dir, "gateway.networking.k8s.io_"+kind+".yaml"))
	}
	if _, err := c.kubectl(ctx, args...); err != nil {
		return fmt.Errorf("installing the Gateway API's CRDs: %w", err)
	}
	return nil
}

// Operator installs the operator from a kustomization of config/
// ("default", which needs cert-manager, or "without-cert-manager"), as
// `kubectl apply -k config/<overlay>` does, and waits until it is
// available and the API server reaches its webhook.
func (c Cluster) Operator(ctx context.Context, overlay string) error {
	manifests, err := exec.CommandContext(ctx, c.Kustomize, "build", filepath.Join(testenv.RepoRoot(), "config", overlay)).Output()
	if err != nil {
		return fmt.Errorf("kustomize build config/%s: %w", overlay, err)
	}
	if _, err := c.kubectlStdin(ctx, string(manifests), "apply", "--server-side", "--force-conflicts", "-f", "-"); err != nil {
		return fmt.Errorf("installing the operator: %w", err)
	}
	if _, err := c.kubectl(ctx, "-n", "trellis-operator", "rollout", "status", "deployment/trellis-operator", "--timeout=180s"); err != nil {
		pods, _ := c.kubectl(ctx, "-n", "trellis-operator", "describe", "pods")
		return fmt.Errorf("the operator did not become available: %w\n%s%s", err, pods, c.certManagerState(ctx))
	}
	return c.waitForWebhook(ctx)
}

// waitForWebhook waits until the API server reaches the operator's webhook:
// a server-side dry run of a Mesh is answered by it, not by a failed call.
// The webhook's certificate must be in place (issued by the operator, or
// by cert-manager and its CA injected into the configuration), and
// kube-proxy must have the webhook Service's endpoint.
func (c Cluster) waitForWebhook(ctx context.Context) error {
	const probe = "apiVersion: mesh.trellis.dev/v1alpha1\nkind: Mesh\nmetadata:\n  name: probe\nspec: {}\n"
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := c.kubectlStdin(ctx, probe, "apply", "--dry-run=server", "-f", "-")
		if err == nil || !strings.Contains(out, "failed calling webhook") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the API server cannot reach the operator's webhook after 60s: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// SampleMesh applies config/samples/mesh_v1alpha1_mesh.yaml, the Mesh
// "default" that serves namespaces labeled trellis-injection=enabled, and
// waits until it is Ready. When it is not, the error carries the Mesh, the
// control plane's pods and the end of its logs.
func (c Cluster) SampleMesh(ctx context.Context) error {
	if _, err := c.kubectl(ctx, "apply", "-f", filepath.Join(testenv.RepoRoot(), "config", "samples", "mesh_v1alpha1_mesh.yaml")); err != nil {
		return fmt.Errorf("applying the sample Mesh: %w", err)
	}
	if _, err := c.kubectl(ctx, "wait", "mesh/default", "--for=condition=Ready", "--timeout=180s"); err != nil {
		mesh, _ := c.kubectl(ctx, "get", "mesh", "default", "-o", "yaml")
		pods, _ := c.kubectl(ctx, "-n", "trellis-system", "get", "pods", "-o", "wide")
		logs, _ := c.kubectl(ctx, "-n", "trellis-system", "logs", "deployment/trellis-controlplane", "--tail=30")
		return fmt.Errorf("the Mesh default is not Ready: %w\n%s\n%s\n%s", err, mesh, pods, logs)
	}
	return nil
}

// kubectl runs kubectl; its error holds the command and its output.
func (c Cluster) kubectl(ctx context.Context, args ...string) (string, error) {
	return c.kubectlStdin(ctx, "", args...)
}

func (c Cluster) kubectlStdin(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.Kubectl, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
