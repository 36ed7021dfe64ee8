// Command localcluster brings a single-node Kubernetes cluster up on this
// machine, and down again, for Trellis's demo and end-to-end tests: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
// kube-proxy built from the Go module proxy (hack/build-k8s.sh), containerd,
// runc and the CNI plugins from Debian, CoreDNS built from the module proxy.
//
//	localcluster up     start it (idempotent: what runs is left running)
//	localcluster down   stop it and undo every change it made to the host
//	localcluster status what runs, and the kubeconfig
//
// Every address stays on the machine: the node's IP on a bridge with no
// ports, pods on another bridge, Services in their own range, no masquerade,
// and forwarding to anywhere else dropped. Processes are started and stopped
// by the PIDs recorded under the state directory, never by name.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// The cluster's fixed addresses and names.
const (
	nodeName     = "trellis-node"
	nodeBridge   = "trellis-node0"
	nodeIP       = "10.250.0.1"
	nodeCIDR     = "10.250.0.0/24"
	podBridge    = "trellis-cni0"
	podCIDR      = "10.244.0.0/24"
	serviceCIDR  = "10.96.0.0/24"
	apiServiceIP = "10.96.0.1"
	dnsServiceIP = "10.96.0.10"
	apiPort      = 6443
	runDir       = "/run/trellis-cluster"
	// pauseImage is containerd's sandbox image; the image builder makes it.
	pauseImage = "registry.k8s.io/pause:3.10"
)

// cluster is where one local cluster keeps its state.
type cluster struct {
	state  string // persistent: pki, configs, logs, etcd data, kubelet root
	bin    string // kube-apiserver, etcd, kubelet, ... (hack/build-k8s.sh's output)
	images string // image archive to load before workloads start (optional)
}

func (c *cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.state}, elem...)...)
}

func (c *cluster) kubeconfig() string { return c.path("kubeconfig") }

func (c *cluster) containerdSocket() string { return filepath.Join(runDir, "containerd.sock") }

func main() {
	home, _ := os.UserHomeDir()
	c := &cluster{}
	flag.StringVar(&c.state, "state", filepath.Join(home, ".cache", "trellis", "cluster"), "state directory")
	flag.StringVar(&c.bin, "bin", "", "directory with the Kubernetes binaries, etcd and coredns (hack/build-k8s.sh)")
	flag.StringVar(&c.images, "images", "", "OCI image archive to import into containerd (the pause image at least)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: localcluster [flags] up|down|status")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var err error
	switch flag.Arg(0) {
	case "up":
		err = c.up(ctx)
	case "down":
		err = c.down(ctx)
	case "status":
		err = c.status()
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

// progress prints one line per step with how long it took.
type progress struct{ start, last time.Time }

func newProgress() *progress { now := time.Now(); return &progress{now, now} }

func (p *progress) step(format string, args ...any) {
	now := time.Now()
	fmt.Printf("[%6.1fs] %s (%.1fs)\n", now.Sub(p.start).Seconds(), fmt.Sprintf(format, args...), now.Sub(p.last).Seconds())
	p.last = now
}
