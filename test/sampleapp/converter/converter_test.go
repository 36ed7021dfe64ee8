package converter

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	converterv1 "github.com/trellis-mesh/trellis/test/sampleapp/converter/v1"
)

// serve starts a converter on a loopback port and returns a client of it.
func serve(t *testing.T, cfg Config) (converterv1.ConverterClient, *grpc.ClientConn) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := NewGRPCServer(NewServer(cfg))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return converterv1.NewConverterClient(conn), conn
}

func TestConvert(t *testing.T) {
	cases := map[string]struct {
		celsius float64
		unit    converterv1.Unit
		version string
		want    float64
		// code is the error's gRPC code; OK when it must succeed.
		code codes.Code
	}{
		"C to F":                       {celsius: 100, unit: converterv1.Unit_UNIT_FAHRENHEIT, version: V1, want: 212},
		"C to F below zero":            {celsius: -40, unit: converterv1.Unit_UNIT_FAHRENHEIT, version: V1, want: -40},
		"C to F, v1 keeps decimals":    {celsius: 21.37, unit: converterv1.Unit_UNIT_FAHRENHEIT, version: V1, want: 70.466},
		"C to K":                       {celsius: 0, unit: converterv1.Unit_UNIT_KELVIN, version: V1, want: 273.15},
		"C to C":                       {celsius: -3.5, unit: converterv1.Unit_UNIT_CELSIUS, version: V1, want: -3.5},
		"v2 rounds F to one decimal":   {celsius: 21.37, unit: converterv1.Unit_UNIT_FAHRENHEIT, version: V2, want: 70.5},
		"v2 rounds K to one decimal":   {celsius: 0, unit: converterv1.Unit_UNIT_KELVIN, version: V2, want: 273.2},
		"v2 rounds C to one decimal":   {celsius: -3.46, unit: converterv1.Unit_UNIT_CELSIUS, version: V2, want: -3.5},
		"unit unspecified":             {celsius: 10, unit: converterv1.Unit_UNIT_UNSPECIFIED, version: V1, code: codes.InvalidArgument},
		"unit not in the enum":         {celsius: 10, unit: converterv1.Unit(42), version: V1, code: codes.InvalidArgument},
		"below absolute zero":          {celsius: -300, unit: converterv1.Unit_UNIT_KELVIN, version: V1, code: codes.InvalidArgument},
		"not a number":                 {celsius: math.NaN(), unit: converterv1.Unit_UNIT_KELVIN, version: V1, code: codes.InvalidArgument},
		"absolute zero is a real one":  {celsius: -273.15, unit: converterv1.Unit_UNIT_KELVIN, version: V1, want: 0},
		"infinity is not a real value": {celsius: math.Inf(1), unit: converterv1.Unit_UNIT_FAHRENHEIT, version: V2, code: codes.InvalidArgument},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := Convert(tc.celsius, tc.unit, tc.version)
			if code := status.Code(err); code != tc.code {
				t.Fatalf("code %s (%v); want %s", code, err, tc.code)
			}
			if tc.code == codes.OK && math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("got %v; want %v", got, tc.want)
			}
		})
	}
}

// TestServerConvert goes through gRPC, to see what a client sees.
func TestServerConvert(t *testing.T) {
	cases := map[string]struct {
		cfg  Config
		req  *converterv1.ConvertRequest
		want *converterv1.ConvertResponse
		code codes.Code
	}{
		"v1 to F": {
			cfg:  Config{Version: V1, Pod: "converter-v1-abc"},
			req:  &converterv1.ConvertRequest{Celsius: -3.5, Unit: converterv1.Unit_UNIT_FAHRENHEIT},
			want: &converterv1.ConvertResponse{Value: 25.7, Unit: converterv1.Unit_UNIT_FAHRENHEIT, Version: V1, Pod: "converter-v1-abc"},
		},
		"v2 to K, rounded": {
			cfg:  Config{Version: V2},
			req:  &converterv1.ConvertRequest{Celsius: -3.5, Unit: converterv1.Unit_UNIT_KELVIN},
			want: &converterv1.ConvertResponse{Value: 269.7, Unit: converterv1.Unit_UNIT_KELVIN, Version: V2},
		},
		"bad unit": {
			cfg:  Config{Version: V1},
			req:  &converterv1.ConvertRequest{Celsius: 1},
			code: codes.InvalidArgument,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			client, _ := serve(t, tc.cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := client.Convert(ctx, tc.req)
			if code := status.Code(err); code != tc.code {
				t.Fatalf("code %s (%v); want %s", code, err, tc.code)
			}
			if tc.code != codes.OK {
				return
			}
			if math.Abs(got.GetValue()-tc.want.GetValue()) > 1e-9 || got.GetUnit() != tc.want.GetUnit() ||
				got.GetVersion() != tc.want.GetVersion() || got.GetPod() != tc.want.GetPod() {
				t.Errorf("got %v; want %v", got, tc.want)
			}
		})
	}
}

func TestFailPercent(t *testing.T) {
	const calls = 1000
	cases := map[string]struct {
		percent int
		// failures is the exact number of the calls that must fail.
		failures int
	}{
		"none":    {percent: 0, failures: 0},
		"a tenth": {percent: 10, failures: 100},
		"half":    {percent: 50, failures: 500},
		"a third": {percent: 33, failures: 330},
		"all":     {percent: 100, failures: calls},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			client, _ := serve(t, Config{Version: V1, FailPercent: tc.percent})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			failures, streak := 0, 0
			for range calls {
				_, err := client.Convert(ctx, &converterv1.ConvertRequest{Celsius: 20, Unit: converterv1.Unit_UNIT_KELVIN})
				switch code := status.Code(err); code {
				case codes.OK:
					streak = 0
				case codes.Unavailable:
					failures++
					streak++
				default:
					t.Fatalf("code %s (%v); want OK or Unavailable", code, err)
				}
				// Spread evenly: below 50%, never two failures in a row.
				if tc.percent <= 50 && streak > 1 {
					t.Fatalf("%d failures in a row at %d%%", streak, tc.percent)
				}
			}
			if failures != tc.failures {
				t.Errorf("%d of %d calls failed; want %d", failures, calls, tc.failures)
			}
		})
	}
}

func TestDelay(t *testing.T) {
	const delay = 150 * time.Millisecond
	cases := map[string]struct {
		delay   time.Duration
		timeout time.Duration
		// code is what the client sees.
		code codes.Code
		// minimum is the least the call must take.
		minimum time.Duration
	}{
		"no delay":                  {timeout: 5 * time.Second},
		"delayed":                   {delay: delay, timeout: 5 * time.Second, minimum: delay},
		"deadline before the delay": {delay: 5 * time.Second, timeout: delay, code: codes.DeadlineExceeded, minimum: delay},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			client, _ := serve(t, Config{Version: V1, Delay: tc.delay})
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			start := time.Now()
			_, err := client.Convert(ctx, &converterv1.ConvertRequest{Celsius: 20, Unit: converterv1.Unit_UNIT_KELVIN})
			took := time.Since(start)
			if code := status.Code(err); code != tc.code {
				t.Fatalf("code %s (%v); want %s", code, err, tc.code)
			}
			if took < tc.minimum {
				t.Errorf("took %s; want at least %s", took, tc.minimum)
			}
			// The deadline, not the 5s delay, ended it.
			if took > 3*time.Second {
				t.Errorf("took %s", took)
			}
		})
	}
}

func TestConvertStream(t *testing.T) {
	cases := map[string]struct {
		cfg Config
		n   int
		// failAt is the index of the first response that must not come, the
		// stream ending with Unavailable instead; -1 when all must come.
		failAt int
	}{
		"v1, 100 in, 100 out":       {cfg: Config{Version: V1}, n: 100, failAt: -1},
		"v2, 10 in, 10 out":         {cfg: Config{Version: V2}, n: 10, failAt: -1},
		"empty stream":              {cfg: Config{Version: V1}, n: 0, failAt: -1},
		"failing half: ends at 2nd": {cfg: Config{Version: V1, FailPercent: 50}, n: 10, failAt: 1},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			client, _ := serve(t, tc.cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := client.ConvertStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Send everything first, then read: responses must come back in
			// the order of the requests. Each request has its own value.
			sendErr := make(chan error, 1)
			go func() {
				for i := range tc.n {
					if err := stream.Send(&converterv1.ConvertRequest{Celsius: float64(i), Unit: converterv1.Unit_UNIT_KELVIN}); err != nil {
						sendErr <- err
						return
					}
				}
				sendErr <- stream.CloseSend()
			}()
			got := 0
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					if tc.failAt >= 0 && status.Code(err) == codes.Unavailable {
						break
					}
					t.Fatalf("response %d: %v", got, err)
				}
				want, _ := Convert(float64(got), converterv1.Unit_UNIT_KELVIN, tc.cfg.Version)
				if resp.GetValue() != want || resp.GetVersion() != tc.cfg.Version {
					t.Fatalf("response %d: %v; want value %v from %s", got, resp, want, tc.cfg.Version)
				}
				got++
			}
			want := tc.n
			if tc.failAt >= 0 {
				want = tc.failAt
			}
			if got != want {
				t.Errorf("%d responses; want %d", got, want)
			}
			if tc.failAt < 0 {
				if err := <-sendErr; err != nil {
					t.Errorf("send: %v", err)
				}
			}
		})
	}
}

func TestHealth(t *testing.T) {
	_, conn := serve(t, Config{Version: V1})
	cases := map[string]struct {
		service string
	}{
		"server":    {service: ""},
		"converter": {service: converterv1.Converter_ServiceDesc.ServiceName},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: tc.service})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("status %s; want SERVING", resp.GetStatus())
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	cases := map[string]struct {
		cfg Config
		// wantErr names what the error must mention; empty when valid.
		wantErr string
	}{
		"v1":                 {cfg: Config{Version: V1}},
		"v2, failing, slow":  {cfg: Config{Version: V2, FailPercent: 100, Delay: time.Second}},
		"no version":         {cfg: Config{}, wantErr: "VERSION"},
		"v3":                 {cfg: Config{Version: "v3"}, wantErr: "VERSION"},
		"fail percent over":  {cfg: Config{Version: V1, FailPercent: 101}, wantErr: "FAIL_PERCENT"},
		"fail percent under": {cfg: Config{Version: V1, FailPercent: -1}, wantErr: "FAIL_PERCENT"},
		"negative delay":     {cfg: Config{Version: V1, Delay: -time.Second}, wantErr: "DELAY"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v; want one naming %s", err, tc.wantErr)
			}
		})
	}
}

func TestReflection(t *testing.T) {
	_, conn := serve(t, Config{Version: V1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var services []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	for _, want := range []string{"trellis.sample.converter.v1.Converter", "grpc.health.v1.Health"} {
		if !slices.Contains(services, want) {
			t.Errorf("reflection lists %q; want %s among them", services, want)
		}
	}
}
