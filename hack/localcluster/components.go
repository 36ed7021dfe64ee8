package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// component is one process of the cluster.
type component struct {
	name string
	bin  string
	args []string
	// ready is true once the component serves.
	ready func(ctx context.Context) error
}

// startOrder is how the cluster comes up; down goes in reverse.
var startOrder = []string{"containerd", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"}

func (c *cluster) pidFile(name string) string { return c.path("pids", name+".pid") }

// running returns the PID of a component this tool started, if it still runs
// the same binary.
func (c *cluster) running(name, bin string) (int, bool) {
	b, err := os.ReadFile(c.pidFile(name))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || filepath.Base(strings.TrimSuffix(exe, " (deleted)")) != filepath.Base(bin) {
		return 0, false
	}
	return pid, true
}

// start runs a component in the background, in its own process group (so a
// Ctrl-C of the caller does not reach it), logging under <state>/logs.
func (c *cluster) start(ctx context.Context, comp component) (started bool, err error) {
	if _, ok := c.running(comp.name, comp.bin); ok {
		return false, waitReady(ctx, comp)
	}
	logPath := c.path("logs", comp.name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return false, err
	}
	defer func() { _ = logFile.Close() }()
	cmd := exec.Command(comp.bin, comp.args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return false, fmt.Errorf("starting %s: %w", comp.name, err)
	}
	if err := os.WriteFile(c.pidFile(comp.name), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		return false, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readyErr := make(chan error, 1)
	go func() { readyErr <- waitReady(rctx, comp) }()
	select {
	case err := <-exited:
		return false, fmt.Errorf("%s exited during start-up (%w); see %s", comp.name, err, logPath)
	case err := <-readyErr:
		if err != nil {
			return false, fmt.Errorf("%s did not become ready: %w; see %s", comp.name, err, logPath)
		}
	}
	// The process outlives this command on purpose; `down` stops it by PID.
	_ = cmd.Process.Release()
	return true, nil
}

func waitReady(ctx context.Context, comp component) error {
	if comp.ready == nil {
		return nil
	}
	var last error
	for {
		if last = comp.ready(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// stop ends a component by its recorded PID: SIGTERM, then SIGKILL after grace.
func (c *cluster) stop(name, bin string, grace time.Duration) error {
	pid, ok := c.running(name, bin)
	if ok {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(grace)
		for time.Now().Before(deadline) {
			if _, still := c.running(name, bin); !still {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, still := c.running(name, bin); still {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			time.Sleep(200 * time.Millisecond)
		}
	}
	if err := os.Remove(c.pidFile(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// tlsClient is an HTTPS client with the cluster's admin certificate.
func (c *cluster) tlsClient() (*http.Client, error) {
	p := &pki{dir: c.path("pki")}
	caPath, _ := p.paths("ca")
	certPath, keyPath := p.paths("admin")
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}}, nil
}

func httpOK(hc *http.Client, url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

func socketUp(path string) func(context.Context) error {
	return func(context.Context) error {
		conn, err := net.DialTimeout("unix", path, time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	}
}

// components returns every process of the cluster, configured.
func (c *cluster) components(hc *http.Client) map[string]component {
	pki := c.path("pki")
	p := func(name string) string { return filepath.Join(pki, name) }
	apiURL := fmt.Sprintf("https://%s:%d", nodeIP, apiPort)
	comps := map[string]component{
		"containerd": {
			bin:   "/usr/bin/containerd",
			args:  []string{"--config", c.path("containerd", "config.toml")},
			ready: socketUp(c.containerdSocket()),
		},
		"etcd": {
			bin: filepath.Join(c.bin, "etcd"),
			args: []string{
				"--name=" + nodeName,
				"--data-dir=" + c.path("etcd"),
				"--listen-client-urls=http://127.0.0.1:2379",
				"--advertise-client-urls=http://127.0.0.1:2379",
				"--listen-peer-urls=http://127.0.0.1:2380",
				"--initial-advertise-peer-urls=http://127.0.0.1:2380",
				"--initial-cluster=" + nodeName + "=http://127.0.0.1:2380",
				"--listen-metrics-urls=http://127.0.0.1:2381",
				"--quota-backend-bytes=2147483648",
				"--unsafe-no-fsync",
			},
			ready: httpOK(&http.Client{Timeout: 2 * time.Second}, "http://127.0.0.1:2379/health"),
		},
		"kube-apiserver": {
			bin: filepath.Join(c.bin, "kube-apiserver"),
			args: []string{
				"--etcd-servers=http://127.0.0.1:2379",
				"--bind-address=" + nodeIP,
				"--advertise-address=" + nodeIP,
				fmt.Sprintf("--secure-port=%d", apiPort),
				"--service-cluster-ip-range=" + serviceCIDR,
				"--client-ca-file=" + p("ca.crt"),
				"--tls-cert-file=" + p("apiserver.crt"),
				"--tls-private-key-file=" + p("apiserver.key"),
				"--kubelet-client-certificate=" + p("apiserver-kubelet-client.crt"),
				"--kubelet-client-key=" + p("apiserver-kubelet-client.key"),
				"--kubelet-certificate-authority=" + p("ca.crt"),
				// Otherwise logs and exec resolve the node's name through the machine's resolver.
				"--kubelet-preferred-address-types=InternalIP",
				"--service-account-key-file=" + p("sa.pub"),
				"--service-account-signing-key-file=" + p("sa.key"),
				"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
				"--api-audiences=https://kubernetes.default.svc.cluster.local",
				"--authorization-mode=Node,RBAC",
				"--allow-privileged=true",
				"--enable-admission-plugins=NodeRestriction",
				"--profiling=false",
			},
			ready: httpOK(hc, apiURL+"/readyz"),
		},
		"kube-controller-manager": {
			bin: filepath.Join(c.bin, "kube-controller-manager"),
			args: []string{
				"--kubeconfig=" + c.path("controller-manager.kubeconfig"),
				"--authentication-kubeconfig=" + c.path("controller-manager.kubeconfig"),
				"--authorization-kubeconfig=" + c.path("controller-manager.kubeconfig"),
				"--bind-address=127.0.0.1",
				"--leader-elect=false",
				"--use-service-account-credentials=true",
				"--service-account-private-key-file=" + p("sa.key"),
				"--root-ca-file=" + p("ca.crt"),
				"--cluster-signing-cert-file=" + p("ca.crt"),
				"--cluster-signing-key-file=" + p("ca.key"),
				"--service-cluster-ip-range=" + serviceCIDR,
				"--allocate-node-cidrs=false",
				"--controllers=*,-node-ipam-controller",
			},
			ready: httpOK(insecureLoopback(), "https://127.0.0.1:10257/healthz"),
		},
		"kube-scheduler": {
			bin: filepath.Join(c.bin, "kube-scheduler"),
			args: []string{
				"--kubeconfig=" + c.path("scheduler.kubeconfig"),
				"--authentication-kubeconfig=" + c.path("scheduler.kubeconfig"),
				"--authorization-kubeconfig=" + c.path("scheduler.kubeconfig"),
				"--bind-address=127.0.0.1",
				"--leader-elect=false",
			},
			ready: httpOK(insecureLoopback(), "https://127.0.0.1:10259/healthz"),
		},
		"kubelet": {
			bin: filepath.Join(c.bin, "kubelet"),
			args: []string{
				"--config=" + c.path("kubelet", "config.yaml"),
				"--kubeconfig=" + c.path("kubelet.kubeconfig"),
				"--root-dir=" + c.path("kubelet", "root"),
				"--hostname-override=" + nodeName,
				"--node-ip=" + nodeIP,
				"--v=1",
			},
			ready: httpOK(&http.Client{Timeout: 2 * time.Second}, "http://127.0.0.1:10248/healthz"),
		},
		"kube-proxy": {
			bin:   filepath.Join(c.bin, "kube-proxy"),
			args:  []string{"--config=" + c.path("kube-proxy.yaml")},
			ready: httpOK(&http.Client{Timeout: 2 * time.Second}, "http://127.0.0.1:10256/healthz"),
		},
	}
	for name, comp := range comps {
		comp.name = name
		comps[name] = comp
	}
	return comps
}

// insecureLoopback reads the health of a component serving a self-signed
// certificate on loopback; nothing but its health is read with it.
func insecureLoopback() *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // health of our own component on loopback
	}}
}
