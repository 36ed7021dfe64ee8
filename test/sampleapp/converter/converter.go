package converter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	converterv1 "github.com/trellis-mesh/trellis/test/sampleapp/converter/v1"
)

// absoluteZero is 0 K in degrees Celsius.
const absoluteZero = -273.15

// Versions the converter can run as.
const (
	V1 = "v1"
	V2 = "v2"
)

// Config is how a converter behaves.
type Config struct {
	// Version is V1 or V2. V2 rounds its values to one decimal. Both name
	// themselves in their responses.
	Version string
	// FailPercent (0 to 100) is the share of requests that fail with
	// Unavailable. Failures are spread evenly: with 50, every second request
	// fails, so a test can count on the exact share.
	FailPercent int
	// Delay is added to every request (every message of a stream), for
	// timeout tests. A request whose deadline passes during it ends with the
	// context's error.
	Delay time.Duration
	// Pod is the name of the pod, sent back in responses.
	Pod string
}

// Validate says what is wrong with c, naming the environment variable that
// sets each field.
func (c Config) Validate() error {
	var errs []error
	if c.Version != V1 && c.Version != V2 {
		errs = append(errs, fmt.Errorf("VERSION %q: want %q or %q", c.Version, V1, V2))
	}
	if c.FailPercent < 0 || c.FailPercent > 100 {
		errs = append(errs, fmt.Errorf("FAIL_PERCENT %d: want 0 to 100", c.FailPercent))
	}
	if c.Delay < 0 {
		errs = append(errs, fmt.Errorf("DELAY %s: want a duration of 0 or more, such as 200ms", c.Delay))
	}
	return errors.Join(errs...)
}

// Convert converts celsius into unit, as a converter of version would.
func Convert(celsius float64, unit converterv1.Unit, version string) (float64, error) {
	if math.IsNaN(celsius) || math.IsInf(celsius, 0) {
		return 0, status.Errorf(codes.InvalidArgument, "celsius %v is not a temperature", celsius)
	}
	if celsius < absoluteZero {
		return 0, status.Errorf(codes.InvalidArgument, "celsius %v is below absolute zero (%v)", celsius, absoluteZero)
	}
	var v float64
	switch unit {
	case converterv1.Unit_UNIT_CELSIUS:
		v = celsius
	case converterv1.Unit_UNIT_FAHRENHEIT:
		v = celsius*9/5 + 32
	case converterv1.Unit_UNIT_KELVIN:
		v = celsius - absoluteZero
	default:
		return 0, status.Errorf(codes.InvalidArgument, "unit %v: want UNIT_CELSIUS, UNIT_FAHRENHEIT or UNIT_KELVIN", unit)
	}
	if version == V2 {
		v = math.Round(v*10) / 10
	}
	return v, nil
}

// Server implements the Converter gRPC service.
type Server struct {
	converterv1.UnimplementedConverterServer
	cfg Config
	// calls counts requests (stream messages included), to decide which fail.
	calls atomic.Uint64
}

var _ converterv1.ConverterServer = (*Server)(nil)

// NewServer returns a Converter that behaves as cfg says. cfg must be valid.
func NewServer(cfg Config) *Server {
	return &Server{cfg: cfg}
}

// Convert implements converterv1.ConverterServer.
func (s *Server) Convert(ctx context.Context, req *converterv1.ConvertRequest) (*converterv1.ConvertResponse, error) {
	return s.convert(ctx, req)
}

// ConvertStream implements converterv1.ConverterServer. Each message is a
// request of its own for Delay and FailPercent: a failing message ends the
// stream with Unavailable after the responses before it.
func (s *Server) ConvertStream(stream grpc.BidiStreamingServer[converterv1.ConvertRequest, converterv1.ConvertResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err := s.convert(stream.Context(), req)
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

func (s *Server) convert(ctx context.Context, req *converterv1.ConvertRequest) (*converterv1.ConvertResponse, error) {
	n := s.calls.Add(1) - 1
	if s.cfg.Delay > 0 {
		t := time.NewTimer(s.cfg.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if fails(n, s.cfg.FailPercent) {
		return nil, status.Errorf(codes.Unavailable, "converter %s: failing this request on purpose (FAIL_PERCENT=%d)", s.cfg.Version, s.cfg.FailPercent)
	}
	v, err := Convert(req.GetCelsius(), req.GetUnit(), s.cfg.Version)
	if err != nil {
		return nil, err
	}
	return &converterv1.ConvertResponse{Value: v, Unit: req.GetUnit(), Version: s.cfg.Version, Pod: s.cfg.Pod}, nil
}

// fails says whether request n (counting from 0) fails when percent of them
// must: it fails when it carries the running count of failures,
// floor(n*percent/100), up by one. That spreads the failures evenly and makes
// the share exact over every 100 requests.
func fails(n uint64, percent int) bool {
	p := uint64(percent)
	return (n+1)*p/100 > n*p/100
}

// NewGRPCServer returns a gRPC server with the Converter s, the standard
// health service (grpc.health.v1, SERVING for "" and for the Converter) and
// server reflection registered. Call the returned health server's Shutdown
// before stopping, so that probes see NOT_SERVING while requests drain.
func NewGRPCServer(s *Server, opts ...grpc.ServerOption) (*grpc.Server, *health.Server) {
	srv := grpc.NewServer(opts...)
	converterv1.RegisterConverterServer(srv, s)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(converterv1.Converter_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	return srv, hs
}
