package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// writeCertificates makes (or keeps) every certificate and kubeconfig.
func (c *cluster) writeCertificates() error {
	p, err := loadOrCreatePKI(c.path("pki"))
	if err != nil {
		return err
	}
	if err := p.serviceAccountKeys(); err != nil {
		return err
	}
	server := fmt.Sprintf("https://%s:%d", nodeIP, apiPort)
	specs := []certSpec{
		{name: "apiserver", cn: "kube-apiserver", server: true,
			dns: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost", nodeName},
			ips: []net.IP{net.ParseIP(nodeIP), net.ParseIP(apiServiceIP), net.ParseIP("127.0.0.1")}},
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true},
		{name: "kubelet-serving", cn: nodeName, server: true, dns: []string{nodeName, "localhost"}, ips: []net.IP{net.ParseIP(nodeIP), net.ParseIP("127.0.0.1")}},
	}
	for _, s := range specs {
		if _, _, err := p.ensure(s); err != nil {
			return err
		}
	}
	kubeconfigs := map[string]certSpec{
		"kubeconfig":                    {name: "admin", cn: "trellis-admin", orgs: []string{"system:masters"}, client: true},
		"controller-manager.kubeconfig": {name: "controller-manager", cn: "system:kube-controller-manager", client: true},
		"scheduler.kubeconfig":          {name: "scheduler", cn: "system:kube-scheduler", client: true},
		"kubelet.kubeconfig":            {name: "kubelet", cn: "system:node:" + nodeName, orgs: []string{"system:nodes"}, client: true},
		"kube-proxy.kubeconfig":         {name: "kube-proxy", cn: "system:kube-proxy", client: true},
	}
	for file, s := range kubeconfigs {
		if err := p.kubeconfig(c.path(file), server, s); err != nil {
			return err
		}
	}
	return nil
}

// writeConfigs writes containerd's, the CNI's, the kubelet's and kube-proxy's configuration.
func (c *cluster) writeConfigs() error {
	files := map[string]string{
		c.path("containerd", "config.toml"): fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[4]q
  # Root lacks CAP_SYS_RESOURCE in this VM: runc cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  enable_unprivileged_ports = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[5]q
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
`, c.path("containerd", "root"), filepath.Join(runDir, "containerd"), c.containerdSocket(), pauseImage, c.path("cni")),

		// No masquerade: pods talk to the node and each other, nothing leaves the machine.
		c.path("cni", "10-trellis.conflist"): fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "trellis",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, podBridge, c.path("cni", "ipam"), podCIDR),

		// Pods resolve cluster names only: there is no upstream resolver to reach.
		c.path("kubelet", "resolv.conf"): "options ndots:5\n",

		c.path("kubelet", "config.yaml"): fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[2]q}
authorization:
  mode: Webhook
tlsCertFile: %[3]q
tlsPrivateKeyFile: %[4]q
containerRuntimeEndpoint: unix://%[5]s
cgroupDriver: cgroupfs
# This machine's cgroups are v1 (hybrid); kubelet 1.35+ refuses them unless told.
failCgroupV1: false
failSwapOn: false
# Root cannot lower oom_score_adj here.
oomScoreAdj: 0
clusterDomain: cluster.local
clusterDNS: [%[6]s]
resolvConf: %[7]q
staticPodPath: ""
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
  nodefs.inodesFree: 1%%
maxPods: 110
`, nodeIP, c.path("pki", "ca.crt"), c.path("pki", "kubelet-serving.crt"), c.path("pki", "kubelet-serving.key"),
			c.containerdSocket(), dnsServiceIP, c.path("kubelet", "resolv.conf")),

		c.path("kube-proxy.yaml"): fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %q
mode: iptables
clusterCIDR: %q
hostnameOverride: %q
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the machine's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
`, c.path("kube-proxy.kubeconfig"), podCIDR, nodeName),
	}
	for path, content := range files {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}
