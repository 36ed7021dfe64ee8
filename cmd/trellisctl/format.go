package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/trellis-mesh/trellis/controlplane/traffic"
)

// table writes aligned columns, as kubectl does.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	_, _ = fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// writeJSON prints v indented, with a final newline: the stable form of
// every command's -o json.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Cells of the traffic tables; "-" when there is nothing to show.

func fmtSuccess(sr *float64) string {
	if sr == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", *sr*100)
}

func fmtRPS(rps float64, requests uint64) string {
	if requests == 0 && rps == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1frps", rps)
}

// fmtMs prints a latency with the precision that reads: 0.42ms, 3.5ms, 120ms.
func fmtMs(ms float64) string {
	switch {
	case ms < 1:
		return fmt.Sprintf("%.2fms", ms)
	case ms < 10:
		return fmt.Sprintf("%.1fms", ms)
	default:
		return fmt.Sprintf("%.0fms", ms)
	}
}

func fmtLatency(l *traffic.Latency) (p50, p95, p99 string) {
	if l == nil {
		return "-", "-", "-"
	}
	return fmtMs(l.P50), fmtMs(l.P95), fmtMs(l.P99)
}

func fmtCount(n uint64) string { return fmt.Sprint(n) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fmtAge is a duration as kubectl prints ages: 45s, 12m, 3h10m, 5d.
func fmtAge(d time.Duration) string {
	neg := d < 0
	if neg {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		s = fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		s = fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		s = fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		s = fmt.Sprintf("%dd", int(d.Hours()/24))
	}
	if neg {
		return "-" + s
	}
	return s
}

// parseWindow checks --window against the API's bounds, so that a typo is
// caught before the port-forward.
func parseWindow(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("--window %q: %w (use a duration such as 30s or 5m)", s, err)
	}
	if d < traffic.MinWindow || d > traffic.MaxWindow {
		return 0, fmt.Errorf("--window %s: the control plane keeps between %s and %s", d, traffic.MinWindow, traffic.MaxWindow)
	}
	return d, nil
}
