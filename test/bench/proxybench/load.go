package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// fixedRate is what a fortio run measured.
type fixedRate struct {
	requests int     // answered, with any status
	errors   int     // not answered with 200
	qps      float64 // achieved
	sockets  int     // connections opened; more than asked means keep-alive broke
	p50      time.Duration
	p99      time.Duration
	p999     time.Duration
}

// fortio sends cfg.qps requests a second for d over cfg.connections
// connections from the client's namespace. With cfg.uniform, -uniform
// spreads the connections' requests over each interval instead of sending
// them together, so that the latency is a request's, not a burst's queue,
// and a proxy wakes up for each request, as for independent clients.
// With measured set, the percentiles come
// from fortio's per-request log (1 µs resolution): its histogram's buckets
// are 10 to 25% wide, too coarse for a difference of 100 µs.
func (e *benchEnv) fortio(ctx context.Context, url string, cfg config, d time.Duration, measured bool) (fixedRate, error) {
	var r fixedRate
	report := filepath.Join(e.dir, "fortio.json")
	accessLog := filepath.Join(e.dir, "fortio-requests.jsonl")
	_ = os.Remove(accessLog) // fortio appends
	argv := []string{e.tools.fortio, "load", "-quiet", "-uniform=" + strconv.FormatBool(cfg.uniform),
		"-qps", strconv.FormatFloat(cfg.qps, 'f', -1, 64), "-t", d.String(), "-c", strconv.Itoa(cfg.connections), "-json", report}
	if measured {
		argv = append(argv, "-access-log-file", accessLog, "-access-log-format", "json")
	}
	if _, err := e.runIn(ctx, e.client, append(argv, url)...); err != nil {
		return r, err
	}
	var out struct {
		ActualQPS   float64
		RetCodes    map[string]int
		SocketCount int
	}
	b, err := os.ReadFile(report)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return r, fmt.Errorf("fortio's report %s: %w", report, err)
	}
	for code, n := range out.RetCodes {
		r.requests += n
		if code != "200" {
			r.errors += n
		}
	}
	r.qps, r.sockets = out.ActualQPS, out.SocketCount
	if !measured {
		return r, nil
	}
	lat, err := readLatencies(accessLog)
	if err != nil {
		return r, err
	}
	if len(lat) == 0 {
		return r, fmt.Errorf("fortio logged no request in %s", accessLog)
	}
	slices.Sort(lat)
	r.p50, r.p99, r.p999 = percentile(lat, 50), percentile(lat, 99), percentile(lat, 99.9)
	return r, nil
}

// readLatencies reads the latency of every request in fortio's JSON access
// log, one object a line with the latency in seconds.
func readLatencies(path string) ([]time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var lat []time.Duration
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var line struct {
			Latency float64 `json:"latency"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("%s: %q: %w", path, sc.Text(), err)
		}
		lat = append(lat, time.Duration(math.Round(line.Latency*float64(time.Second))))
	}
	return lat, sc.Err()
}

// percentile is the nearest-rank percentile p of sorted, which is not empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	// The tolerance keeps 99.9% of 1000 at rank 999, which floating point
	// makes 999.0000000000001.
	i := int(math.Ceil(p/100*float64(len(sorted))-1e-9)) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// closedLoop is what a wrk run measured.
type closedLoop struct {
	rps    float64
	errors int // non-2xx/3xx answers and socket errors
}

// wrk sends requests as fast as conns connections on threads threads
// answer, for d, from the client's namespace.
func (e *benchEnv) wrk(ctx context.Context, url string, threads, conns int, d time.Duration) (closedLoop, error) {
	out, err := e.runIn(ctx, e.client, e.tools.wrk, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", int(d/time.Second)), "--timeout", "5s", url)
	if err != nil {
		return closedLoop{}, err
	}
	return parseWrk(out)
}

var (
	wrkRPS       = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkNon2xx    = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSocketErr = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrk reads wrk's summary: requests per second, and the errors it
// prints only when there were some.
func parseWrk(out []byte) (closedLoop, error) {
	var r closedLoop
	m := wrkRPS.FindSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no Requests/sec in wrk's output:\n%s", out)
	}
	var err error
	if r.rps, err = strconv.ParseFloat(string(m[1]), 64); err != nil {
		return r, fmt.Errorf("wrk's Requests/sec %q: %w", m[1], err)
	}
	var counts [][]byte
	if m := wrkNon2xx.FindSubmatch(out); m != nil {
		counts = append(counts, m[1])
	}
	if m := wrkSocketErr.FindSubmatch(out); m != nil {
		counts = append(counts, m[1:]...)
	}
	for _, c := range counts {
		n, _ := strconv.Atoi(string(c)) // \d+ matched
		r.errors += n
	}
	return r, nil
}
