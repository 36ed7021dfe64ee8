// Package meshnet runs the mesh's control plane for tests and benchmarks
// that run proxies outside a cluster: a real API server (envtest), the mesh
// CA as the operator keeps it, the real control plane binary, and the
// Kubernetes objects that stand for pods and Services whose network the
// caller makes (network namespaces). No controllers run: it writes the
// Pods' status and the EndpointSlices that the kubelet and the
// EndpointSlice controller would.
package meshnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/trellis-mesh/trellis/ca"
	"github.com/trellis-mesh/trellis/controlplane/discovery"
	"github.com/trellis-mesh/trellis/sidecar"
	"github.com/trellis-mesh/trellis/test/testenv"
)

const (
	// TrustDomain is the mesh's.
	TrustDomain = "cluster.local"
	// MeshNamespace is where the control plane "runs".
	MeshNamespace = "trellis-system"
	// ServerName is the name the control plane's certificate holds that
	// proxies check.
	ServerName = "trellis-controlplane." + MeshNamespace + ".svc"
)

// Options configure Start.
type Options struct {
	// GRPCAddr is where the control plane serves proxies: an address the
	// caller's network namespaces reach.
	GRPCAddr string
	// MTLSMode is the Mesh's: Permissive or Strict.
	MTLSMode string
	// Namespaces are created labeled for the default Mesh.
	Namespaces []string
}

// ControlPlane is a running control plane with its API server.
type ControlPlane struct {
	Kube kubernetes.Interface
	// Client reads and writes Trellis's and the Gateway API's kinds too.
	Client client.Client
	// Dir holds the kubeconfig, the CA, tokens and logs; it is readable by
	// the proxy's UID, as the proxies read their token and roots there.
	Dir string
	// BundleFile is the mesh's roots, PEM, as mounted in pods.
	BundleFile string
	// Addr is the control plane's gRPC address.
	Addr string

	opts       Options
	env        *envtest.Environment
	binary     string
	kubeconfig string
	signerDir  string
	httpAddr   string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start starts the API server, makes the CA, builds and starts the control
// plane. Stop undoes it all.
func Start(opts Options) (_ *ControlPlane, err error) {
	if opts.MTLSMode == "" {
		opts.MTLSMode = "Permissive"
	}
	dir, err := os.MkdirTemp("", "trellis-meshnet-")
	if err != nil {
		return nil, err
	}
	c := &ControlPlane{Dir: dir, Addr: opts.GRPCAddr, opts: opts}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	env, cfg, _, err := testenv.Start(testenv.Options{})
	if err != nil {
		return nil, err
	}
	c.env = env
	if c.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if c.Client, err = client.New(cfg, client.Options{Scheme: discovery.Scheme()}); err != nil {
		return nil, err
	}
	c.kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(cfg, c.kubeconfig); err != nil {
		return nil, err
	}
	if err := c.writeCA(); err != nil {
		return nil, err
	}
	c.binary = filepath.Join(dir, "controlplane")
	if out, err := exec.Command("go", "build", "-o", c.binary, "github.com/trellis-mesh/trellis/cmd/controlplane").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the control plane: %w\n%s", err, out)
	}
	if c.httpAddr, err = freeLoopbackAddr(); err != nil {
		return nil, err
	}
	ctx := context.Background()
	namespaces := []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: MeshNamespace}}}
	for _, ns := range opts.Namespaces {
		namespaces = append(namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"trellis-injection": "enabled"}}})
	}
	for _, ns := range namespaces {
		if _, err := c.Kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	return c, c.StartProcess()
}

// writeCA writes the mesh CA as the operator's Secret projects it, and the
// roots as the trust bundle ConfigMap does.
func (c *ControlPlane) writeCA() error {
	root, err := ca.NewRoot(TrustDomain, 0, time.Now().Add(-time.Hour))
	if err != nil {
		return err
	}
	issuer, err := ca.NewIssuer(root, TrustDomain, 0, time.Now().Add(-time.Minute))
	if err != nil {
		return err
	}
	c.BundleFile = filepath.Join(c.Dir, "ca.crt")
	c.signerDir = filepath.Join(c.Dir, "signer")
	if err := os.Mkdir(c.signerDir, 0o700); err != nil {
		return err
	}
	return errors.Join(
		os.WriteFile(c.BundleFile, root.CertPEM, 0o644),
		os.WriteFile(filepath.Join(c.signerDir, ca.IssuerCertKey), issuer.FullChainPEM(), 0o600),
		os.WriteFile(filepath.Join(c.signerDir, ca.IssuerKeyKey), issuer.KeyPEM, 0o600),
		os.WriteFile(filepath.Join(c.signerDir, ca.BundleKey), root.CertPEM, 0o600),
	)
}

// LogFile is the control plane's log, across restarts.
func (c *ControlPlane) LogFile() string { return filepath.Join(c.Dir, "controlplane.log") }

// StartProcess starts the control plane binary and waits until it is ready.
func (c *ControlPlane) StartProcess() error {
	cmd := exec.Command(c.binary, "--mesh=default", "--namespace="+MeshNamespace, "--trust-domain="+TrustDomain,
		"--signer-dir="+c.signerDir, "--grpc-addr="+c.Addr, "--http-addr="+c.httpAddr, "--mtls-mode="+c.opts.MTLSMode, "--log-level=debug")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig)
	// Its own process group: a terminal's Ctrl-C reaches the starter,
	// which stops it. (Not Pdeathsig: the kernel sends it when the starting
	// thread exits, and a Go thread locked into a network namespace exits
	// with its goroutine.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	log, err := os.OpenFile(c.LogFile(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = log.Close() }()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	c.mu.Lock()
	c.cmd = cmd
	c.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + c.httpAddr + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(c.LogFile())
			return fmt.Errorf("the control plane was not ready in 30s:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// StopProcess kills the control plane (ours, by PID), as an outage would.
func (c *ControlPlane) StopProcess() {
	c.mu.Lock()
	cmd := c.cmd
	c.cmd = nil
	c.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// Stop stops the control plane and the API server and removes Dir.
func (c *ControlPlane) Stop() {
	c.StopProcess()
	if c.env != nil {
		_ = c.env.Stop()
	}
	_ = os.RemoveAll(c.Dir)
}

// Pod is a pod whose network the caller makes.
type Pod struct {
	Name, Namespace, IP string
	// ServiceAccount the Pod runs as.
	ServiceAccount string
	// ProxyAccount is the ServiceAccount its proxy holds a token of:
	// ServiceAccount unless set (an impostor's differs).
	ProxyAccount string
	Ports        []int32
	// Meshed pods have a sidecar: they get an identity.
	Meshed bool
}

// AddPod creates the Pod, running at its IP, and for a meshed one returns
// the environment of its proxy (proxy run) and the flags that point it at
// this control plane.
func (c *ControlPlane) AddPod(p Pod) (env, args []string, err error) {
	ctx := context.Background()
	if p.ProxyAccount == "" {
		p.ProxyAccount = p.ServiceAccount
	}
	for _, sa := range []string{p.ServiceAccount, p.ProxyAccount} {
		_, err := c.Kube.CoreV1().ServiceAccounts(p.Namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, nil, err
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: map[string]string{"app": p.Name}},
		Spec: corev1.PodSpec{
			ServiceAccountName: p.ServiceAccount,
			NodeName:           "node-1",
			Containers:         []corev1.Container{{Name: "app", Image: "example.com/app:1"}},
		},
	}
	for _, port := range p.Ports {
		pod.Spec.Containers[0].Ports = append(pod.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: port})
	}
	if p.Meshed {
		pod.Annotations = map[string]string{sidecar.AnnotationStatus: "{}"}
	}
	created, err := c.Kube.CoreV1().Pods(p.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, nil, err
	}
	created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.IP, PodIPs: []corev1.PodIP{{IP: p.IP}}}
	if _, err := c.Kube.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return nil, nil, err
	}
	if !p.Meshed {
		return nil, nil, nil
	}
	tr, err := c.Kube.CoreV1().ServiceAccounts(p.Namespace).CreateToken(ctx, p.ProxyAccount,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{sidecar.TokenAudience}}}, metav1.CreateOptions{})
	if err != nil {
		return nil, nil, err
	}
	token := filepath.Join(c.Dir, p.Namespace+"-"+p.Name+".token")
	if err := os.WriteFile(token, []byte(tr.Status.Token), 0o644); err != nil {
		return nil, nil, err
	}
	env = []string{
		sidecar.EnvControlPlane + "=" + c.Addr,
		sidecar.EnvPodName + "=" + p.Name, sidecar.EnvPodNamespace + "=" + p.Namespace, sidecar.EnvPodIP + "=" + p.IP,
		sidecar.EnvServiceAccount + "=" + p.ProxyAccount, sidecar.EnvTrustDomain + "=" + TrustDomain,
		sidecar.EnvMTLSMode + "=" + c.opts.MTLSMode,
	}
	args = []string{"--control-plane-name=" + ServerName, "--token-file=" + token, "--trust-bundle-file=" + c.BundleFile}
	return env, args, nil
}

// ServicePort is a port of a Service and the port its pods serve it on.
type ServicePort struct {
	Name         string
	Port, Target int32
}

// AddService creates a Service of the pods, with its EndpointSlice, and
// returns its ClusterIP.
func (c *ControlPlane) AddService(namespace, name string, ports []ServicePort, pods ...Pod) (string, error) {
	ctx := context.Background()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: namespace, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range ports {
		sp := corev1.ServicePort{Name: p.Name, Port: p.Port, Protocol: corev1.ProtocolTCP}
		sp.TargetPort.IntVal = p.Target
		svc.Spec.Ports = append(svc.Spec.Ports, sp)
		slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Port: ptr.To(p.Target), Protocol: ptr.To(corev1.ProtocolTCP)})
	}
	for _, p := range pods {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{p.IP},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name},
		})
	}
	created, err := c.Kube.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	if _, err := c.Kube.DiscoveryV1().EndpointSlices(namespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	return created.Spec.ClusterIP, nil
}

// HTTPAddr is the control plane's HTTP address (health, metrics and the
// traffic API), on loopback.
func (c *ControlPlane) HTTPAddr() string { return c.httpAddr }

// TailLog is the end of the control plane's log, for a failure report.
func (c *ControlPlane) TailLog(lines int) string {
	out, _ := os.ReadFile(c.LogFile())
	all := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

func writeKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["envtest"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "envtest"}
	kc.CurrentContext = "envtest"
	return clientcmd.WriteToFile(*kc, path)
}

// freeLoopbackAddr is a loopback address with a port free now.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String(), nil
}
