// Package tracing is the proxy's part of distributed tracing: it reads and
// writes W3C trace context (traceparent, and B3 from apps that speak it),
// makes a span per request it forwards, and exports sampled spans to an
// OpenTelemetry collector over OTLP/HTTP (JSON), in batches, from a bounded
// queue that drops rather than hold up requests.
//
// As in every mesh, the proxy cannot join an app's inbound request to the
// app's outbound calls by itself: the app must pass the trace headers on.
// Spans of the two proxies around one call are always joined.
package tracing

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
)

// TraceID and SpanID are W3C trace context identifiers.
type (
	TraceID [16]byte
	SpanID  [8]byte
)

func (t TraceID) String() string { return hex.EncodeToString(t[:]) }
func (s SpanID) String() string  { return hex.EncodeToString(s[:]) }

// Context is a request's trace context.
type Context struct {
	Trace   TraceID
	Parent  SpanID // the caller's span; zero for a new trace
	Sampled bool
}

// Extract reads r's trace context: traceparent, else B3 (single or multi
// header). ok is false when there is none, or it is malformed.
func Extract(h http.Header) (c Context, ok bool) {
	if tp := h.Get("Traceparent"); tp != "" {
		return parseTraceparent(tp)
	}
	if b3 := h.Get("B3"); b3 != "" {
		parts := strings.Split(b3, "-")
		if len(parts) >= 2 {
			return fromB3(parts[0], parts[1], len(parts) > 2 && (parts[2] == "1" || parts[2] == "d"))
		}
		return Context{}, false
	}
	if tid := h.Get("X-B3-Traceid"); tid != "" {
		return fromB3(tid, h.Get("X-B3-Spanid"), h.Get("X-B3-Sampled") == "1" || h.Get("X-B3-Flags") == "1")
	}
	return Context{}, false
}

// parseTraceparent reads version 00 (and, as the spec asks, the first four
// fields of a later version).
func parseTraceparent(v string) (Context, bool) {
	parts := strings.Split(v, "-")
	if len(parts) < 4 || len(parts[0]) != 2 || parts[0] == "ff" || (parts[0] == "00" && len(parts) != 4) {
		return Context{}, false
	}
	var c Context
	if !decodeHex(c.Trace[:], parts[1]) || !decodeHex(c.Parent[:], parts[2]) || len(parts[3]) != 2 {
		return Context{}, false
	}
	flags, err := hex.DecodeString(parts[3])
	if err != nil || c.Trace == (TraceID{}) || c.Parent == (SpanID{}) {
		return Context{}, false
	}
	c.Sampled = flags[0]&1 == 1
	return c, true
}

func fromB3(traceID, spanID string, sampled bool) (Context, bool) {
	var c Context
	if len(traceID) == 16 {
		traceID = strings.Repeat("0", 16) + traceID
	}
	if !decodeHex(c.Trace[:], traceID) || !decodeHex(c.Parent[:], spanID) || c.Trace == (TraceID{}) {
		return Context{}, false
	}
	c.Sampled = sampled
	return c, true
}

// decodeHex decodes lower-case hex of exactly len(dst) bytes.
func decodeHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.Decode(dst, []byte(s))
	return err == nil
}

// Inject writes the trace context for a request sent from span into h,
// replacing what the caller sent: traceparent always, and B3 headers when
// the caller spoke B3, so that either kind of app reads it.
func Inject(h http.Header, trace TraceID, span SpanID, sampled bool) {
	flags := "00"
	if sampled {
		flags = "01"
	}
	h.Set("Traceparent", "00-"+trace.String()+"-"+span.String()+"-"+flags)
	if h.Get("B3") != "" {
		s := "0"
		if sampled {
			s = "1"
		}
		h.Set("B3", trace.String()+"-"+span.String()+"-"+s)
	}
	if h.Get("X-B3-Traceid") != "" {
		h.Set("X-B3-Traceid", trace.String())
		h.Set("X-B3-Spanid", span.String())
		if sampled {
			h.Set("X-B3-Sampled", "1")
		} else {
			h.Set("X-B3-Sampled", "0")
		}
		h.Del("X-B3-Parentspanid")
	}
}

// NewTraceID and NewSpanID are random identifiers.
func NewTraceID() (t TraceID) {
	_, _ = rand.Read(t[:])
	return t
}

func NewSpanID() (s SpanID) {
	_, _ = rand.Read(s[:])
	if s == (SpanID{}) {
		s[7] = 1
	}
	return s
}

// Sample decides for a new trace, at percent of them, by the trace ID's
// low bits, so that every proxy on the way would decide the same.
func Sample(t TraceID, percent float64) bool {
	if percent <= 0 {
		return false
	}
	if percent >= 100 {
		return true
	}
	return float64(binary.BigEndian.Uint64(t[8:])%10000) < percent*100
}

// Kind is a span's OTLP kind.
type Kind int

const (
	KindServer Kind = 2
	KindClient Kind = 3
)

// Span is one request through the proxy.
type Span struct {
	Trace      TraceID
	ID, Parent SpanID
	Name       string
	Kind       Kind
	Start, End time.Time
	// Attributes are string attributes; Status is the HTTP status (0: none).
	Attributes map[string]string
	Status     int
	Error      bool
}
