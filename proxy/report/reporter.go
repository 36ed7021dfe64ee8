package report

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/trellis-mesh/trellis/latency"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// MaxRowsPerMessage is the most rows one ReportRequest carries; the control
// plane refuses more. A report with more rows is sent as several messages.
const MaxRowsPerMessage = 500

const (
	// openTimeout bounds the opening of a stream: while the connection is
	// (re)connecting, gRPC would otherwise hold the call until it is up.
	openTimeout = 5 * time.Second
	// closeTimeout bounds the last report and the stream's close at shutdown.
	closeTimeout = 2 * time.Second
)

// Options configure a Reporter.
type Options struct {
	// Client is the control plane's TelemetryService, on the connection the
	// proxy's discovery uses.
	Client   controlplanev1.TelemetryServiceClient
	Recorder *Recorder
	// Interval between reports; 10s when zero.
	Interval time.Duration
	// Info returns who reports, called for each report (the certificate
	// and the config freshness change).
	Info func() *controlplanev1.ProxyInfo
	// RefusedWait is how long the Reporter waits after the control plane
	// refused a report (the cause must be fixed on its side) before it
	// opens a stream again; a minute when zero. After other failures it
	// tries again at the next interval.
	RefusedWait time.Duration
	Log         *slog.Logger
	// Registerer, when set, registers the reporter's metrics.
	Registerer prometheus.Registerer
}

// Reporter sends the Recorder's rows every interval. What it cannot send
// is dropped and counted, so that a control plane that is away costs the
// proxy no memory.
type Reporter struct {
	o        Options
	reports  *prometheus.CounterVec
	sent     prometheus.Counter
	dropped  prometheus.Counter
	droppedN uint64 // the Run goroutine's

	stream controlplanev1.TelemetryService_ReportClient
	cancel context.CancelFunc
	// notBefore is when a stream may be opened again after a refusal.
	notBefore time.Time
	last      time.Time
}

// NewReporter returns a Reporter; call Run.
func NewReporter(o Options) *Reporter {
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.RefusedWait <= 0 {
		o.RefusedWait = time.Minute
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	r := &Reporter{o: o}
	r.reports = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_reports_total",
		Help: "Traffic reports to the control plane, by result: sent, or dropped (no stream to the control plane, or it failed).",
	}, []string{"result"})
	rows := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "trellis_proxy_report_rows_dropped_total",
		Help: "Requests and connections not reported because the proxy held the most report rows it may (a new source, destination or route beyond the cap).",
	}, func() float64 { return float64(o.Recorder.Dropped()) })
	r.sent, r.dropped = r.reports.WithLabelValues("sent"), r.reports.WithLabelValues("dropped")
	if o.Registerer != nil {
		o.Registerer.MustRegister(r.reports, rows)
	}
	return r
}

// Run reports every interval until ctx ends, then sends a last report.
func (r *Reporter) Run(ctx context.Context) {
	// The streams outlive ctx by a moment (closeTimeout at most): the last
	// interval's requests are worth a report.
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	r.last = time.Now()
	t := time.NewTicker(r.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			r.report(base)
		case <-ctx.Done():
			stop := time.AfterFunc(closeTimeout, cancel)
			r.report(base)
			r.close()
			stop.Stop()
			return
		}
	}
}

// report collects the rows and sends them.
func (r *Reporter) report(ctx context.Context) {
	now := time.Now()
	msgs := r.messages(now.Sub(r.last))
	r.last = now
	if r.send(ctx, msgs) {
		r.sent.Inc()
		return
	}
	r.droppedN++
	r.dropped.Inc()
}

// messages are one report: the rows split into messages of at most
// MaxRowsPerMessage (one message without rows when there are none, which
// still tells the control plane the proxy is there).
func (r *Reporter) messages(interval time.Duration) []*controlplanev1.ReportRequest {
	rows := r.o.Recorder.Collect()
	info := r.o.Info()
	var msgs []*controlplanev1.ReportRequest
	for first := true; first || len(rows) > 0; first = false {
		n := min(len(rows), MaxRowsPerMessage)
		msgs = append(msgs, &controlplanev1.ReportRequest{
			Proxy:                 info,
			Interval:              durationpb.New(interval),
			LatencyBucketBoundsMs: latency.BoundsMs[:],
			Rows:                  rows[:n],
			DroppedReports:        r.droppedN,
		})
		rows = rows[n:]
	}
	return msgs
}

// send sends msgs on the stream, opening one if needed. A stream that
// fails is closed and, unless the control plane refused it, one new stream
// is tried at once: the control plane ends streams when a connection
// reaches its maximum age, and that should not lose a report.
func (r *Reporter) send(ctx context.Context, msgs []*controlplanev1.ReportRequest) bool {
	// The new stream takes up where the failed one stopped: the messages
	// it took are not sent again, which would count their rows twice
	// (one it took but lost is lost, like any report that cannot go).
	sent := 0
	for attempt := 0; attempt < 2; attempt++ {
		if r.stream == nil && !r.open(ctx) {
			return false
		}
		var err error
		for ; sent < len(msgs); sent++ {
			if err = r.stream.Send(msgs[sent]); err != nil {
				break
			}
		}
		if err == nil {
			return true
		}
		if r.closeFailed(err) {
			return false
		}
	}
	return false
}

// open opens a stream, unless the control plane refused the last one too
// recently.
func (r *Reporter) open(ctx context.Context) bool {
	if time.Now().Before(r.notBefore) {
		return false
	}
	sctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(openTimeout, cancel)
	s, err := r.o.Client.Report(sctx)
	if !timer.Stop() && err == nil {
		err = errors.New("opening the stream timed out")
	}
	if err != nil {
		cancel()
		r.o.Log.Debug("cannot open the traffic report stream; dropping this report", "error", err)
		return false
	}
	r.stream, r.cancel = s, cancel
	return true
}

// closeFailed ends a stream on which Send failed with err, logs why, and
// says whether the control plane refused the reports (then no new stream
// is opened for RefusedWait).
func (r *Reporter) closeFailed(err error) bool {
	if errors.Is(err, io.EOF) {
		// The server ended the stream: its status says why.
		_, err = r.stream.CloseAndRecv()
	}
	r.cancel()
	r.stream, r.cancel = nil, nil
	if err == nil || errors.Is(err, io.EOF) {
		r.o.Log.Debug("the control plane closed the traffic report stream; opening another")
		return false
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented, codes.FailedPrecondition:
		r.notBefore = time.Now().Add(r.o.RefusedWait)
		r.o.Log.Warn("the control plane refused the proxy's traffic report; trying again in "+r.o.RefusedWait.String(),
			"code", status.Code(err).String(), "error", status.Convert(err).Message())
		return true
	}
	r.o.Log.Debug("the traffic report stream failed", "error", err)
	return false
}

// close ends the stream gracefully.
func (r *Reporter) close() {
	if r.stream == nil {
		return
	}
	if _, err := r.stream.CloseAndRecv(); err != nil && !errors.Is(err, io.EOF) {
		r.o.Log.Debug("closing the traffic report stream", "error", err)
	}
	r.cancel()
	r.stream, r.cancel = nil, nil
}
