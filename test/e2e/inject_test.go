//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/trellis-mesh/trellis/test/testenv"
)

// meshedNamespace runs the sample app with sidecars.
const meshedNamespace = "temperature-meshed"

// namespaceLine is a manifest's namespace field, at the end of a document
// or not.
var namespaceLine = regexp.MustCompile(`(?m)^(\s*namespace: )temperature$`)

// TestMeshedSampleApp runs the sample app in a namespace labeled for the
// Mesh: every pod gets its sidecar from the operator's webhook through the
// real API server, the apps' probes stay green through the proxy, their
// calls go through it, and a Job of the load generator completes.
func TestMeshedSampleApp(t *testing.T) {
	kubectl(t, "apply", "-f", filepath.Join(testenv.RepoRoot(), "config", "samples", "mesh_v1alpha1_mesh.yaml"))
	kubectl(t, "wait", "mesh/default", "--for=condition=Ready", "--timeout=180s")
	kubectl(t, "wait", "mesh/default", "--for=condition=InjectorReady", "--timeout=60s")
	deploySampleApp(t, meshedNamespace)

	// Every pod has the sidecar, running, and kubectl's default container is the app.
	pods := kubectl(t, "-n", meshedNamespace, "get", "pods", "-l", "app=temperature-api", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.metadata.annotations.kubectl\.kubernetes\.io/default-container} {range .status.initContainerStatuses[*]}{.name}={.started},{end}{"\n"}{end}`)
	fields := strings.Fields(strings.SplitN(strings.TrimSpace(pods), "\n", 2)[0])
	if len(fields) != 4 {
		t.Fatalf("temperature-api pods: %q", pods)
	}
	podName, podIP, defaultContainer, inits := fields[0], fields[1], fields[2], fields[3]
	if defaultContainer != "temperature-api" || !strings.Contains(inits, "trellis-init=false") || !strings.Contains(inits, "trellis-proxy=true") {
		t.Errorf("pod %s: default container %q, init containers %q: want the app as default, trellis-init done and trellis-proxy started", podName, defaultContainer, inits)
	}

	t.Run("readiness probe stays green through the proxy", func(t *testing.T) {
		time.Sleep(5 * time.Second) // several probe periods
		ready := kubectl(t, "-n", meshedNamespace, "get", "pod", podName, "-o",
			`jsonpath={range .status.containerStatuses[*]}{.name}={.ready}/{.restartCount} {end}`)
		if strings.TrimSpace(ready) != "temperature-api=true/0" {
			t.Errorf("app container status %q, want ready and never restarted", ready)
		}
	})

	t.Run("logs and exec default to the app container", func(t *testing.T) {
		logs, err := kubectlErr("-n", meshedNamespace, "logs", podName)
		if err != nil || strings.Contains(logs, "Defaulted container") {
			t.Errorf("kubectl logs without -c: %v %s", err, logs)
		}
		// The app's binary is only in the app's image: exec finds it only
		// in the app's container.
		out, _ := kubectlErr("-n", meshedNamespace, "exec", podName, "--", "/usr/local/bin/temperature-api", "-h")
		if strings.Contains(out, "no such file") || strings.Contains(out, "not found") || strings.Contains(out, "Defaulted container") {
			t.Errorf("kubectl exec without -c did not run in the app container: %s", out)
		}
	})

	t.Run("a Job completes with its sidecar, calling the app through both proxies", func(t *testing.T) {
		waitForAnswer(t, meshedNamespace)
		logs := runLoadgenJob(t, meshedNamespace, "loadgen", "http://temperature-api:8080/temperature?city=Oslo&unit=F", "20", "3s")
		res := loadgenSucceeded(t, logs)
		// The API's proxy balances its gRPC calls request by request, so
		// both converter versions answer, unlike without the mesh.
		if res.ByConverter["v1"] == 0 || res.ByConverter["v2"] == 0 {
			t.Errorf("answers by converter version %v: the mesh balances each call, so both should answer", res.ByConverter)
		}
		jobPod := kubectl(t, "-n", meshedNamespace, "get", "pods", "-l", "job-name=loadgen", "-o", "jsonpath={.items[0].spec.initContainers[*].name}")
		if !strings.Contains(jobPod, "trellis-proxy") {
			t.Errorf("the Job's pod has init containers %q: it was not meshed", jobPod)
		}
	})

	t.Run("the redirection is in the pod's network namespace, and used", func(t *testing.T) {
		netns := podNetns(t, podIP)
		chains := nftChains(t, netns)
		for _, want := range []string{"prerouting", "output"} {
			if !strings.Contains(chains, want) {
				t.Errorf("pod %s's network namespace %s: table ip trellis has chains %q, want one hooked at %s", podName, netns, chains, want)
			}
		}
		// The app called the converter through the proxy's outbound port,
		// and the kubelet's probes reached the app through the admin port.
		metrics := httpGet(t, "http://"+podIP+":15020/metrics")
		if n := metricSum(metrics, `trellis_proxy_tcp_connections_opened_total\{[^}]*direction="outbound"[^}]*\}`); n < 1 {
			t.Errorf("the proxy counted %v outbound connections, want the app's calls to the converter:\n%s", n, grepLines(metrics, "trellis_proxy"))
		}
	})

	t.Run("the API calls the converters in mutual TLS, with their identities", func(t *testing.T) {
		// The API's proxy counted its calls by the identity the converters'
		// certificates proved, and each converter's proxy counted them by
		// the API's.
		metrics := httpGet(t, "http://"+podIP+":15020/metrics")
		out := `trellis_proxy_http_responses_total\{direction="outbound",dst_service="` + meshedNamespace + `/converter",dst_workload="` + meshedNamespace + `/converter",src_workload="` + meshedNamespace + `/temperature-api",status_class="2xx"\}`
		if n := metricSum(metrics, out); n < 40 {
			t.Errorf("the API's proxy counted %v calls to the converter answered in mutual TLS, want the load generator's 40 or more:\n%s", n, grepLines(metrics, "trellis_proxy_http"))
		}
		converters := strings.Fields(kubectl(t, "-n", meshedNamespace, "get", "pods", "-l", "app=converter", "-o", "jsonpath={.items[*].status.podIP}"))
		in := `trellis_proxy_http_responses_total\{direction="inbound",dst_service="",dst_workload="` + meshedNamespace + `/converter",src_workload="` + meshedNamespace + `/temperature-api",status_class="2xx"\}`
		for _, ip := range converters {
			m := httpGet(t, "http://"+ip+":15020/metrics")
			if n := metricSum(m, in); n < 1 {
				t.Errorf("converter %s's proxy counted %v calls from the API's identity, want some:\n%s", ip, n, grepLines(m, "trellis_proxy_http"))
			}
		}
		if len(converters) < 2 {
			t.Errorf("converter pods at %v, want v1 and v2", converters)
		}
	})

	t.Run("the Mesh counts its pods", func(t *testing.T) {
		if out, err := kubectlErr("wait", "mesh/default", "--for=jsonpath={.status.meshedPods}=3", "--timeout=60s"); err != nil {
			t.Errorf("Mesh status does not count the 3 running meshed pods: %v %s %s", err, out,
				kubectl(t, "get", "mesh", "default", "-o", "jsonpath={.status}"))
		}
	})
}

// deploySampleApp runs the sample app (test/sampleapp/manifests) in
// namespace, labeled for the default Mesh, and waits until its
// Deployments are ready with their sidecars.
func deploySampleApp(t *testing.T, namespace string) {
	t.Helper()
	kubectlApply(t, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+namespace+"\n  labels:\n    trellis-injection: enabled\n")
	// The sample app's manifests, moved to namespace.
	var docs []string
	for _, d := range strings.Split(kustomize(t, "test/sampleapp/manifests"), "\n---\n") {
		if strings.Contains(d, "kind: Namespace") {
			continue
		}
		docs = append(docs, namespaceLine.ReplaceAllString(d, "${1}"+namespace))
	}
	kubectlApply(t, strings.Join(docs, "\n---\n"))
	for _, d := range []string{"temperature-api", "converter-v1", "converter-v2"} {
		if out, err := kubectlErr("-n", namespace, "rollout", "status", "deployment/"+d, "--timeout=180s"); err != nil {
			t.Log(kubectlErr("-n", namespace, "get", "pods", "-o", "wide"))
			t.Log(kubectlErr("-n", namespace, "describe", "pods", "-l", "app="+strings.TrimSuffix(strings.TrimSuffix(d, "-v1"), "-v2")))
			t.Log(kubectlErr("-n", namespace, "logs", "deployment/"+d, "-c", "trellis-proxy", "--tail=30"))
			t.Fatalf("deployment %s/%s not ready with its sidecar: %v %s", namespace, d, err, out)
		}
	}
}

// podNetns finds the network namespace, under /var/run/netns where the CNI
// plugins put them, that holds ip.
func podNetns(t *testing.T, ip string) string {
	t.Helper()
	entries, err := os.ReadDir("/var/run/netns")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		out, err := exec.Command("ip", "netns", "exec", e.Name(), "ip", "-o", "-4", "addr", "show").Output()
		if err == nil && strings.Contains(string(out), " "+ip+"/") {
			return filepath.Join("/var/run/netns", e.Name())
		}
	}
	t.Fatalf("no network namespace under /var/run/netns has %s", ip)
	return ""
}

// nftChains lists the chains of table ip trellis in the network namespace
// at path, with their hooks, read over netlink.
func nftChains(t *testing.T, path string) string {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(fd) }()
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, c := range chains {
		if c.Table.Name != "trellis" {
			continue
		}
		rules, err := conn.GetRules(c.Table, c)
		if err != nil {
			t.Fatal(err)
		}
		hook := "none"
		if c.Hooknum != nil {
			hook = map[nftables.ChainHook]string{*nftables.ChainHookPrerouting: "prerouting", *nftables.ChainHookOutput: "output"}[*c.Hooknum]
		}
		if len(rules) > 0 {
			fmt.Fprintf(&b, "%s(%s, %d rules) ", c.Name, hook, len(rules))
		}
	}
	return b.String()
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metricSum adds the values of the Prometheus text lines matching series.
func metricSum(text, series string) float64 {
	re := regexp.MustCompile(`(?m)^` + series + ` ([0-9.e+]+)$`)
	var sum float64
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		sum += v
	}
	return sum
}

func grepLines(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
