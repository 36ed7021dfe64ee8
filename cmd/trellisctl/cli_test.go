package main

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/controllers"
	"github.com/trellis-mesh/trellis/sidecar"
	"github.com/trellis-mesh/trellis/version"
)

func TestHelpTeachesEveryCommand(t *testing.T) {
	root := newRootCommand("trellisctl", strings.NewReader(""), &syncBuffer{}, &syncBuffer{})
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		if c.Runnable() && c != root && (len(c.Long) < 200 || !strings.Contains(c.Example, "trellisctl "+c.Name())) {
			t.Errorf("%s: its help must say what it shows and how to read it (Long, %d characters), with Examples of it:\n%s", c.CommandPath(), len(c.Long), c.Example)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	for _, c := range root.Commands() {
		if c.Name() != "version" {
			walk(c)
		}
	}

	out, _, err := run(t, "kubectl-trellis", "stat", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Usage:\n  kubectl trellis stat [deploy|svc|route] [NAME] [flags]", "  kubectl trellis stat -n shop", "LATENCY_P99"} {
		if !strings.Contains(out, want) {
			t.Errorf("as a kubectl plugin, stat --help lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "trellisctl stat") {
		t.Errorf("as a kubectl plugin, the help still says trellisctl:\n%s", out)
	}
	out, _, err = run(t, "trellisctl", "--help")
	if err != nil || !strings.Contains(out, "Usage:\n  trellisctl [command]") {
		t.Errorf("trellisctl --help (%v):\n%s", err, out)
	}
}

func TestCompletionAndVersion(t *testing.T) {
	for shell, want := range map[string]string{"bash": "__start_trellisctl", "zsh": "#compdef trellisctl", "fish": "complete -c trellisctl"} {
		out, _, err := run(t, "trellisctl", "completion", shell)
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("completion %s (%v) lacks %q", shell, err, want)
		}
	}
	// The shells ask the binary for candidates; stat's first argument is a kind.
	out, _, err := run(t, "trellisctl", "__complete", "stat", "")
	if err != nil || !strings.Contains(out, "deploy\nsvc\nroute\n") {
		t.Errorf("completing stat (%v):\n%s", err, out)
	}
	out, _, err = run(t, "trellisctl", "__complete", "stat", "-o", "")
	if err != nil || !strings.Contains(out, "table\nwide\njson\n") {
		t.Errorf("completing -o (%v):\n%s", err, out)
	}
	out, _, err = run(t, "trellisctl", "version")
	if err != nil || out != version.Version+"\n" {
		t.Errorf("version printed %q (%v)", out, err)
	}
}

func TestTrafficCommandsFindTheControlPlanePods(t *testing.T) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cp-test"}}
	if err := k8sClient.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	mesh := &meshv1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: "canary"}, Spec: meshv1.MeshSpec{Namespace: "cp-test", TrustDomain: trustDomain}}
	if err := k8sClient.Create(ctx, mesh); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k8sClient.Delete(ctx, mesh)
		_ = k8sClient.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace("cp-test"), client.GracePeriodSeconds(0))
	})
	pod := func(name, instance string, ready bool) {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "cp-test", Name: name, Labels: map[string]string{
				controllers.LabelName: controllers.ControlPlaneName, controllers.LabelInstance: instance}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "controlplane", Image: "cp:1"}}},
		}
		if err := k8sClient.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st, LastTransitionTime: metav1.Now()}}}
		if err := k8sClient.Status().Update(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	pod("cp-b", "canary", true)
	pod("cp-starting", "canary", false)
	pod("cp-a", "canary", true)
	pod("other-mesh", "default", true)

	got, err := controlPlanePods(ctx, k8sClient, "cp-test", "canary")
	if err != nil || strings.Join(got, ",") != "cp-a,cp-b" {
		t.Errorf("control plane pods %v (%v), want the ready ones of Mesh canary, sorted", got, err)
	}

	// No ready pod: the error says where it looked and what to run.
	_, _, err = runContext(ctx, t, "trellisctl", "stat", "--mesh", "nope-none", "--kubeconfig="+kubeconfig)
	if err == nil || !strings.Contains(err.Error(), "reading Mesh nope-none") {
		t.Errorf("stat for a missing Mesh: %v", err)
	}
	_, err = controlPlanePods(ctx, k8sClient, "cp-test", "absent")
	for _, want := range []string{"no ready pod of Mesh absent's control plane (Deployment cp-test/trellis-controlplane, 0 pods", "kubectl -n cp-test get pods -l app.kubernetes.io/instance=absent"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}

	// A port-forward goes through the API server to the kubelet, which
	// envtest lacks: the error names the pod and the right it needs.
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, _, err = runContext(ctx, t, "trellisctl", "edges", "--mesh", "canary", "--kubeconfig="+kubeconfig)
	if err == nil || !strings.Contains(err.Error(), "port-forward to pod cp-test/cp-a port 15014") {
		t.Errorf("edges without a kubelet: %v", err)
	}
	t.Logf("edges without a kubelet: %v", err)
}

func TestInjectCommandKeepsItsFlags(t *testing.T) {
	dir := t.TempDir()
	meshFile, manifest := dir+"/mesh.yaml", dir+"/pod.yaml"
	if err := os.WriteFile(meshFile, []byte("apiVersion: mesh.trellis.dev/v1alpha1\nkind: Mesh\nmetadata:\n  name: default\nspec:\n  namespace: trellis-system\n  trustDomain: cluster.local\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pods := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: web\n    image: web:1\n" +
		"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: out\n  labels:\n    trellis.dev/inject: \"false\"\nspec:\n  containers:\n  - name: app\n    image: app:1\n"
	if err := os.WriteFile(manifest, []byte(pods), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := run(t, "trellisctl", "inject", "-f", manifest, "--mesh-file", meshFile, "-n", "shop", "--kubernetes-minor", "33", noCluster(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "name: "+sidecar.ProxyContainerName) || !strings.Contains(out, "image: "+version.Image+":"+version.Version) {
		t.Errorf("inject printed no sidecar of the default image:\n%s", out)
	}
	if want := "Pod shop/out: not injected: OptedOut"; !strings.Contains(errOut, want) {
		t.Errorf("stderr %q lacks %q", errOut, want)
	}
	if _, _, err := run(t, "trellisctl", "inject", "--mesh-file", meshFile, noCluster(t)); err == nil || !strings.Contains(err.Error(), "-f is required") {
		t.Errorf("inject without -f: %v", err)
	}
	// Without --mesh-file the Mesh comes from the cluster.
	if _, _, err := run(t, "trellisctl", "inject", "-f", manifest, "--mesh", "absent", "--kubeconfig="+kubeconfig); err == nil ||
		!strings.Contains(err.Error(), "reading Mesh absent") || !strings.Contains(err.Error(), "--mesh-file") {
		t.Errorf("inject for a missing Mesh: %v", err)
	}
}

func TestClockSkewCountsOnlyBeyondTheUncertainty(t *testing.T) {
	date := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	cases := map[string]struct {
		t0, t1 time.Time // when the request left and its answer came
		want   time.Duration
	}{
		"same second":        {date.Add(200 * time.Millisecond), date.Add(300 * time.Millisecond), 0},
		"slow answer":        {date.Add(-2 * time.Second), date.Add(3 * time.Second), 0},
		"local clock ahead":  {date.Add(9 * time.Second), date.Add(9*time.Second + 10*time.Millisecond), 8 * time.Second},
		"local clock behind": {date.Add(-7 * time.Second), date.Add(-6 * time.Second), -6 * time.Second},
	}
	for name, tc := range cases {
		if got := clockSkew(tc.t0, tc.t1, date); got != tc.want {
			t.Errorf("%s: skew %s, want %s", name, got, tc.want)
		}
	}
}

func TestCheckFailsWithoutAnAPIServer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	path := t.TempDir() + "/kubeconfig"
	if err := writeKubeconfig(&rest.Config{Host: "https://" + addr}, path); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, "trellisctl", "check", "--kubeconfig="+path, "--request-timeout=2s")
	if !errors.Is(err, errSilent) {
		t.Errorf("check ended with %v, want the exit status of a failed check", err)
	}
	if !strings.Contains(out, "× can reach the API server: https://"+addr) || !strings.Contains(out, "    fix: check that the cluster is up") ||
		!strings.HasSuffix(out, "Status check results are × (1 error, 0 warnings)\n") {
		t.Errorf("check printed:\n%s", out)
	}
}
