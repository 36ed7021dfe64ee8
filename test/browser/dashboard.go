package browser

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// What the dashboard's page (controlplane/dashboard/static) shows, as its
// DOM says it. The page keeps these attributes for tests and screen
// readers alike; change both together.

// Dashboard is the dashboard's page open in a Browser.
type Dashboard struct {
	*Browser
	URL string
}

// DashboardEdge is one edge of the page's graph (an element
// #graph g.edge).
type DashboardEdge struct {
	// Source and Destination are node keys: <namespace>/<workload>, or
	// unmeshed:<namespace> for callers outside the mesh and
	// service:<namespace>/<service> for callees the control plane does not
	// know as a workload.
	Source      string `json:"source"`
	Destination string `json:"destination"`
	// State is ok, warn, fail or none (no requests).
	State       string   `json:"state"`
	RPS         float64  `json:"rps"`
	Requests    uint64   `json:"requests"`
	SuccessRate *float64 `json:"successRate"`
	P99Ms       *float64 `json:"p99Ms"`
	// MTLS is yes, no or partly.
	MTLS string `json:"mtls"`
	// Label is the text drawn on the edge (rps · success · p99).
	Label string `json:"label"`
	// Stroke is the line's computed colour, as CSS gives it: rgb(r, g, b).
	Stroke      string  `json:"stroke"`
	StrokeWidth float64 `json:"strokeWidth"`
}

// DashboardNode is one node of the graph (#graph g.node).
type DashboardNode struct {
	Key       string `json:"key"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Kind is workload, unmeshed, service or unknown.
	Kind string `json:"kind"`
	// State is the workload's own (served) success state.
	State string `json:"state"`
	// X and Y are where the node is drawn, in the SVG's coordinates.
	X float64 `json:"x"`
	Y float64 `json:"y"`
}

// DashboardStatus is the page's refresh state.
type DashboardStatus struct {
	// Status is loading, ok or error.
	Status string `json:"status"`
	// Updates and Errors count the page's successful and failed polls.
	Updates int `json:"updates"`
	Errors  int `json:"errors"`
	// Error is the message shown, empty when hidden.
	Error string `json:"error"`
	// LastUpdated is the "Last updated" line.
	LastUpdated string `json:"lastUpdated"`
}

// OpenDashboard loads the page at url (the page itself: the control
// plane's HTTP root, or a port-forward to it) and waits up to timeout for
// its first successful refresh.
func OpenDashboard(b *Browser, url string, timeout time.Duration) (*Dashboard, error) {
	if err := b.Open(url); err != nil {
		return nil, err
	}
	d := &Dashboard{Browser: b, URL: url}
	if err := d.WaitUpdates(0, timeout); err != nil {
		return nil, err
	}
	return d, nil
}

// Status returns the page's refresh state.
func (d *Dashboard) Status() (DashboardStatus, error) {
	return Eval[DashboardStatus](d.Browser, `(() => {
		const b = document.body.dataset, e = document.getElementById('error');
		return {status: b.status, updates: +b.updates, errors: +b.errors,
			error: e.hidden ? '' : e.textContent, lastUpdated: document.getElementById('last-updated').textContent};
	})()`)
}

// WaitUpdates waits until the page has refreshed successfully more than
// after times.
func (d *Dashboard) WaitUpdates(after int, timeout time.Duration) error {
	return d.WaitFor(fmt.Sprintf(`+document.body.dataset.updates > %d`, after), timeout)
}

// WaitErrors waits until the page has failed to refresh more than after
// times.
func (d *Dashboard) WaitErrors(after int, timeout time.Duration) error {
	return d.WaitFor(fmt.Sprintf(`+document.body.dataset.errors > %d`, after), timeout)
}

// WaitEdge waits until the graph has the edge from source to destination
// (node keys) in state (ok, warn, fail, none; empty for any).
func (d *Dashboard) WaitEdge(source, destination, state string, timeout time.Duration) error {
	sel := fmt.Sprintf(`#graph g.edge[data-source=%s][data-destination=%s]`, strconv.Quote(source), strconv.Quote(destination))
	if state != "" {
		sel += fmt.Sprintf(`[data-state=%s]`, strconv.Quote(state))
	}
	return d.WaitFor(fmt.Sprintf(`document.querySelector(%s) !== null`, strconv.Quote(sel)), timeout)
}

// WaitGraph waits until the graph has at least edges edges.
func (d *Dashboard) WaitGraph(edges int, timeout time.Duration) error {
	return d.WaitFor(fmt.Sprintf(`document.querySelectorAll('#graph g.edge').length >= %d`, edges), timeout)
}

// Edges returns the graph's edges, in the page's order (by source, then
// destination).
func (d *Dashboard) Edges() ([]DashboardEdge, error) {
	return Eval[[]DashboardEdge](d.Browser, `[...document.querySelectorAll('#graph g.edge')].map(g => {
		const ds = g.dataset, path = g.querySelector('path'), style = getComputedStyle(path);
		const label = [...document.querySelectorAll('#graph g.edge-label')]
			.find(l => l.dataset.source === ds.source && l.dataset.destination === ds.destination);
		return {source: ds.source, destination: ds.destination, state: ds.state,
			rps: +ds.rps, requests: +ds.requests,
			successRate: ds.successRate === undefined ? null : +ds.successRate,
			p99Ms: ds.p99Ms === undefined ? null : +ds.p99Ms,
			mtls: ds.mtls, label: label ? label.textContent : '',
			stroke: style.stroke, strokeWidth: parseFloat(style.strokeWidth)};
	})`)
}

// Nodes returns the graph's nodes.
func (d *Dashboard) Nodes() ([]DashboardNode, error) {
	return Eval[[]DashboardNode](d.Browser, `[...document.querySelectorAll('#graph g.node')].map(g => {
		const ds = g.dataset, m = g.transform.baseVal.consolidate();
		return {key: ds.node, namespace: ds.namespace, name: ds.name, kind: ds.kind, state: ds.state,
			x: m ? m.matrix.e : 0, y: m ? m.matrix.f : 0};
	})`)
}

// TableRows returns the text of each cell of the rows of a table of the
// page (edges-table, workloads-table, proxies-table), with the row's
// data-state first when it has one ("" otherwise).
func (d *Dashboard) TableRows(table string) ([][]string, error) {
	return Eval[[][]string](d.Browser, fmt.Sprintf(`[...document.querySelectorAll('#%s tbody tr')]
		.filter(tr => !tr.querySelector('td.empty'))
		.map(tr => [tr.dataset.state || '', ...[...tr.cells].map(td => td.textContent)])`, table))
}

// Select picks a value of the namespace or window selector, as a user
// would, and waits for the refresh it causes.
func (d *Dashboard) Select(selector, value string, timeout time.Duration) error {
	st, err := d.Status()
	if err != nil {
		return err
	}
	ok, err := Eval[bool](d.Browser, fmt.Sprintf(`(() => {
		const s = document.getElementById(%s);
		s.value = %s;
		if (s.value !== %[2]s) return false;
		s.dispatchEvent(new Event('change'));
		return true;
	})()`, strconv.Quote(selector), strconv.Quote(value)))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("the page's #%s selector has no option %q", selector, value)
	}
	return d.WaitUpdates(st.Updates, timeout)
}

// RGB turns a colour #rrggbb into the rgb(r, g, b) that computed styles
// give, to compare with DashboardEdge.Stroke.
func RGB(hex string) string {
	hex = strings.TrimPrefix(hex, "#")
	if len(hex) != 6 {
		return hex
	}
	v, err := strconv.ParseUint(hex, 16, 32)
	if err != nil {
		return hex
	}
	return fmt.Sprintf("rgb(%d, %d, %d)", v>>16, v>>8&0xff, v&0xff)
}
