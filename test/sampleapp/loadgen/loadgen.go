package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxRequests bounds rate × duration, so a typo cannot start an endless run.
const maxRequests = 1_000_000

// maxBody is how much of a response body is read to find its converter.
const maxBody = 64 << 10

// Config is one run.
type Config struct {
	// URL is where the GET requests go.
	URL string
	// Rate is requests per second.
	Rate float64
	// Duration is how long requests are issued for.
	Duration time.Duration
	// Concurrency is how many requests may be in flight at once; when all
	// are busy, requests wait, and those not issued by Duration are not sent.
	Concurrency int
	// Timeout bounds each request.
	Timeout time.Duration
	// Header is sent with every request; a Host header sets the request's host.
	Header http.Header
}

// Planned is the number of requests the schedule holds: rate × duration.
func (c Config) Planned() int {
	return int(c.Rate * c.Duration.Seconds())
}

// headerFlag is a repeatable --header k:v.
type headerFlag struct{ h http.Header }

func (f headerFlag) String() string { return "" }

func (f headerFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, ":")
	k = strings.TrimSpace(k)
	if !ok || k == "" {
		return fmt.Errorf("%q: want name:value, such as x-request-id:abc", s)
	}
	f.h.Add(k, strings.TrimSpace(v))
	return nil
}

// ParseFlags reads a Config from command-line arguments; usage and errors of
// the flag package go to output.
func ParseFlags(args []string, output io.Writer) (Config, error) {
	cfg := Config{Header: http.Header{}}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.StringVar(&cfg.URL, "url", "", "URL to GET, such as http://temperature-api:8080/temperature?city=Oslo&unit=F (required)")
	fs.Float64Var(&cfg.Rate, "rate", 10, "requests per second")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to send requests for")
	fs.IntVar(&cfg.Concurrency, "concurrency", 16, "most requests in flight at once")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "bound of each request")
	fs.Var(headerFlag{cfg.Header}, "header", "header name:value sent with each request; repeatable")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q: every setting is a flag", fs.Args())
	}
	return cfg, cfg.Validate()
}

// Validate says what is wrong with c, naming the flag to fix.
func (c Config) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("--url is required"))
	} else if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("--url %q: want an absolute http:// or https:// URL", c.URL))
	}
	if !(c.Rate > 0) || math.IsInf(c.Rate, 0) {
		errs = append(errs, fmt.Errorf("--rate %v: want more than 0 requests per second", c.Rate))
	}
	if c.Duration <= 0 {
		errs = append(errs, fmt.Errorf("--duration %s: want more than 0, such as 20s", c.Duration))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("--concurrency %d: want 1 or more", c.Concurrency))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout %s: want more than 0, such as 5s", c.Timeout))
	}
	if len(errs) == 0 {
		if n := c.Rate * c.Duration.Seconds(); n < 1 {
			errs = append(errs, fmt.Errorf("--rate %v for --duration %s makes no request: raise either", c.Rate, c.Duration))
		} else if n > maxRequests {
			errs = append(errs, fmt.Errorf("--rate %v for --duration %s makes %.0f requests, more than %d: lower either", c.Rate, c.Duration, n, maxRequests))
		}
	}
	return errors.Join(errs...)
}

// Result sums up a run. It is printed as one line of JSON, with snake_case
// keys as the end-to-end tests read them.
type Result struct {
	// Planned is the number of requests in the schedule (rate × duration);
	// Total falls short of it when the target was too slow to keep up.
	Planned int `json:"planned"`
	// Total is the number of requests sent.
	Total int `json:"total"`
	// Successes is the number of 2xx answers.
	Successes int `json:"successes"`
	// SuccessRate is Successes / Total, 0 when nothing was sent.
	SuccessRate float64 `json:"success_rate"`
	// Latency percentiles of all requests sent, in milliseconds.
	P50Ms float64 `json:"p50_ms"`
	P90Ms float64 `json:"p90_ms"`
	P99Ms float64 `json:"p99_ms"`
	// ByStatusCode counts answers by HTTP status code; "error" counts
	// requests that got no answer (refused, reset, timed out).
	ByStatusCode map[string]int `json:"by_status_code"`
	// ByConverter counts answers by the "converter" field of their JSON body;
	// answers without one are not counted.
	ByConverter map[string]int `json:"by_converter"`
	// ElapsedSeconds is how long the run took, the last answers included.
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// FirstError is the first request error, to tell why "error" is there.
	FirstError string `json:"first_error,omitempty"`
}

// tally is what one worker saw.
type tally struct {
	latencies  []time.Duration
	successes  int
	statuses   map[string]int
	converters map[string]int
	firstError string
}

// Run sends cfg's requests and sums up the answers. Cancelling ctx stops it
// early; what was answered until then is still summed up.
func Run(ctx context.Context, cfg Config) Result {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	// The target is reached directly, as an application in the mesh would.
	transport.Proxy = nil
	transport.MaxIdleConnsPerHost = cfg.Concurrency
	client := &http.Client{Transport: transport, Timeout: cfg.Timeout}
	defer transport.CloseIdleConnections()

	planned := cfg.Planned()
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	jobs := make(chan struct{})
	tallies := make([]tally, cfg.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range tallies {
		t := &tallies[i]
		t.statuses, t.converters = map[string]int{}, map[string]int{}
		wg.Go(func() {
			for range jobs {
				t.do(ctx, client, cfg)
			}
		})
	}

	// Issue request i at start + i×interval, none after the duration.
	stop, cancel := context.WithDeadline(ctx, start.Add(cfg.Duration))
	timer := time.NewTimer(0)
schedule:
	for i := range planned {
		timer.Reset(time.Until(start.Add(time.Duration(i) * interval)))
		select {
		case <-timer.C:
		case <-stop.Done():
			break schedule
		}
		select {
		case jobs <- struct{}{}:
		case <-stop.Done():
			break schedule
		}
	}
	timer.Stop()
	cancel()
	close(jobs)
	wg.Wait()
	return sum(planned, tallies, time.Since(start))
}

func (t *tally) do(ctx context.Context, client *http.Client, cfg Config) {
	began := time.Now()
	code, converter, err := get(ctx, client, cfg)
	t.latencies = append(t.latencies, time.Since(began))
	if err != nil {
		t.statuses["error"]++
		if t.firstError == "" {
			t.firstError = err.Error()
		}
		return
	}
	t.statuses[strconv.Itoa(code)]++
	if code >= 200 && code < 300 {
		t.successes++
	}
	if converter != "" {
		t.converters[converter]++
	}
}

// get sends one request and returns its status code and the converter named
// in its body, if any.
func get(ctx context.Context, client *http.Client, cfg Config) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.URL, nil)
	if err != nil {
		return 0, "", err
	}
	for k, vs := range cfg.Header {
		if http.CanonicalHeaderKey(k) == "Host" {
			req.Host = vs[0]
			continue
		}
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, "", fmt.Errorf("reading the answer: %w", err)
	}
	var v struct {
		Converter string `json:"converter"`
	}
	// A body that is not JSON (a proxy's error page) has no converter.
	_ = json.Unmarshal(body, &v)
	return resp.StatusCode, v.Converter, nil
}

func sum(planned int, tallies []tally, elapsed time.Duration) Result {
	r := Result{
		Planned:        planned,
		ByStatusCode:   map[string]int{},
		ByConverter:    map[string]int{},
		ElapsedSeconds: elapsed.Seconds(),
	}
	var latencies []time.Duration
	for _, t := range tallies {
		latencies = append(latencies, t.latencies...)
		r.Successes += t.successes
		for k, n := range t.statuses {
			r.ByStatusCode[k] += n
		}
		for k, n := range t.converters {
			r.ByConverter[k] += n
		}
		if r.FirstError == "" {
			r.FirstError = t.firstError
		}
	}
	r.Total = len(latencies)
	if r.Total > 0 {
		r.SuccessRate = float64(r.Successes) / float64(r.Total)
	}
	slices.Sort(latencies)
	r.P50Ms = ms(Percentile(latencies, 50))
	r.P90Ms = ms(Percentile(latencies, 90))
	r.P99Ms = ms(Percentile(latencies, 99))
	return r
}

// Percentile returns the p-th percentile (nearest rank) of sorted, 0 when it
// is empty.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}
