// Package grafana holds no code: its test checks the Grafana dashboards
// beside it (mesh, workload, control plane) against the metrics Trellis
// exports.
package grafana

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/trellis-mesh/trellis/test/metricnames"
)

type dashboard struct {
	UID, Title string
	Templating struct {
		List []struct{ Name, Query string }
	}
	Panels []struct {
		Title, Type string
		Datasource  struct{ UID string }
		Targets     []struct{ Expr string }
	}
}

// Each dashboard has its uid, panels that query the dashboard's Prometheus
// data source, and reads only metrics that Trellis's code declares.
func TestDashboards(t *testing.T) {
	names, err := metricnames.Declared("../..")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("*.json")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"trellis-mesh.json": true, "trellis-workload.json": true, "trellis-control-plane.json": true}
	for _, f := range files {
		delete(want, f)
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID+".json" != f || d.Title == "" || len(d.Panels) < 4 {
			t.Errorf("%s: uid %q, title %q, %d panels: want the file's name as uid, a title and the panels", f, d.UID, d.Title, len(d.Panels))
		}
		for _, v := range d.Templating.List {
			for _, m := range metricnames.Used(v.Query) {
				if !names[m] {
					t.Errorf("%s: variable %s reads %s, which Trellis does not export", f, v.Name, m)
				}
			}
		}
		for _, p := range d.Panels {
			if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
				t.Errorf("%s: panel %q: datasource %q, %d queries; want ${datasource} and a query", f, p.Title, p.Datasource.UID, len(p.Targets))
			}
			for _, q := range p.Targets {
				used := metricnames.Used(q.Expr)
				if len(used) == 0 {
					t.Errorf("%s: panel %q: %q reads no Trellis metric", f, p.Title, q.Expr)
				}
				for _, m := range used {
					if !names[m] {
						t.Errorf("%s: panel %q reads %s, which Trellis does not export", f, p.Title, m)
					}
				}
			}
		}
	}
	for f := range want {
		t.Errorf("no dashboard %s", f)
	}
}
