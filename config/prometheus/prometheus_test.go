// Package prometheus holds no code: its test checks the Prometheus Operator
// manifests beside it against the names the code uses.
package prometheus

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/sidecar"
	"github.com/trellis-mesh/trellis/test/metricnames"
)

type podMonitor struct {
	Metadata struct{ Name string }
	Spec     struct {
		Selector struct {
			MatchLabels      map[string]string
			MatchExpressions []struct{ Key, Operator string }
		}
		PodMetricsEndpoints []struct{ Port, Path string }
	}
}

// The PodMonitors scrape the ports the operator, the control plane and the
// injected proxies name, and select the proxies by the label the injector
// puts on the pods it meshes.
func TestPodMonitors(t *testing.T) {
	data, err := os.ReadFile("monitor.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"trellis-operator":      "metrics",      // config/manager
		"trellis-control-plane": "http-monitor", // controllers/controlplane.go
		"trellis-proxies":       sidecar.AdminPortName,
	}
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		var m podMonitor
		if err := yaml.Unmarshal(doc, &m); err != nil {
			t.Fatal(err)
		}
		port, ok := want[m.Metadata.Name]
		if !ok {
			t.Errorf("unexpected PodMonitor %q", m.Metadata.Name)
			continue
		}
		delete(want, m.Metadata.Name)
		if len(m.Spec.PodMetricsEndpoints) != 1 || m.Spec.PodMetricsEndpoints[0].Port != port || m.Spec.PodMetricsEndpoints[0].Path != "/metrics" {
			t.Errorf("%s scrapes %+v, want port %s at /metrics", m.Metadata.Name, m.Spec.PodMetricsEndpoints, port)
		}
		if m.Metadata.Name == "trellis-proxies" {
			if e := m.Spec.Selector.MatchExpressions; len(e) != 1 || e[0].Key != meshv1.MeshLabel || e[0].Operator != "Exists" {
				t.Errorf("trellis-proxies selects %+v, want pods with the %s label the injector sets", e, meshv1.MeshLabel)
			}
		}
	}
	for name := range want {
		t.Errorf("no PodMonitor %s", name)
	}
}

// Every alert has a severity, a summary and a runbook line, and reads only
// metrics that Trellis exports (or Prometheus's own up).
func TestAlerts(t *testing.T) {
	data, err := os.ReadFile("alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Kind string
		Spec struct {
			Groups []struct {
				Name  string
				Rules []struct {
					Alert, Expr, For string
					Labels           map[string]string
					Annotations      map[string]string
				}
			}
		}
	}
	if err := yaml.Unmarshal(data, &rule); err != nil {
		t.Fatal(err)
	}
	if rule.Kind != "PrometheusRule" {
		t.Fatalf("kind %q", rule.Kind)
	}
	names, err := metricnames.Declared("../..")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Expr == "" || r.For == "" {
				t.Errorf("group %s: rule %+v lacks alert, expr or for", g.Name, r)
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || len(r.Annotations["runbook"]) < 40 {
				t.Errorf("%s: wants a summary and a runbook line", r.Alert)
			}
			used := metricnames.Used(r.Expr)
			if len(used) == 0 && !strings.Contains(r.Expr, "up{") {
				t.Errorf("%s: %q reads no Trellis metric", r.Alert, r.Expr)
			}
			for _, m := range used {
				if !names[m] {
					t.Errorf("%s: metric %s is not one Trellis exports", r.Alert, m)
				}
			}
		}
	}
	if n < 6 {
		t.Errorf("%d alerts; want at least certificates, control plane, operator, proxy errors and injector", n)
	}
}
