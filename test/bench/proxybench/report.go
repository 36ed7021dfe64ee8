package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
	"unicode/utf8"
)

// result is one row. Latencies are in microseconds; CPU, RSS and the ratios
// are absent for a row without proxies.
type result struct {
	Name      string  `json:"name"`
	Hops      int     `json:"hops"`
	Proxies   int     `json:"proxies"`   // processes whose CPU and RSS count
	Requests  int     `json:"requests"`  // fixed-rate run
	Errors    int     `json:"errors"`    // fixed-rate run: answers other than 200
	ActualQPS float64 `json:"actualQPS"` // fixed-rate run
	Sockets   int     `json:"sockets"`   // fixed-rate run: connections fortio opened
	P50       float64 `json:"p50Micros"`
	P99       float64 `json:"p99Micros"`
	P999      float64 `json:"p999Micros"`
	// CPUPer1k is the proxies' user+system CPU over the fixed-rate run, in
	// milliseconds per 1000 requests.
	CPUPer1k   float64 `json:"cpuMillisPer1kRequests,omitempty"`
	RSSIdleKiB int64   `json:"rssIdleKiB,omitempty"`
	RSSLoadKiB int64   `json:"rssLoadKiB,omitempty"` // at the end of the fixed-rate run
	MaxRPS     float64 `json:"maxRequestsPerSecond"`
	MaxErrors  int     `json:"maxErrors"` // closed-loop run: non-2xx/3xx answers and socket errors

	// Set by compare: the p50 this row adds to direct's, and the ratios of
	// its added p50, CPU and maximum rate to the HAProxy row of its hops.
	AddedP50   *float64 `json:"addedP50Micros,omitempty"`
	AddedP50Vs *float64 `json:"addedP50VsHAProxy,omitempty"`
	CPUPer1kVs *float64 `json:"cpuPer1kVsHAProxy,omitempty"`
	MaxRPSVs   *float64 `json:"maxRequestsPerSecondVsHAProxy,omitempty"`
	ComparedTo string   `json:"comparedTo,omitempty"`
}

// report is one run's table and what it ran on.
type report struct {
	Started time.Time `json:"started"`
	Machine struct {
		Kernel  string `json:"kernel"`
		CPU     string `json:"cpu"`
		Cores   int    `json:"cores"`
		HAProxy string `json:"haproxy"`
		Fortio  string `json:"fortio"`
		Wrk     string `json:"wrk"`
		// LoadAvg is /proc/loadavg before the run: other work on the
		// machine's two cores moves every number in the table.
		LoadAvg string `json:"loadAvg"`
	} `json:"machine"`
	Load struct {
		BodyBytes      int     `json:"bodyBytes"`
		QPS            float64 `json:"qps"`
		Duration       string  `json:"duration"`
		Connections    int     `json:"connections"`
		Uniform        bool    `json:"uniform"`
		Warmup         string  `json:"warmup"`
		MaxDuration    string  `json:"maxDuration"`
		MaxThreads     int     `json:"maxThreads"`
		MaxConnections int     `json:"maxConnections"`
	} `json:"load"`
	Rows []result `json:"rows"`
}

func newReport(cfg config) *report {
	r := &report{Started: time.Now().UTC()}
	r.Machine.Kernel = strings.TrimSpace(readFile("/proc/sys/kernel/osrelease"))
	r.Machine.CPU = cpuModel()
	r.Machine.Cores = runtime.NumCPU()
	if f := strings.Fields(readFile("/proc/loadavg")); len(f) >= 3 {
		r.Machine.LoadAvg = strings.Join(f[:3], " ")
	}
	// "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"
	if f := strings.Fields(firstLine(cfg.tools.haproxy, "-v")); len(f) >= 3 {
		r.Machine.HAProxy = strings.Join(f[:3], " ")
	}
	r.Machine.Fortio = firstLine(cfg.tools.fortio, "version")
	// "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer"
	if f := strings.Fields(firstLine(cfg.tools.wrk, "-v")); len(f) >= 2 {
		r.Machine.Wrk = strings.Join(f[:2], " ")
	}
	l := &r.Load
	l.BodyBytes, l.QPS, l.Duration, l.Connections, l.Warmup = bodyBytes, cfg.qps, cfg.duration.String(), cfg.connections, cfg.warmup.String()
	l.Uniform = cfg.uniform
	l.MaxDuration, l.MaxThreads, l.MaxConnections = cfg.maxDuration.String(), cfg.maxThreads, cfg.maxConns
	return r
}

// compare sets each row's added p50 (against direct) and its ratios to the
// reference row of its hops, where those rows ran.
func (r *report) compare() {
	var direct *result
	refs := map[int]*result{}
	refNames := map[int]string{}
	for _, sc := range allScenarios() {
		if sc.reference {
			refNames[sc.hops] = sc.name
		}
	}
	for i := range r.Rows {
		row := &r.Rows[i]
		if row.Hops == 0 {
			direct = row
		}
		if refNames[row.Hops] == row.Name && row.Hops > 0 {
			refs[row.Hops] = row
		}
	}
	for i := range r.Rows {
		row := &r.Rows[i]
		if row.Hops == 0 {
			continue
		}
		if direct != nil {
			row.AddedP50 = ptr(row.P50 - direct.P50)
		}
		ref := refs[row.Hops]
		if ref == nil {
			continue
		}
		row.ComparedTo = ref.Name
		if row.AddedP50 != nil && ref.AddedP50 != nil && *ref.AddedP50 > 0 {
			row.AddedP50Vs = ptr(*row.AddedP50 / *ref.AddedP50)
		}
		if ref.CPUPer1k > 0 && row.Proxies > 0 {
			row.CPUPer1kVs = ptr(row.CPUPer1k / ref.CPUPer1k)
		}
		if ref.MaxRPS > 0 {
			row.MaxRPSVs = ptr(row.MaxRPS / ref.MaxRPS)
		}
	}
}

func ptr(f float64) *float64 { return &f }

// writeTable prints the load, then the table, aligned, then anything that
// makes a row's numbers suspect.
func (r *report) writeTable(out io.Writer) error {
	var w bytes.Buffer
	l := r.Load
	fmt.Fprintf(&w, "HTTP/1.1, %d-byte bodies, client and server in two network namespaces on one bridge; %s, %d cores, Linux %s, load average %s before the run\n",
		l.BodyBytes, r.Machine.CPU, r.Machine.Cores, r.Machine.Kernel, r.Machine.LoadAvg)
	arrivals := "spread evenly"
	if !l.Uniform {
		arrivals = "in bursts"
	}
	fmt.Fprintf(&w, "fixed rate: fortio %s, %.0f req/s for %s over %d connections, requests %s (after %s warm-up); max: wrk, %d threads, %d connections, %s; %s\n",
		r.Machine.Fortio, l.QPS, l.Duration, l.Connections, arrivals, l.Warmup, l.MaxThreads, l.MaxConnections, l.MaxDuration, r.Machine.HAProxy)
	fmt.Fprintf(&w, "CPU: the row's proxies' utime+stime over the fixed-rate run; RSS: their VmRSS, idle and at the end of it; ×HAProxy: to the HAProxy row of the same hops\n\n")

	rows := [][]string{{"scenario", "p50 µs", "p99 µs", "p99.9 µs", "+p50 µs", "CPU ms/1k req", "RSS idle MiB", "RSS load MiB", "max req/s",
		"+p50 ×HAProxy", "CPU ×HAProxy", "max req/s ×HAProxy"}}
	var notes []string
	for _, row := range r.Rows {
		cells := []string{row.Name, f0(row.P50), f0(row.P99), f0(row.P999), optF(row.AddedP50, "%.0f"), "-", "-", "-", f0(row.MaxRPS),
			optF(row.AddedP50Vs, "%.2f"), optF(row.CPUPer1kVs, "%.2f"), optF(row.MaxRPSVs, "%.2f")}
		if row.Proxies > 0 {
			cells[5] = fmt.Sprintf("%.1f", row.CPUPer1k)
			cells[6] = fmt.Sprintf("%.1f", float64(row.RSSIdleKiB)/1024)
			cells[7] = fmt.Sprintf("%.1f", float64(row.RSSLoadKiB)/1024)
		}
		rows = append(rows, cells)
		if row.Errors > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d of %d requests of the fixed-rate run were not answered 200", row.Name, row.Errors, row.Requests))
		}
		if row.MaxErrors > 0 {
			notes = append(notes, fmt.Sprintf("%s: wrk counted %d errors", row.Name, row.MaxErrors))
		}
		if row.Sockets > l.Connections {
			notes = append(notes, fmt.Sprintf("%s: fortio opened %d connections for %d: keep-alive broke", row.Name, row.Sockets, l.Connections))
		}
		if row.ActualQPS < 0.98*l.QPS {
			notes = append(notes, fmt.Sprintf("%s: the fixed-rate run reached %.0f req/s of %.0f", row.Name, row.ActualQPS, l.QPS))
		}
	}
	writeAligned(&w, rows)
	for _, n := range notes {
		fmt.Fprintln(&w, "note:", n)
	}
	_, err := out.Write(w.Bytes())
	return err
}

// writeAligned prints rows as columns two spaces apart, the first
// left-aligned and the others right-aligned.
func writeAligned(w *bytes.Buffer, rows [][]string) {
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	for _, row := range rows {
		for i, c := range row {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i == 0 {
				w.WriteString(c + pad)
			} else {
				w.WriteString("  " + pad + c)
			}
		}
		w.WriteByte('\n')
	}
}

func f0(f float64) string { return fmt.Sprintf("%.0f", f) }

func optF(f *float64, format string) string {
	if f == nil {
		return "-"
	}
	return fmt.Sprintf(format, *f)
}

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func cpuModel() string {
	for line := range strings.SplitSeq(readFile("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// firstLine is the first line a tool prints about its version (wrk exits 1
// after printing it).
func firstLine(tool string, args ...string) string {
	out, _ := exec.Command(tool, args...).CombinedOutput()
	line, _, _ := bytes.Cut(bytes.TrimSpace(out), []byte("\n"))
	return string(line)
}
