package main

import (
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	const summary = `Running 10s test @ http://127.0.0.1:15001/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  312.45us   8.12ms   85.12%
    Req/Sec    10.55k   512.33    11.80k    70.00%
  210012 requests in 10.00s, 249.12MB read
`
	cases := map[string]struct {
		out     string
		want    closedLoop
		wantErr bool
	}{
		"clean": {
			out:  summary + "Requests/sec:  21001.20\nTransfer/sec:     24.91MB\n",
			want: closedLoop{rps: 21001.2},
		},
		"errors are added up": {
			out: summary + "  Socket errors: connect 1, read 3, write 0, timeout 2\n  Non-2xx or 3xx responses: 5\n" +
				"Requests/sec:  21001.20\nTransfer/sec:     24.91MB\n",
			want: closedLoop{rps: 21001.2, errors: 11},
		},
		"no rate": {
			out:     "unable to connect to 127.0.0.1:15001 Connection refused\n",
			wantErr: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := parseWrk([]byte(tc.out))
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want one: %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseStatTicks(t *testing.T) {
	// The command name holds a space and a ')': only the last ')' ends it.
	// utime is 1234 and stime 56.
	stat := "4242 (ha) proxy) S 1 4242 4242 0 -1 4194560 2100 0 0 0 1234 56 0 0 20 0 1 0 1000 30000000 3600 18446744073709551615\n"
	got, err := parseStatTicks([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if got != 1290 {
		t.Errorf("got %d ticks, want 1290", got)
	}
	if _, err := parseStatTicks([]byte("4242 (haproxy) S 1")); err == nil {
		t.Error("a short line parsed")
	}
}

func TestParseVmRSS(t *testing.T) {
	got, err := parseVmRSS([]byte("Name:\thaproxy\nVmHWM:\t   16000 kB\nVmRSS:\t   14736 kB\nRssAnon:\t    4000 kB\n"))
	if err != nil || got != 14736 {
		t.Errorf("got %d, %v; want 14736", got, err)
	}
}

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 1000; i++ {
		lat = append(lat, time.Duration(i)*time.Microsecond)
	}
	for p, want := range map[float64]time.Duration{50: 500 * time.Microsecond, 99: 990 * time.Microsecond, 99.9: 999 * time.Microsecond, 100: time.Millisecond} {
		if got := percentile(lat, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if got := percentile(lat[:1], 99.9); got != time.Microsecond {
		t.Errorf("p99.9 of one = %v, want 1µs", got)
	}
}

// TestCompare checks that each row is compared with the HAProxy row of its
// hops, and its added p50 with direct's.
func TestCompare(t *testing.T) {
	r := report{Rows: []result{
		{Name: "direct", P50: 200, MaxRPS: 30000},
		{Name: "haproxy 1 hop", Hops: 1, Proxies: 1, P50: 300, CPUPer1k: 50, MaxRPS: 20000},
		{Name: "haproxy 2 hops (TLS)", Hops: 2, Proxies: 2, P50: 600, CPUPer1k: 200, MaxRPS: 10000},
		{Name: "other 1 hop", Hops: 1, Proxies: 1, P50: 350, CPUPer1k: 75, MaxRPS: 15000},
		{Name: "other 2 hops", Hops: 2, Proxies: 2, P50: 800, CPUPer1k: 100, MaxRPS: 12000},
	}}
	r.compare()
	want := map[string]struct{ added, addedVs, cpuVs, rpsVs float64 }{
		"haproxy 1 hop":        {100, 1, 1, 1},
		"haproxy 2 hops (TLS)": {400, 1, 1, 1},
		"other 1 hop":          {150, 1.5, 1.5, 0.75},
		"other 2 hops":         {600, 1.5, 0.5, 1.2},
	}
	for _, row := range r.Rows {
		w, ok := want[row.Name]
		if !ok {
			if row.AddedP50 != nil || row.AddedP50Vs != nil || row.CPUPer1kVs != nil || row.MaxRPSVs != nil {
				t.Errorf("%s: compared with something: %+v", row.Name, row)
			}
			continue
		}
		got := []*float64{row.AddedP50, row.AddedP50Vs, row.CPUPer1kVs, row.MaxRPSVs}
		for i, v := range []float64{w.added, w.addedVs, w.cpuVs, w.rpsVs} {
			if got[i] == nil || *got[i] != v {
				t.Errorf("%s: value %d is %v, want %v", row.Name, i, optF(got[i], "%g"), v)
			}
		}
	}
}

// TestSumSeries checks the reading of the proxies' metrics that the Trellis
// rows verify their path with.
func TestSumSeries(t *testing.T) {
	const text = `# HELP trellis_proxy_http_responses_total HTTP responses.
# TYPE trellis_proxy_http_responses_total counter
trellis_proxy_http_responses_total{direction="outbound",dst_service="bench/server:80",dst_workload="bench/server",src_workload="bench/client",status_class="2xx"} 1200
trellis_proxy_http_responses_total{direction="outbound",dst_service="bench/server:80",dst_workload="bench/server",src_workload="bench/client",status_class="5xx"} 3
trellis_proxy_http_responses_total{direction="outbound",dst_service="other",dst_workload="bench/server",src_workload="bench/client",status_class="2xx"} 5
trellis_proxy_http_responses_total{direction="inbound",dst_service="",dst_workload="bench/server",src_workload="a\"b,c=d",status_class="2xx"} 7
trellis_proxy_http_responses_total_other{direction="outbound",dst_workload="bench/server",status_class="2xx"} 100
`
	cases := map[string]struct {
		labels map[string]string
		want   float64
	}{
		"summed over the labels not asked": {map[string]string{"direction": "outbound", "dst_workload": "bench/server", "status_class": "2xx"}, 1205},
		"an empty value is a value":        {map[string]string{"dst_service": ""}, 7},
		"escaped quotes and separators":    {map[string]string{"src_workload": `a"b,c=d`}, 7},
		"no such label value":              {map[string]string{"dst_workload": ""}, 0},
		"no labels asked: every series":    {nil, 1215},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := sumSeries(text, responsesMetric, tc.labels); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSlug(t *testing.T) {
	if got := slug("trellis 2 hops (mTLS)"); got != "trellis-2-hops-mtls" {
		t.Errorf("got %q", got)
	}
}
