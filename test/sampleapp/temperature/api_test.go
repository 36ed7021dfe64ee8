package temperature

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/trellis-mesh/trellis/test/sampleapp/converter"
	converterv1 "github.com/trellis-mesh/trellis/test/sampleapp/converter/v1"
)

// recorder keeps the metadata of the last call the converter received.
type recorder struct {
	mu sync.Mutex
	md metadata.MD
}

func (r *recorder) intercept(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	r.md = md.Copy()
	r.mu.Unlock()
	return handler(ctx, req)
}

func (r *recorder) last() metadata.MD {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.md
}

// startConverter serves a real converter on a loopback port.
func startConverter(t *testing.T, cfg converter.Config) (string, *recorder) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	srv, _ := converter.NewGRPCServer(converter.NewServer(cfg), grpc.UnaryInterceptor(rec.intercept))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), rec
}

// startAPI serves the API on a loopback port, calling the converter at addr.
func startAPI(t *testing.T, addr string, timeout time.Duration) string {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	api := New(Config{ConverterTimeout: timeout, Pod: "temperature-api-0"}, converterv1.NewConverterClient(conn),
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

func do(t *testing.T, method, url string, header http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" && resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("Content-Type %q; want application/json", ct)
	}
	return resp.StatusCode, body
}

func convert(t *testing.T, celsius float64, unit converterv1.Unit, version string) float64 {
	t.Helper()
	v, err := converter.Convert(celsius, unit, version)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestTemperature(t *testing.T) {
	oslo := Cities["Oslo"]
	cases := map[string]struct {
		// converter serves the API; nil for one that is down.
		converter *converter.Config
		// timeout is CONVERTER_TIMEOUT; 2s when zero.
		timeout time.Duration
		method  string
		path    string
		code    int
		// want is the body of a 200.
		want *Response
		// wantErr is the body of an error, if any.
		wantErr *ErrorResponse
	}{
		"Fahrenheit": {
			converter: &converter.Config{Version: converter.V1, Pod: "converter-v1-0"},
			path:      "/temperature?city=Oslo&unit=F",
			code:      http.StatusOK,
			want: &Response{City: "Oslo", Celsius: oslo, Value: convert(t, oslo, converterv1.Unit_UNIT_FAHRENHEIT, converter.V1),
				Unit: "F", Converter: "v1", ConverterPod: "converter-v1-0", Pod: "temperature-api-0"},
		},
		"Celsius": {
			converter: &converter.Config{Version: converter.V1},
			path:      "/temperature?city=Oslo&unit=C",
			code:      http.StatusOK,
			want:      &Response{City: "Oslo", Celsius: oslo, Value: oslo, Unit: "C", Converter: "v1", Pod: "temperature-api-0"},
		},
		"Kelvin": {
			converter: &converter.Config{Version: converter.V1},
			path:      "/temperature?city=Oslo&unit=K",
			code:      http.StatusOK,
			want: &Response{City: "Oslo", Celsius: oslo, Value: convert(t, oslo, converterv1.Unit_UNIT_KELVIN, converter.V1),
				Unit: "K", Converter: "v1", Pod: "temperature-api-0"},
		},
		"v2 answers, rounded": {
			converter: &converter.Config{Version: converter.V2},
			path:      "/temperature?city=Tokyo&unit=F",
			code:      http.StatusOK,
			want: &Response{City: "Tokyo", Celsius: Cities["Tokyo"], Value: convert(t, Cities["Tokyo"], converterv1.Unit_UNIT_FAHRENHEIT, converter.V2),
				Unit: "F", Converter: "v2", Pod: "temperature-api-0"},
		},
		"city and unit in any case": {
			converter: &converter.Config{Version: converter.V1},
			path:      "/temperature?city=oSLO&unit=k",
			code:      http.StatusOK,
			want: &Response{City: "Oslo", Celsius: oslo, Value: convert(t, oslo, converterv1.Unit_UNIT_KELVIN, converter.V1),
				Unit: "K", Converter: "v1", Pod: "temperature-api-0"},
		},
		"unit left out is Celsius": {
			converter: &converter.Config{Version: converter.V1},
			path:      "/temperature?city=Lisbon",
			code:      http.StatusOK,
			want:      &Response{City: "Lisbon", Celsius: Cities["Lisbon"], Value: Cities["Lisbon"], Unit: "C", Converter: "v1", Pod: "temperature-api-0"},
		},
		"unknown city": {
			converter: &converter.Config{Version: converter.V1},
			path:      "/temperature?city=Atlantis&unit=F",
			code:      http.StatusNotFound,
			wantErr:   &ErrorResponse{Error: `city "Atlantis" is not known`, City: "Atlantis", KnownCities: KnownCities()},
		},
		"no city": {
			converter: &converter.Config{Version: converter.V1},
			path:      "/temperature?unit=F",
			code:      http.StatusBadRequest,
		},
		"unknown unit": {
			converter: &converter.Config{Version: converter.V1},
			path:      "/temperature?city=Oslo&unit=R",
			code:      http.StatusBadRequest,
		},
		"converter failing": {
			converter: &converter.Config{Version: converter.V1, FailPercent: 100},
			path:      "/temperature?city=Oslo&unit=F",
			code:      http.StatusBadGateway,
			wantErr: &ErrorResponse{Error: "the converter failed", Code: "Unavailable",
				Message: "converter v1: failing this request on purpose (FAIL_PERCENT=100)"},
		},
		"converter down": {
			path: "/temperature?city=Oslo&unit=F",
			code: http.StatusBadGateway,
		},
		"converter slower than CONVERTER_TIMEOUT": {
			converter: &converter.Config{Version: converter.V1, Delay: 5 * time.Second},
			timeout:   100 * time.Millisecond,
			path:      "/temperature?city=Oslo&unit=F",
			code:      http.StatusGatewayTimeout,
		},
		"converter slow but within CONVERTER_TIMEOUT": {
			converter: &converter.Config{Version: converter.V1, Delay: 100 * time.Millisecond},
			timeout:   5 * time.Second,
			path:      "/temperature?city=Oslo&unit=C",
			code:      http.StatusOK,
			want:      &Response{City: "Oslo", Celsius: oslo, Value: oslo, Unit: "C", Converter: "v1", Pod: "temperature-api-0"},
		},
		"POST is not allowed": {
			converter: &converter.Config{Version: converter.V1},
			method:    http.MethodPost,
			path:      "/temperature?city=Oslo&unit=F",
			code:      http.StatusMethodNotAllowed,
		},
		"healthz": {
			converter: &converter.Config{Version: converter.V1},
			path:      "/healthz",
			code:      http.StatusOK,
		},
		"readyz does not wait for the converter": {
			path: "/readyz",
			code: http.StatusOK,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			addr := closedAddr(t)
			if tc.converter != nil {
				addr, _ = startConverter(t, *tc.converter)
			}
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 2 * time.Second
			}
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			url := startAPI(t, addr, timeout)
			start := time.Now()
			code, body := do(t, method, url+tc.path, nil)
			if code != tc.code {
				t.Fatalf("status %d %s; want %d", code, body, tc.code)
			}
			if tc.code == http.StatusGatewayTimeout && time.Since(start) > 2*time.Second {
				t.Errorf("answered after %s: CONVERTER_TIMEOUT %s was not applied", time.Since(start), timeout)
			}
			if tc.want != nil {
				var got Response
				if err := json.Unmarshal(body, &got); err != nil {
					t.Fatalf("%v: %s", err, body)
				}
				if got != *tc.want {
					t.Errorf("body %+v\nwant %+v", got, *tc.want)
				}
			}
			if code >= 400 && code != http.StatusMethodNotAllowed {
				var got ErrorResponse
				if err := json.Unmarshal(body, &got); err != nil {
					t.Fatalf("%v: %s", err, body)
				}
				if got.Error == "" {
					t.Errorf("error body %s says nothing", body)
				}
				if tc.wantErr != nil && (got.Error != tc.wantErr.Error || got.City != tc.wantErr.City ||
					!slices.Equal(got.KnownCities, tc.wantErr.KnownCities) || got.Code != tc.wantErr.Code || got.Message != tc.wantErr.Message) {
					t.Errorf("error body %+v\nwant %+v", got, *tc.wantErr)
				}
				switch code {
				case http.StatusBadGateway:
					if got.Code != "Unavailable" {
						t.Errorf("code %q; want the converter's gRPC status Unavailable", got.Code)
					}
				case http.StatusGatewayTimeout:
					if got.Code != "DeadlineExceeded" {
						t.Errorf("code %q; want DeadlineExceeded", got.Code)
					}
				}
			}
		})
	}
}

func TestTraceHeadersForwarded(t *testing.T) {
	cases := map[string]struct {
		header http.Header
		// want is the metadata the converter must see; absent the keys it
		// must not.
		want   map[string][]string
		absent []string
	}{
		"W3C trace context and request ID": {
			header: http.Header{
				"Traceparent":  {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
				"Tracestate":   {"trellis=abc,other=def"},
				"X-Request-Id": {"req-1"},
			},
			want: map[string][]string{
				"traceparent":  {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
				"tracestate":   {"trellis=abc,other=def"},
				"x-request-id": {"req-1"},
			},
			absent: []string{"b3"},
		},
		"B3, single and multi header": {
			header: http.Header{
				"B3":           {"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"},
				"X-B3-Traceid": {"80f198ee56343ba864fe8b2a57d3eff7"},
				"X-B3-Sampled": {"1"},
			},
			want: map[string][]string{
				"b3":           {"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"},
				"x-b3-traceid": {"80f198ee56343ba864fe8b2a57d3eff7"},
				"x-b3-sampled": {"1"},
			},
			absent: []string{"traceparent", "x-request-id"},
		},
		"other headers stay behind": {
			header: http.Header{
				"Authorization": {"Bearer secret"},
				"Cookie":        {"session=1"},
				"X-Request-Id":  {"req-2"},
			},
			want:   map[string][]string{"x-request-id": {"req-2"}},
			absent: []string{"authorization", "cookie"},
		},
	}
	addr, rec := startConverter(t, converter.Config{Version: converter.V1})
	url := startAPI(t, addr, 2*time.Second)
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if code, body := do(t, http.MethodGet, url+"/temperature?city=Oslo&unit=F", tc.header); code != http.StatusOK {
				t.Fatalf("status %d %s", code, body)
			}
			md := rec.last()
			for k, v := range tc.want {
				if got := md.Get(k); !slices.Equal(got, v) {
					t.Errorf("metadata %s %q; want %q", k, got, v)
				}
			}
			for _, k := range tc.absent {
				if got := md.Get(k); len(got) > 0 {
					t.Errorf("metadata %s %q; want none", k, got)
				}
			}
		})
	}
}
