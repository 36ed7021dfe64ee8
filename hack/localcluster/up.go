package main

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

//go:embed coredns.yaml
var corednsManifest string

func (c *cluster) up(ctx context.Context) error {
	pr := newProgress()
	if c.bin == "" {
		return fmt.Errorf("--bin is required: the directory hack/build-k8s.sh prints")
	}
	if err := c.preflight(); err != nil {
		return err
	}
	for _, d := range []string{"pids", "logs", "containerd", "cni", "kubelet", "etcd"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return err
	}
	if err := c.writeCertificates(); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	if err := c.writeConfigs(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	pr.step("certificates and configuration in %s", c.state)
	if err := c.setSysctls(); err != nil {
		return err
	}
	if err := setupNetwork(); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	pr.step("node IP %s on bridge %s; pods %s, Services %s; forwarding out of the machine dropped", nodeIP, nodeBridge, podCIDR, serviceCIDR)

	hc, err := c.tlsClient()
	if err != nil {
		return err
	}
	comps := c.components(hc)
	for _, name := range startOrder {
		started, err := c.start(ctx, comps[name])
		if err != nil {
			return err
		}
		verb := "already running"
		if started {
			verb = "started"
		}
		pid, _ := c.running(name, comps[name].bin)
		pr.step("%s %s (pid %d)", name, verb, pid)
		if name == "containerd" {
			if err := c.importImages(); err != nil {
				return err
			}
			pr.step("images imported into containerd")
		}
		if name == "kube-apiserver" {
			if err := c.applyBootstrap(); err != nil {
				return err
			}
		}
	}
	if out, err := c.kubectl("wait", "node/"+nodeName, "--for=condition=Ready", "--timeout=120s"); err != nil {
		return fmt.Errorf("node not Ready: %s; see %s", out, c.path("logs", "kubelet.log"))
	}
	pr.step("node %s Ready", nodeName)
	if out, err := c.kubectlStdin(corednsManifest, "apply", "--server-side", "-f", "-"); err != nil {
		return fmt.Errorf("applying CoreDNS: %s", out)
	}
	if out, err := c.kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=120s"); err != nil {
		return fmt.Errorf("CoreDNS did not become available: %s", out)
	}
	pr.step("CoreDNS serving cluster.local at %s", dnsServiceIP)
	fmt.Printf("cluster up in %.1fs, %d MiB resident for the control plane and node\n", time.Since(pr.start).Seconds(), c.residentMiB())
	fmt.Printf("export KUBECONFIG=%s\n", c.kubeconfig())
	return nil
}

// applyBootstrap gives the cluster what kubeadm would: the API server's
// access to kubelets (logs, exec), so a test can read them.
func (c *cluster) applyBootstrap() error {
	const rbac = `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: trellis-local:kube-apiserver-to-kubelet
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:kubelet-api-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: kube-apiserver-kubelet-client}
`
	if out, err := c.kubectlStdin(rbac, "apply", "--server-side", "-f", "-"); err != nil {
		return fmt.Errorf("bootstrap RBAC: %s", out)
	}
	return nil
}

// importImages loads the image archive into containerd's k8s.io namespace,
// and checks the sandbox image is there: without it no pod starts.
func (c *cluster) importImages() error {
	if c.images != "" {
		if out, err := c.ctr("images", "import", "--all-platforms", c.images); err != nil {
			return fmt.Errorf("importing %s: %s", c.images, out)
		}
	}
	out, err := c.ctr("images", "ls", "-q")
	if err != nil {
		return err
	}
	if !strings.Contains(out, pauseImage) {
		return fmt.Errorf("containerd has no %s, the sandbox image: pass --images with an archive that holds it (make cluster-up builds it)", pauseImage)
	}
	return nil
}

func (c *cluster) ctr(args ...string) (string, error) {
	return run("ctr", append([]string{"--address", c.containerdSocket(), "-n", "k8s.io"}, args...)...)
}

func (c *cluster) kubectl(args ...string) (string, error) {
	return run(filepath.Join(c.bin, "kubectl"), append([]string{"--kubeconfig", c.kubeconfig()}, args...)...)
}

func (c *cluster) kubectlStdin(stdin string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(c.bin, "kubectl"), append([]string{"--kubeconfig", c.kubeconfig()}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// residentMiB sums the resident memory of the cluster's processes.
func (c *cluster) residentMiB() int {
	total := 0
	for _, name := range startOrder {
		b, err := os.ReadFile(c.pidFile(name))
		if err != nil {
			continue
		}
		status, err := os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.Atoi(f[1])
				total += kb
			}
		}
	}
	return total / 1024
}

func (c *cluster) status() error {
	for _, name := range startOrder {
		// running compares the executable's base name, which is the component's.
		if pid, ok := c.running(name, name); ok {
			fmt.Printf("%-24s running (pid %d)\n", name, pid)
		} else {
			fmt.Printf("%-24s stopped\n", name)
		}
	}
	fmt.Printf("export KUBECONFIG=%s\n", c.kubeconfig())
	return nil
}
