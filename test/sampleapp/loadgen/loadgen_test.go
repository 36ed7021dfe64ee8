package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// target answers like the temperature API behind a canary: request n (from
// 0) fails with 500 when n%5 == 4, and of the rest, n%10 < 2 are served by
// v2. It tallies what it answered, for the load generator's sums to match.
type target struct {
	mu         sync.Mutex
	n          int
	statuses   map[string]int
	converters map[string]int
	header     http.Header
}

func (s *target) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := s.n
	s.n++
	s.header = r.Header.Clone()
	w.Header().Set("Content-Type", "application/json")
	if n%5 == 4 {
		s.statuses["500"]++
		s.mu.Unlock()
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = fmt.Fprint(w, `{"error":"the converter failed","code":"Unavailable"}`)
		return
	}
	version := "v1"
	if n%10 < 2 {
		version = "v2"
	}
	s.statuses["200"]++
	s.converters[version]++
	s.mu.Unlock()
	_, _ = fmt.Fprintf(w, `{"city":"Oslo","celsius":-3.5,"value":25.7,"unit":"F","converter":%q,"pod":"p"}`, version)
}

func newTarget(t *testing.T) (*target, string) {
	t.Helper()
	tg := &target{statuses: map[string]int{}, converters: map[string]int{}}
	srv := httptest.NewServer(tg)
	t.Cleanup(srv.Close)
	return tg, srv.URL
}

func TestRunCounts(t *testing.T) {
	tg, url := newTarget(t)
	cfg := Config{
		URL: url + "/temperature?city=Oslo&unit=F", Rate: 200, Duration: time.Second,
		Concurrency: 8, Timeout: 5 * time.Second, Header: http.Header{"X-Test": {"yes"}},
	}
	res := Run(context.Background(), cfg)

	if res.Planned != 200 {
		t.Errorf("planned %d; want 200", res.Planned)
	}
	// A busy machine may fall behind the schedule and drop the last few;
	// the sums below are checked against what the target answered.
	if res.Total < 150 || res.Total > res.Planned {
		t.Errorf("total %d; want 150 to %d", res.Total, res.Planned)
	}
	tg.mu.Lock()
	defer tg.mu.Unlock()
	if res.Total != tg.n {
		t.Errorf("total %d; the target answered %d", res.Total, tg.n)
	}
	if len(res.ByStatusCode) != len(tg.statuses) {
		t.Errorf("status codes %v; the target answered %v", res.ByStatusCode, tg.statuses)
	}
	for k, n := range tg.statuses {
		if res.ByStatusCode[k] != n {
			t.Errorf("status %s: %d; the target answered %d", k, res.ByStatusCode[k], n)
		}
	}
	if res.Successes != tg.statuses["200"] {
		t.Errorf("successes %d; want %d", res.Successes, tg.statuses["200"])
	}
	if want := float64(res.Successes) / float64(res.Total); res.SuccessRate != want {
		t.Errorf("success rate %v; want %v", res.SuccessRate, want)
	}
	// 1 in 5 fail: the rate is 0.8 give or take the last, partial, cycle.
	if res.SuccessRate < 0.78 || res.SuccessRate > 0.82 {
		t.Errorf("success rate %v; want about 0.8", res.SuccessRate)
	}
	for _, v := range []string{"v1", "v2"} {
		if res.ByConverter[v] != tg.converters[v] {
			t.Errorf("converter %s: %d; the target answered %d", v, res.ByConverter[v], tg.converters[v])
		}
	}
	// Of the successes, 2 in 8 are v2: a 75/25 split.
	if share := float64(res.ByConverter["v2"]) / float64(res.Successes); share < 0.23 || share > 0.27 {
		t.Errorf("v2 share %v of %v; want about 0.25", share, res.ByConverter)
	}
	if !(0 < res.P50Ms && res.P50Ms <= res.P90Ms && res.P90Ms <= res.P99Ms) {
		t.Errorf("latencies p50 %v p90 %v p99 %v; want 0 < p50 <= p90 <= p99", res.P50Ms, res.P90Ms, res.P99Ms)
	}
	if got := tg.header.Get("X-Test"); got != "yes" {
		t.Errorf("header X-Test %q; want yes", got)
	}
	// One line of JSON with the fields the tests read.
	line, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"total"`, `"successes"`, `"success_rate"`, `"p50_ms"`, `"p90_ms"`, `"p99_ms"`, `"by_status_code"`, `"by_converter"`} {
		if !bytes.Contains(line, []byte(k)) {
			t.Errorf("JSON %s has no %s", line, k)
		}
	}
}

func TestRunStopsAtTheDuration(t *testing.T) {
	cases := map[string]struct {
		// delay is how long the target takes to answer.
		delay       time.Duration
		rate        float64
		duration    time.Duration
		concurrency int
		timeout     time.Duration
		// most is the most requests that may be sent.
		most int
		// within bounds the whole run.
		within time.Duration
	}{
		"fast target": {
			rate: 100, duration: 500 * time.Millisecond, concurrency: 4, timeout: 5 * time.Second,
			most: 50, within: 2 * time.Second,
		},
		// Two workers busy for 400ms each: no more than 4 requests fit in
		// 500ms, and the rest of the schedule is dropped, not queued.
		"slow target": {
			delay: 400 * time.Millisecond, rate: 100, duration: 500 * time.Millisecond, concurrency: 2, timeout: 5 * time.Second,
			most: 4, within: 2 * time.Second,
		},
		// Answers slower than the timeout are errors, and do not hold the run.
		"target slower than the timeout": {
			delay: 3 * time.Second, rate: 10, duration: 300 * time.Millisecond, concurrency: 8, timeout: 200 * time.Millisecond,
			most: 3, within: 1500 * time.Millisecond,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-time.After(tc.delay):
				case <-r.Context().Done():
				}
			}))
			t.Cleanup(srv.Close)
			start := time.Now()
			res := Run(context.Background(), Config{URL: srv.URL, Rate: tc.rate, Duration: tc.duration,
				Concurrency: tc.concurrency, Timeout: tc.timeout, Header: http.Header{}})
			took := time.Since(start)
			if took < tc.duration-50*time.Millisecond || took > tc.within {
				t.Errorf("took %s; want %s to %s", took, tc.duration, tc.within)
			}
			if res.Total == 0 || res.Total > tc.most {
				t.Errorf("total %d; want 1 to %d", res.Total, tc.most)
			}
			if tc.timeout < tc.delay && (res.ByStatusCode["error"] != res.Total || res.FirstError == "") {
				t.Errorf("status codes %v, first error %q; want every request an error", res.ByStatusCode, res.FirstError)
			}
		})
	}
}

func TestRunCancelled(t *testing.T) {
	_, url := newTarget(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := Run(ctx, Config{URL: url, Rate: 50, Duration: time.Minute, Concurrency: 2, Timeout: time.Second, Header: http.Header{}})
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %s after being cancelled at 200ms", took)
	}
	if res.Total == 0 || res.Total > 15 {
		t.Errorf("total %d; want the few sent in 200ms", res.Total)
	}
}

func TestParseFlags(t *testing.T) {
	const url = "http://127.0.0.1:8080/temperature?city=Oslo&unit=F"
	cases := map[string]struct {
		args []string
		// wantErr is part of the error; empty when the flags are good.
		wantErr string
		want    Config
	}{
		"the README's": {
			args: []string{"--url", url, "--rate", "50", "--duration", "20s"},
			want: Config{URL: url, Rate: 50, Duration: 20 * time.Second, Concurrency: 16, Timeout: 10 * time.Second, Header: http.Header{}},
		},
		"everything": {
			args: []string{"--url=" + url, "--rate=5.5", "--duration=2s", "--concurrency=3", "--timeout=1s",
				"--header", "x-request-id: abc", "--header", "Host:temperature-api", "--header", "x-request-id:def"},
			want: Config{URL: url, Rate: 5.5, Duration: 2 * time.Second, Concurrency: 3, Timeout: time.Second,
				Header: http.Header{"X-Request-Id": {"abc", "def"}, "Host": {"temperature-api"}}},
		},
		"no url":                  {args: []string{"--rate", "1"}, wantErr: "--url is required"},
		"relative url":            {args: []string{"--url", "/temperature"}, wantErr: "--url"},
		"not http":                {args: []string{"--url", "ftp://example/x"}, wantErr: "--url"},
		"zero rate":               {args: []string{"--url", url, "--rate", "0"}, wantErr: "--rate"},
		"negative rate":           {args: []string{"--url", url, "--rate", "-5"}, wantErr: "--rate"},
		"rate not a number":       {args: []string{"--url", url, "--rate", "fast"}, wantErr: "rate"},
		"zero duration":           {args: []string{"--url", url, "--duration", "0s"}, wantErr: "--duration"},
		"duration without a unit": {args: []string{"--url", url, "--duration", "20"}, wantErr: "duration"},
		"no worker":               {args: []string{"--url", url, "--concurrency", "0"}, wantErr: "--concurrency"},
		"zero timeout":            {args: []string{"--url", url, "--timeout", "0s"}, wantErr: "--timeout"},
		"header without a colon":  {args: []string{"--url", url, "--header", "x-request-id"}, wantErr: "name:value"},
		"header without a name":   {args: []string{"--url", url, "--header", ":abc"}, wantErr: "name:value"},
		"no request in the time":  {args: []string{"--url", url, "--rate", "0.5", "--duration", "1s"}, wantErr: "makes no request"},
		"too many requests":       {args: []string{"--url", url, "--rate", "100000", "--duration", "1h"}, wantErr: "more than"},
		"unknown flag":            {args: []string{"--url", url, "--qps", "5"}, wantErr: "qps"},
		"stray argument":          {args: []string{"--url", url, "extra"}, wantErr: "unexpected arguments"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			got, err := ParseFlags(tc.args, &out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v; want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.URL != tc.want.URL || got.Rate != tc.want.Rate || got.Duration != tc.want.Duration ||
				got.Concurrency != tc.want.Concurrency || got.Timeout != tc.want.Timeout ||
				fmt.Sprint(got.Header) != fmt.Sprint(tc.want.Header) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	cases := map[string]struct {
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		"empty":         {sorted: nil, p: 50, want: 0},
		"one":           {sorted: []time.Duration{7}, p: 99, want: 7},
		"p50 of 1..100": {sorted: hundred, p: 50, want: 50 * time.Millisecond},
		"p90 of 1..100": {sorted: hundred, p: 90, want: 90 * time.Millisecond},
		"p99 of 1..100": {sorted: hundred, p: 99, want: 99 * time.Millisecond},
		"p0 is the min": {sorted: hundred, p: 0, want: time.Millisecond},
		"p50 of 1..3":   {sorted: hundred[:3], p: 50, want: 2 * time.Millisecond},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := Percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("got %s; want %s", got, tc.want)
			}
		})
	}
}

func TestResultJSON(t *testing.T) {
	tallies := []tally{
		{latencies: []time.Duration{time.Millisecond, 3 * time.Millisecond}, successes: 1,
			statuses: map[string]int{"200": 1, "503": 1}, converters: map[string]int{"v1": 1}},
		{latencies: []time.Duration{2 * time.Millisecond, 1500 * time.Microsecond}, successes: 1,
			statuses: map[string]int{"200": 1, "error": 1}, converters: map[string]int{"v2": 1}, firstError: "connection refused"},
	}
	res := sum(4, tallies, 2*time.Second)
	line, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"planned":4,"total":4,"successes":2,"success_rate":0.5,"p50_ms":1.5,"p90_ms":3,"p99_ms":3,` +
		`"by_status_code":{"200":2,"503":1,"error":1},"by_converter":{"v1":1,"v2":1},"elapsed_seconds":2,"first_error":"connection refused"}`
	if string(line) != want {
		t.Errorf("got  %s\nwant %s", line, want)
	}
}
