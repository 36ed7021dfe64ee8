package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// Exporter sends spans to an OTLP/gRPC collector, in batches.
type Exporter struct {
	endpoint string
	service  string
	percent  float64
	queue    chan Span
	conn     *grpc.ClientConn
	log      *slog.Logger

	exported, dropped, failed prometheus.Counter
}

// ExporterOptions configure an Exporter.
type ExporterOptions struct {
	// Endpoint is the collector's OTLP/gRPC address, host:port (the
	// Mesh's spec.telemetry.tracing.endpoint), reached without TLS.
	Endpoint string
	// Service names the spans' resource: the pod's workload.
	Service string
	// SamplingPercent of new traces are sampled; a trace the caller
	// sampled (or not) is followed as it is.
	SamplingPercent float64
	Log             *slog.Logger
	Registerer      prometheus.Registerer
}

// queueSize bounds the spans held for export; more are dropped, counted.
const queueSize = 4096

// NewExporter returns an exporter; Run sends what it queues.
func NewExporter(o ExporterOptions) (*Exporter, error) {
	if _, _, err := net.SplitHostPort(o.Endpoint); err != nil {
		return nil, fmt.Errorf("tracing endpoint %q is not the host:port of an OTLP/gRPC collector, such as otel-collector.observability:4317: %w", o.Endpoint, err)
	}
	conn, err := grpc.NewClient(o.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("tracing endpoint %q: %w", o.Endpoint, err)
	}
	e := &Exporter{
		endpoint: o.Endpoint, service: o.Service, percent: o.SamplingPercent,
		queue: make(chan Span, queueSize),
		conn:  conn,
		log:   o.Log,
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	spans := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_spans_total",
		Help: "Sampled spans, by result: exported, dropped (the queue was full) or failed (the collector refused them or could not be reached).",
	}, []string{"result"})
	e.exported, e.dropped, e.failed = spans.WithLabelValues("exported"), spans.WithLabelValues("dropped"), spans.WithLabelValues("failed")
	if o.Registerer != nil {
		if err := o.Registerer.Register(spans); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// SamplingPercent is the share of new traces sampled.
func (e *Exporter) SamplingPercent() float64 { return e.percent }

// Export queues a span, or drops it when the queue is full.
func (e *Exporter) Export(s Span) {
	select {
	case e.queue <- s:
	default:
		e.dropped.Inc()
	}
}

// Run sends queued spans every second, or at 512, until ctx ends, then
// sends what is left.
func (e *Exporter) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var batch []Span
	flush := func(ctx context.Context) {
		if len(batch) == 0 {
			return
		}
		if err := e.send(ctx, batch); err != nil {
			e.failed.Add(float64(len(batch)))
			e.log.Warn("exporting spans", "endpoint", e.endpoint, "spans", len(batch), "error", err)
		} else {
			e.exported.Add(float64(len(batch)))
		}
		batch = batch[:0]
	}
	for {
		select {
		case s := <-e.queue:
			batch = append(batch, s)
			if len(batch) >= 512 {
				flush(ctx)
			}
		case <-t.C:
			flush(ctx)
		case <-ctx.Done():
			last, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			for len(e.queue) > 0 {
				batch = append(batch, <-e.queue)
			}
			flush(last)
			cancel()
			_ = e.conn.Close()
			return
		}
	}
}

// The OTLP trace service's method, and the field numbers of the messages
// that Export sends (opentelemetry-proto: collector/trace/v1, trace/v1,
// common/v1, resource/v1), written with protowire: the generated package
// would bring grpc-gateway into every sidecar. The test decodes what this
// writes with the generated types.
const exportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

const (
	fRequestResourceSpans = 1 // ExportTraceServiceRequest.resource_spans
	fResourceSpansRes     = 1 // ResourceSpans.resource
	fResourceSpansScope   = 2 // ResourceSpans.scope_spans
	fResourceAttributes   = 1 // Resource.attributes
	fScopeSpansScope      = 1 // ScopeSpans.scope
	fScopeSpansSpans      = 2 // ScopeSpans.spans
	fScopeName            = 1 // InstrumentationScope.name
	fSpanTraceID          = 1
	fSpanSpanID           = 2
	fSpanParentSpanID     = 4
	fSpanName             = 5
	fSpanKind             = 6
	fSpanStart            = 7 // fixed64
	fSpanEnd              = 8 // fixed64
	fSpanAttributes       = 9
	fSpanStatus           = 15
	fStatusCode           = 3 // Status.code: 2 is error
	fKeyValueKey          = 1
	fKeyValueValue        = 2
	fAnyString            = 1
	fAnyInt               = 3
)

func appendMessage(b []byte, field protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

func appendString(b []byte, field protowire.Number, v string) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendString(b, v)
}

func keyValue(key string, value []byte) []byte {
	return appendMessage(appendString(nil, fKeyValueKey, key), fKeyValueValue, value)
}

func stringValue(v string) []byte { return appendString(nil, fAnyString, v) }

func intValue(v int64) []byte {
	b := protowire.AppendTag(nil, fAnyInt, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

// encodeRequest is the ExportTraceServiceRequest of spans from service.
func encodeRequest(service string, spans []Span) []byte {
	var scope []byte
	scope = appendMessage(scope, fScopeSpansScope, appendString(nil, fScopeName, "trellis-proxy"))
	for _, s := range spans {
		var sp []byte
		sp = protowire.AppendTag(sp, fSpanTraceID, protowire.BytesType)
		sp = protowire.AppendBytes(sp, s.Trace[:])
		sp = protowire.AppendTag(sp, fSpanSpanID, protowire.BytesType)
		sp = protowire.AppendBytes(sp, s.ID[:])
		if s.Parent != (SpanID{}) {
			sp = protowire.AppendTag(sp, fSpanParentSpanID, protowire.BytesType)
			sp = protowire.AppendBytes(sp, s.Parent[:])
		}
		sp = appendString(sp, fSpanName, s.Name)
		sp = protowire.AppendTag(sp, fSpanKind, protowire.VarintType)
		sp = protowire.AppendVarint(sp, uint64(s.Kind))
		sp = protowire.AppendTag(sp, fSpanStart, protowire.Fixed64Type)
		sp = protowire.AppendFixed64(sp, uint64(s.Start.UnixNano()))
		sp = protowire.AppendTag(sp, fSpanEnd, protowire.Fixed64Type)
		sp = protowire.AppendFixed64(sp, uint64(s.End.UnixNano()))
		keys := make([]string, 0, len(s.Attributes))
		for k := range s.Attributes {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			sp = appendMessage(sp, fSpanAttributes, keyValue(k, stringValue(s.Attributes[k])))
		}
		if s.Status != 0 {
			sp = appendMessage(sp, fSpanAttributes, keyValue("http.response.status_code", intValue(int64(s.Status))))
		}
		if s.Error {
			st := protowire.AppendTag(nil, fStatusCode, protowire.VarintType)
			sp = appendMessage(sp, fSpanStatus, protowire.AppendVarint(st, 2))
		}
		scope = appendMessage(scope, fScopeSpansSpans, sp)
	}
	resource := appendMessage(nil, fResourceAttributes, keyValue("service.name", stringValue(service)))
	rs := appendMessage(nil, fResourceSpansRes, resource)
	rs = appendMessage(rs, fResourceSpansScope, scope)
	return appendMessage(nil, fRequestResourceSpans, rs)
}

// rawCodec passes encoded messages through gRPC as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

func (e *Exporter) send(ctx context.Context, spans []Span) error {
	req := encodeRequest(e.service, spans)
	var resp []byte
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return e.conn.Invoke(ctx, exportMethod, &req, &resp, grpc.ForceCodecV2(rawCodec{}))
}
