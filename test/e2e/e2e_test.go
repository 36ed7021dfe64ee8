//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/test/install"
	"github.com/trellis-mesh/trellis/test/sampleapp/loadgen"
	"github.com/trellis-mesh/trellis/test/testenv"
)

var (
	kubectlBin, kustomizeBin string
	cluster                  install.Cluster
)

func TestMain(m *testing.M) {
	var err error
	if cluster, err = install.FromEnv(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	kubectlBin, kustomizeBin = cluster.Kubectl, cluster.Kustomize
	// The route CRDs come before the Mesh: its control plane looks for the
	// route kinds when it starts.
	if err := cluster.GatewayAPICRDs(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// kubectl runs kubectl and fails the test with its output on error.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectlErr(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func kubectlErr(args ...string) (string, error) {
	out, err := exec.Command(kubectlBin, args...).CombinedOutput()
	return string(out), err
}

func kubectlApply(t *testing.T, manifest string) {
	t.Helper()
	cmd := exec.Command(kubectlBin, "apply", "--server-side", "--force-conflicts", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

func kustomize(t *testing.T, dir string) string {
	t.Helper()
	out, err := exec.Command(kustomizeBin, "build", filepath.Join(testenv.RepoRoot(), dir)).Output()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return string(out)
}

// The tests run in order: each builds on what the one before installed.

func TestOperatorInstalledFromManifests(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	// config/default, as the README's kubectl apply -k: cert-manager
	// (installed first, as a user's cluster has it) issues the webhook's
	// serving certificate and its CA injector puts the CA in the webhook
	// configuration; the API server calls the webhook over TLS once
	// kube-proxy has the webhook Service's endpoint.
	if err := cluster.CertManager(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("cert-manager available %.1fs after kubectl apply", time.Since(start).Seconds())
	start = time.Now()
	if err := cluster.Operator(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	t.Logf("operator available, its webhook reached, %.1fs after kubectl apply -k config/default", time.Since(start).Seconds())
	// The certificate the webhook serves is cert-manager's, and the
	// caBundle the API server trusts is the CA cert-manager injected.
	kubectl(t, "-n", "trellis-operator", "wait", "certificate/trellis-webhook-serving", "--for=condition=Ready", "--timeout=60s")
	issuer := kubectl(t, "-n", "trellis-operator", "get", "secret", "webhook-serving-cert",
		"-o", "jsonpath={.metadata.annotations.cert-manager\\.io/issuer-name}")
	if issuer != "trellis-selfsigned" {
		t.Errorf("webhook serving Secret issued by %q, want cert-manager's Issuer trellis-selfsigned", issuer)
	}
	ca := kubectl(t, "-n", "trellis-operator", "get", "secret", "webhook-serving-cert", "-o", "jsonpath={.data.ca\\.crt}")
	bundle := kubectl(t, "get", "validatingwebhookconfiguration", "trellis-validating-webhook-configuration",
		"-o", "jsonpath={.webhooks[0].clientConfig.caBundle}")
	if strings.TrimSpace(bundle) == "" || strings.TrimSpace(bundle) != strings.TrimSpace(ca) {
		t.Fatalf("the webhook configuration's caBundle (%d bytes) is not cert-manager's CA (%d bytes)", len(bundle), len(ca))
	}
}

func TestMeshBecomesReadyWithItsControlPlaneRunning(t *testing.T) {
	start := time.Now()
	kubectl(t, "apply", "-f", filepath.Join(testenv.RepoRoot(), "config", "samples", "mesh_v1alpha1_mesh.yaml"))
	if out, err := kubectlErr("wait", "mesh/default", "--for=condition=Ready", "--timeout=180s"); err != nil {
		t.Log(kubectlErr("get", "mesh", "default", "-o", "yaml"))
		t.Log(kubectlErr("-n", "trellis-system", "get", "pods", "-o", "wide"))
		t.Log(kubectlErr("-n", "trellis-system", "logs", "deployment/trellis-controlplane", "--tail=30"))
		t.Fatalf("Mesh not Ready: %v %s", err, out)
	}
	t.Logf("Mesh Ready %.1fs after kubectl apply", time.Since(start).Seconds())
	// Ready means the control plane serves, which one replica does; the
	// second may still be starting. Its status must come to count both.
	if out, err := kubectlErr("wait", "mesh/default", "--for=jsonpath={.status.controlPlane.availableReplicas}=2", "--timeout=120s"); err != nil {
		t.Log(kubectlErr("-n", "trellis-system", "get", "pods", "-o", "wide"))
		t.Fatalf("Mesh status never counted 2 available control plane replicas: %v %s", err, out)
	}
	pods := kubectl(t, "-n", "trellis-system", "get", "pods", "-l", "app.kubernetes.io/name=trellis-controlplane",
		"-o", "jsonpath={range .items[*]}{.status.phase}{\" \"}{end}")
	if got := strings.Count(pods, "Running"); got != 2 {
		t.Errorf("control plane pods: %q, want 2 Running", pods)
	}
	// The control plane reads the signer the operator wrote: its readiness says so.
	status := kubectl(t, "get", "mesh", "default", "-o", "jsonpath={.status.controlPlane.availableReplicas}/{.status.ca.issuerNotAfter}")
	if !strings.HasPrefix(status, "2/") || len(status) < 10 {
		t.Errorf("status %q: want 2 available replicas and an issuer expiry", status)
	}
}

func TestInvalidMeshRefusedByTheOperatorsWebhook(t *testing.T) {
	cmd := exec.Command(kubectlBin, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader("apiVersion: mesh.trellis.dev/v1alpha1\nkind: Mesh\nmetadata:\n  name: intruder\nspec:\n  namespace: trellis-system\n")
	b, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("a second Mesh in trellis-system was admitted: %s", b)
	}
	if !strings.Contains(string(b), `Mesh "default" already uses namespace "trellis-system"`) {
		t.Errorf("refusal %q does not come from the operator's webhook", b)
	}
}

// loadgenResult is what the sample app's load generator prints.
type loadgenResult = loadgen.Result

// runLoadgenJob runs the load generator as a Job named name in namespace,
// calling url at rate for duration (meshed when the namespace is) with its
// further flags, and returns its logs once it completes.
func runLoadgenJob(t *testing.T, namespace, name, url, rate, duration string, flags ...string) string {
	t.Helper()
	kubectl(t, "-n", namespace, "delete", "job", name, "--ignore-not-found", "--wait")
	kubectl(t, append([]string{"-n", namespace, "create", "job", name, "--image=ghcr.io/trellis-mesh/sample-loadgen:v0.1.0", "--",
		"/usr/local/bin/loadgen", "--url=" + url, "--rate=" + rate, "--duration=" + duration}, flags...)...)
	if out, err := kubectlErr("-n", namespace, "wait", "job/"+name, "--for=condition=Complete", "--timeout=120s"); err != nil {
		t.Log(kubectlErr("-n", namespace, "describe", "job/"+name))
		t.Log(kubectlErr("-n", namespace, "logs", "job/"+name, "--all-containers"))
		t.Fatalf("Job %s/%s (the load generator) did not complete: %v %s", namespace, name, err, out)
	}
	return kubectl(t, "-n", namespace, "logs", "job/"+name)
}

// parseLoadgen reads the load generator's result, the last line of its logs.
func parseLoadgen(t *testing.T, logs string) (loadgenResult, string) {
	t.Helper()
	var res loadgenResult
	line := strings.TrimSpace(logs[strings.LastIndex(strings.TrimSpace(logs), "\n")+1:])
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		t.Fatalf("load generator output %q: %v", logs, err)
	}
	return res, line
}

// waitForAnswer waits until the temperature API in namespace answers one
// request at its Service's ClusterIP from this node, which goes through
// kube-proxy's rules as a pod's request does. Right after a rollout,
// kube-proxy may not have programmed the Service yet, and a connection to
// it is refused: the load test starts once it has.
func waitForAnswer(t *testing.T, namespace string) {
	t.Helper()
	ip := kubectl(t, "-n", namespace, "get", "service", "temperature-api", "-o", "jsonpath={.spec.clusterIP}")
	url := "http://" + ip + ":8080/temperature?city=Oslo&unit=F"
	c := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the temperature API in %s never answered at its Service %s: %v", namespace, url, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// loadgenSucceeded reads the load generator's result, the last line of its
// logs, and checks that it sent at least 40 requests, all answered.
func loadgenSucceeded(t *testing.T, logs string) loadgenResult {
	t.Helper()
	res, line := parseLoadgen(t, logs)
	if res.Total < 40 || res.SuccessRate < 1 {
		t.Errorf("%d requests, success rate %.3f: want at least 40, all successful; load generator said: %s", res.Total, res.SuccessRate, line)
	}
	return res
}

func TestSampleAppServesThroughItsService(t *testing.T) {
	kubectlApply(t, kustomize(t, "test/sampleapp/manifests"))
	for _, d := range []string{"temperature-api", "converter-v1", "converter-v2"} {
		kubectl(t, "-n", "temperature", "rollout", "status", "deployment/"+d, "--timeout=180s")
	}
	waitForAnswer(t, "temperature")
	// A pod that resolves the Service by name through CoreDNS and calls it.
	kubectl(t, "-n", "temperature", "delete", "pod", "loadgen", "--ignore-not-found")
	kubectl(t, "-n", "temperature", "run", "loadgen", "--restart=Never",
		"--image=ghcr.io/trellis-mesh/sample-loadgen:v0.1.0", "--image-pull-policy=IfNotPresent", "--",
		"--url=http://temperature-api:8080/temperature?city=Oslo&unit=F", "--rate=20", "--duration=3s")
	if out, err := kubectlErr("-n", "temperature", "wait", "pod/loadgen", "--for=jsonpath={.status.phase}=Succeeded", "--timeout=120s"); err != nil {
		t.Log(kubectlErr("-n", "temperature", "logs", "loadgen"))
		t.Fatalf("load generator did not succeed: %v %s", err, out)
	}
	logs := kubectl(t, "-n", "temperature", "logs", "loadgen")
	res := loadgenSucceeded(t, logs)
	// Without the mesh, the API's one gRPC connection lands on one converter
	// pod: one version answers. Spreading calls is the mesh's job (issue 6).
	if res.ByConverter["v1"]+res.ByConverter["v2"] != res.Successes {
		t.Errorf("answers by converter version %v for %d successes: every answer should name its converter", res.ByConverter, res.Successes)
	}
}
