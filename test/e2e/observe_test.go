//go:build e2e

package e2e

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/ca"
	"github.com/trellis-mesh/trellis/controllers"
	"github.com/trellis-mesh/trellis/controlplane/dashboard"
	"github.com/trellis-mesh/trellis/controlplane/traffic"
	"github.com/trellis-mesh/trellis/test/browser"
	"github.com/trellis-mesh/trellis/test/testenv"
)

// observedNamespace runs a copy of the sample app of its own, so that what
// trellisctl and the dashboard show of it is this test's traffic only.
const observedNamespace = "temperature-observed"

// converterDelay makes the converter's answers take long enough that the
// proxies' and the load generator's latencies can be compared in percent:
// the load generator's own sidecar hop and its scheduling on a loaded
// 2-core machine add 2–3 ms to its p99, which at 20 ms was 11%.
const (
	converterDelay   = "50ms"
	converterDelayMs = 50
)

// buildTrellisctl builds cmd/trellisctl into the test's temporary
// directory.
func buildTrellisctl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "trellisctl")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/trellisctl")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/trellisctl: %v\n%s", err, out)
	}
	return bin
}

// trellisctl runs bin with args against the test's cluster ($KUBECONFIG).
func runTrellisctl(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

// statRows is `trellisctl stat -n observedNamespace -o json`'s workloads,
// by name.
func statRows(t *testing.T, bin, window string) map[string]traffic.StatRow {
	t.Helper()
	out, err := exec.Command(bin, "stat", "-n", observedNamespace, "--window", window, "-o", "json").Output()
	if err != nil {
		t.Fatalf("trellisctl stat: %v\n%s", err, out)
	}
	var resp traffic.StatResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatalf("trellisctl stat -o json: %v\n%s", err, out)
	}
	rows := map[string]traffic.StatRow{}
	for _, r := range resp.Rows {
		rows[r.Name] = r
	}
	return rows
}

// within says whether got is within 10% of want, or within slack of it
// (the load generator's own proxy hop, which the callee's proxy does not
// see).
func within(got, want, slack float64) bool {
	return math.Abs(got-want) <= math.Max(0.10*want, slack)
}

// startDashboard runs `trellisctl dashboard --no-browser` and returns the
// URL it prints; the process ends with the test.
func startDashboard(t *testing.T, bin string) string {
	t.Helper()
	cmd := exec.Command(bin, "dashboard", "--no-browser")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "Trellis dashboard: "); ok {
				urls <- strings.TrimSpace(u)
			}
		}
	}()
	select {
	case u := <-urls:
		return u
	case <-time.After(60 * time.Second):
		t.Fatal("trellisctl dashboard printed no URL in 60s")
	}
	return ""
}

// TestTrellisctlAndTheDashboardSeeTheSampleApp runs the sample app under
// load and compares what the load generator measured with what the
// proxies reported to the control plane (trellisctl stat), then makes the
// converter fail half its calls: the dashboard's edge turns red and
// trellisctl check names the converter. Last, check fails on an expired
// issuer and passes again once the operator has replaced it.
func TestTrellisctlAndTheDashboardSeeTheSampleApp(t *testing.T) {
	bin := buildTrellisctl(t)
	deploySampleApp(t, observedNamespace)
	t.Cleanup(func() { _, _ = kubectlErr("delete", "namespace", observedNamespace, "--wait=false") })
	kubectl(t, "-n", observedNamespace, "set", "env", "deployment/converter-v1", "deployment/converter-v2", "DELAY="+converterDelay)
	for _, d := range []string{"converter-v1", "converter-v2"} {
		kubectl(t, "-n", observedNamespace, "rollout", "status", "deployment/"+d, "--timeout=120s")
	}

	if out, err := runTrellisctl(bin, "check"); err != nil {
		t.Fatalf("trellisctl check on a healthy mesh: %v\n%s", err, out)
	} else {
		t.Logf("trellisctl check on a healthy mesh:\n%s", out)
	}

	url := startDashboard(t, bin) + "?namespace=" + observedNamespace
	b := browser.Launch(t)
	dash, err := browser.OpenDashboard(b, url, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	api, converterV1 := observedNamespace+"/temperature-api", observedNamespace+"/converter-v1"

	const target = "http://temperature-api:8080/temperature?city=Oslo&unit=F"
	t.Run("stat agrees with the load generator", func(t *testing.T) {
		res := loadgenSucceeded(t, runLoadgenJob(t, observedNamespace, "loadgen-observed", target, "20", "30s"))
		t.Logf("load generator: %d requests, success %.3f, p50 %.1f ms, p99 %.1f ms", res.Total, res.SuccessRate, res.P50Ms, res.P99Ms)
		// Reports reach the control plane every 10 s and a bucket is shown
		// once every proxy's report has covered it: poll until the API's
		// count has caught up with the Job's.
		var rows map[string]traffic.StatRow
		deadline := time.Now().Add(60 * time.Second)
		for {
			rows = statRows(t, bin, "1m")
			if r := rows["temperature-api"]; r.Requests >= uint64(res.Total) || time.Now().After(deadline) {
				break
			}
			time.Sleep(3 * time.Second)
		}
		out, _ := runTrellisctl(bin, "stat", "-n", observedNamespace, "--window", "1m")
		t.Logf("trellisctl stat -n %s:\n%s", observedNamespace, out)

		apiRow := rows["temperature-api"]
		if apiRow.Requests != uint64(res.Total) {
			t.Errorf("temperature-api: %d requests in stat, the load generator sent %d", apiRow.Requests, res.Total)
		}
		if apiRow.SuccessRate == nil || !within(*apiRow.SuccessRate, res.SuccessRate, 0) {
			t.Errorf("temperature-api: success %v in stat, %.3f measured", apiRow.SuccessRate, res.SuccessRate)
		}
		if l := apiRow.LatencyMs; l == nil || !within(l.P50, res.P50Ms, 1) || !within(l.P99, res.P99Ms, 1) {
			t.Errorf("temperature-api: latency %+v in stat; the load generator measured p50 %.1f ms, p99 %.1f ms", l, res.P50Ms, res.P99Ms)
		}
		// The API calls a converter once per request; the Service spreads
		// the calls over both versions.
		v1, v2 := rows["converter-v1"], rows["converter-v2"]
		if calls := v1.Requests + v2.Requests; !within(float64(calls), float64(res.Total), 0) {
			t.Errorf("converters: %d+%d calls in stat for %d requests to the API", v1.Requests, v2.Requests, res.Total)
		}
		for name, r := range map[string]traffic.StatRow{"converter-v1": v1, "converter-v2": v2} {
			if r.SuccessRate == nil || *r.SuccessRate != 1 {
				t.Errorf("%s: success %v in stat, want 1", name, r.SuccessRate)
			}
			// Each answer takes converterDelay at least.
			if l := r.LatencyMs; l == nil || l.P50 < converterDelayMs || l.P50 > converterDelayMs*1.1+1 {
				t.Errorf("%s: latency %+v in stat, want a p50 just above %s", name, l, converterDelay)
			}
		}

		if err := dash.WaitEdge(api, converterV1, "ok", 30*time.Second); err != nil {
			t.Error(err)
		}
		if shot, err := dash.Screenshot("e2e-sample-app"); err != nil {
			t.Error(err)
		} else {
			t.Logf("screenshot: %s", shot)
		}
	})

	t.Run("a converter failing half its calls: the edge turns red and check names it", func(t *testing.T) {
		kubectl(t, "-n", observedNamespace, "set", "env", "deployment/converter-v1", "FAIL_PERCENT=50")
		kubectl(t, "-n", observedNamespace, "rollout", "status", "deployment/converter-v1", "--timeout=120s")
		res, line := parseLoadgen(t, runLoadgenJob(t, observedNamespace, "loadgen-failing", target, "20", "30s"))
		t.Logf("load generator: %s", line)
		if err := dash.WaitEdge(api, converterV1, "fail", 60*time.Second); err != nil {
			t.Error(err)
		}
		if shot, err := dash.Screenshot("e2e-sample-app-converter-failing"); err != nil {
			t.Error(err)
		} else {
			t.Logf("screenshot: %s", shot)
		}
		edges, err := dash.Edges()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range edges {
			if e.Source == api && e.Destination == converterV1 && e.Stroke != browser.RGB(dashboard.ColorFail) {
				t.Errorf("edge %s → %s drawn %s, want red", e.Source, e.Destination, e.Stroke)
			}
		}
		// The window holds the failing run only once the healthy one has
		// left it: 30 s, and the reports' 10–20 s delay.
		var rows map[string]traffic.StatRow
		deadline := time.Now().Add(60 * time.Second)
		for {
			rows = statRows(t, bin, "30s")
			if r := rows["converter-v1"].SuccessRate; (r != nil && within(*r, 0.5, 0)) || time.Now().After(deadline) {
				break
			}
			time.Sleep(3 * time.Second)
		}
		if r := rows["converter-v1"].SuccessRate; r == nil || !within(*r, 0.5, 0) {
			t.Errorf("converter-v1: success %v in stat, want about 0.5", r)
		}
		// The converter's failures reach the load generator through the API.
		if r := rows["temperature-api"].SuccessRate; r == nil || !within(*r, res.SuccessRate, 0) {
			t.Errorf("temperature-api: success %v in stat, the load generator measured %.3f", r, res.SuccessRate)
		}

		out, err := runTrellisctl(bin, "check")
		t.Logf("trellisctl check:\n%s", out)
		if err == nil {
			t.Error("trellisctl check passed with a converter failing half its calls")
		}
		if !strings.Contains(out, "converter-v1 in ns "+observedNamespace+": success") {
			t.Errorf("trellisctl check does not name converter-v1 in %s", observedNamespace)
		}
	})

	t.Run("check fails on an expired issuer and names the fix", func(t *testing.T) {
		// The operator replaces an expired issuer as soon as it sees one:
		// stop it, as an outage would.
		kubectl(t, "-n", "trellis-operator", "scale", "deployment/trellis-operator", "--replicas=0")
		kubectl(t, "-n", "trellis-operator", "wait", "pods", "-l", "app.kubernetes.io/name=trellis-operator", "--for=delete", "--timeout=60s")
		t.Cleanup(func() {
			kubectl(t, "-n", "trellis-operator", "scale", "deployment/trellis-operator", "--replicas=1")
			kubectl(t, "-n", "trellis-operator", "rollout", "status", "deployment/trellis-operator", "--timeout=120s")
		})
		expireIssuer(t)

		out, err := runTrellisctl(bin, "check")
		t.Logf("trellisctl check with an expired issuer:\n%s", out)
		// The converter may still fail check within its window: read the
		// issuer's own line, in check's JSON.
		if c := checkLine(t, bin, "the issuer certificate is valid"); c.Status != "error" || !strings.Contains(c.Message, "expired at") || c.Hint == "" {
			t.Errorf("trellisctl check with an expired issuer: %+v, want an error saying it expired, with the fix (command error: %v)", c, err)
		}

		// The fix: the operator back, which replaces the issuer; check
		// passes on the CA again.
		kubectl(t, "-n", "trellis-operator", "scale", "deployment/trellis-operator", "--replicas=1")
		kubectl(t, "-n", "trellis-operator", "rollout", "status", "deployment/trellis-operator", "--timeout=120s")
		deadline := time.Now().Add(60 * time.Second)
		c := checkLine(t, bin, "the issuer certificate is valid")
		for c.Status != "ok" && time.Now().Before(deadline) {
			time.Sleep(2 * time.Second)
			c = checkLine(t, bin, "the issuer certificate is valid")
		}
		if c.Status != "ok" {
			t.Errorf("the operator did not replace the expired issuer in 60s: %+v", c)
		}
	})
}

// checkResult is a line of `trellisctl check -o json`.
type checkResult struct {
	Name, Status, Message, Hint string
}

// checkLine runs `trellisctl check -o json` and returns its line named
// name.
func checkLine(t *testing.T, bin, name string) checkResult {
	t.Helper()
	// check exits 1 when any line is an error: its JSON is still whole.
	out, _ := exec.Command(bin, "check", "-o", "json").Output()
	var report struct {
		Groups []struct {
			Checks []checkResult `json:"checks"`
		} `json:"groups"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("trellisctl check -o json: %v\n%s", err, out)
	}
	for _, g := range report.Groups {
		for _, c := range g.Checks {
			if c.Name == name {
				return c
			}
		}
	}
	t.Fatalf("trellisctl check -o json has no line %q:\n%s", name, out)
	return checkResult{}
}

// expireIssuer replaces the Mesh's issuer in its CA Secret with one that
// the same root signed and that expired an hour ago.
func expireIssuer(t *testing.T) {
	t.Helper()
	var secret struct {
		Data map[string]string `json:"data"`
	}
	out := kubectl(t, "-n", "trellis-system", "get", "secret", controllers.CASecretName, "-o", "json")
	if err := json.Unmarshal([]byte(out), &secret); err != nil {
		t.Fatal(err)
	}
	field := func(k string) []byte {
		b, err := base64.StdEncoding.DecodeString(secret.Data[k])
		if err != nil || len(b) == 0 {
			t.Fatalf("Secret trellis-system/%s has no %s", controllers.CASecretName, k)
		}
		return b
	}
	root, err := ca.ParseKeyPair(field(ca.RootCertKey), field(ca.RootKeyKey))
	if err != nil {
		t.Fatal(err)
	}
	trustDomain := root.Cert.URIs[0].Host
	issuer, err := ca.NewIssuer(root, trustDomain, time.Hour, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	patch := fmt.Sprintf(`{"data":{%q:%q,%q:%q}}`,
		ca.IssuerCertKey, base64.StdEncoding.EncodeToString(issuer.FullChainPEM()),
		ca.IssuerKeyKey, base64.StdEncoding.EncodeToString(issuer.KeyPEM))
	kubectl(t, "-n", "trellis-system", "patch", "secret", controllers.CASecretName, "--type=merge", "-p", patch)
}
