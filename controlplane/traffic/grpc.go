package traffic

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trellis-mesh/trellis/controlplane/auth"
	"github.com/trellis-mesh/trellis/latency"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// Limits of a report message; anything beyond is refused as malformed.
const (
	// MaxRowsPerMessage matches the proxy's split of its reports.
	MaxRowsPerMessage = 500
	// maxInterval is the longest interval a report may cover.
	maxInterval = 10 * time.Minute
	// maxRequests bounds a row's requests: a million a second for the
	// longest interval is more than one proxy serves.
	maxRequests = 1_000_000 * uint64(maxInterval/time.Second)
	// maxBytes bounds a row's bytes: 100 GB/s for the longest interval.
	maxBytes = 100_000_000_000 * uint64(maxInterval/time.Second)
	// maxName bounds a name or identity.
	maxName = 512
)

// Server is the TelemetryService: it checks each report against its
// caller's certificate and adds it to the Store.
type Server struct {
	controlplanev1.UnimplementedTelemetryServiceServer
	store *Store
}

// NewServer returns the TelemetryService feeding s.
func NewServer(s *Store) *Server { return &Server{store: s} }

// Register registers the service on reg (the control plane's gRPC server,
// where the proxies' discovery connections arrive).
func (srv *Server) Register(reg grpc.ServiceRegistrar) {
	controlplanev1.RegisterTelemetryServiceServer(reg, srv)
}

// Report takes a proxy's reports until it ends the stream. The first
// message fixes the pod; each is checked whole before any of it is kept,
// and the first that fails ends the stream with the reason.
func (srv *Server) Report(stream grpc.ClientStreamingServer[controlplanev1.ReportRequest, controlplanev1.ReportResponse]) error {
	ctx := stream.Context()
	peer, ok := auth.FromContext(ctx)
	if !ok {
		return srv.refuse(status.Error(codes.Unauthenticated, "Report needs the proxy's mTLS client certificate, and the call has none"))
	}
	var self reporter
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&controlplanev1.ReportResponse{})
		}
		if err != nil {
			return err
		}
		r, err := srv.check(peer, req)
		if err != nil {
			return srv.refuse(err)
		}
		if self.pod == "" {
			self = r
			srv.store.connected(r.namespace, r.pod, 1)
			defer srv.store.connected(r.namespace, r.pod, -1)
		} else if r != self {
			return srv.refuse(status.Errorf(codes.InvalidArgument,
				"report for pod %s/%s on the stream of pod %s/%s: a stream carries one proxy's reports", r.namespace, r.pod, self.namespace, self.pod))
		}
		srv.store.ingest(r, req)
		srv.store.metrics.accepted.Inc()
	}
}

func (srv *Server) refuse(err error) error {
	srv.store.metrics.reports.WithLabelValues(status.Code(err).String()).Inc()
	return err
}

// check validates req from peer: PermissionDenied when it reports for
// another identity or pod than the caller's, InvalidArgument when it is
// malformed; the message names the field and what is wrong.
func (srv *Server) check(peer auth.Peer, req *controlplanev1.ReportRequest) (reporter, error) {
	info := req.GetProxy()
	r := reporter{namespace: info.GetNamespace(), pod: info.GetPod(), identity: info.GetIdentity()}
	if r.namespace == "" || r.pod == "" || len(r.namespace) > 63 || len(r.pod) > 253 {
		return r, status.Errorf(codes.InvalidArgument, "proxy.namespace %q and proxy.pod %q must name the proxy's pod", r.namespace, r.pod)
	}
	if r.identity != peer.SPIFFEID {
		return r, status.Errorf(codes.PermissionDenied,
			"report of pod %s/%s says proxy.identity %q, but the caller's certificate is %s: a proxy may report only as itself", r.namespace, r.pod, r.identity, peer.SPIFFEID)
	}
	if r.namespace != peer.Namespace {
		return r, status.Errorf(codes.PermissionDenied,
			"caller %s reported for pod %s/%s: a proxy may report only for its own pod, in its own namespace", peer.SPIFFEID, r.namespace, r.pod)
	}
	if pod, ok := srv.store.lookup(r.namespace, r.pod); ok && pod.ServiceAccount != peer.ServiceAccount {
		return r, status.Errorf(codes.PermissionDenied,
			"caller %s reported for pod %s/%s, which runs as ServiceAccount %s: a proxy may report only for its own pod", peer.SPIFFEID, r.namespace, r.pod, pod.ServiceAccount)
	}
	where := fmt.Sprintf("report of pod %s/%s", r.namespace, r.pod)
	if d := req.GetInterval(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 || d.AsDuration() > maxInterval {
			return r, status.Errorf(codes.InvalidArgument, "%s: interval %v is not between 0 and %s", where, d.AsDuration(), maxInterval)
		}
	}
	if !sameBounds(req.LatencyBucketBoundsMs) {
		return r, status.Errorf(codes.InvalidArgument,
			"%s: latency_bucket_bounds_ms has %d bounds from %v, not this control plane's %d log-linear bounds from %v ms (package latency): the proxy's version (%s) does not match the control plane's; upgrade the older one",
			where, len(req.LatencyBucketBoundsMs), first(req.LatencyBucketBoundsMs), latency.Bounds, latency.BoundsMs[0], info.GetVersion())
	}
	if n := len(req.Rows); n > MaxRowsPerMessage {
		return r, status.Errorf(codes.InvalidArgument, "%s has %d rows, more than %d: split it in several messages", where, n, MaxRowsPerMessage)
	}
	for i, row := range req.Rows {
		if err := checkRow(row); err != nil {
			return r, status.Errorf(codes.InvalidArgument, "%s: rows[%d]: %v", where, i, err)
		}
	}
	return r, nil
}

func sameBounds(b []float64) bool {
	return slices.Equal(b, latency.BoundsMs[:])
}

// first is the first of b, for an error message; "none" when empty.
func first(b []float64) any {
	if len(b) == 0 {
		return "none"
	}
	return b[0]
}

// checkRow says what is wrong with a row, if anything.
func checkRow(row *controlplanev1.TrafficRow) error {
	switch row.Direction {
	case controlplanev1.Direction_DIRECTION_OUTBOUND, controlplanev1.Direction_DIRECTION_INBOUND:
	default:
		return fmt.Errorf("direction %v is not OUTBOUND or INBOUND", row.Direction)
	}
	for _, f := range []struct{ name, v string }{
		{"peer_identity", row.PeerIdentity}, {"peer_pod", row.PeerPod}, {"service", row.Service}, {"route", row.Route},
	} {
		if len(f.v) > maxName {
			return fmt.Errorf("%s is %d characters long, more than %d", f.name, len(f.v), maxName)
		}
	}
	if row.PeerIdentity != "" && identityNamespace(row.PeerIdentity) == "" {
		return fmt.Errorf("peer_identity %q is not a SPIFFE ID spiffe://<trust domain>/ns/<namespace>/sa/<name>", row.PeerIdentity)
	}
	for _, f := range []struct{ name, v string }{{"service", row.Service}, {"route", row.Route}} {
		if ns, name, ok := strings.Cut(f.v, "/"); f.v != "" && (!ok || ns == "" || name == "" || strings.Contains(name, "/")) {
			return fmt.Errorf("%s %q is not <namespace>/<name>", f.name, f.v)
		}
	}
	if row.Requests > maxRequests {
		return fmt.Errorf("requests %d is more than %d", row.Requests, maxRequests)
	}
	if row.Successes > row.Requests {
		return fmt.Errorf("successes %d is more than requests %d", row.Successes, row.Requests)
	}
	if row.RequestBytes > maxBytes || row.ResponseBytes > maxBytes {
		return fmt.Errorf("request_bytes %d or response_bytes %d is more than %d", row.RequestBytes, row.ResponseBytes, maxBytes)
	}
	if row.TcpConnections > maxRequests {
		return fmt.Errorf("tcp_connections %d is more than %d", row.TcpConnections, maxRequests)
	}
	if len(row.LatencyBuckets) != len(row.LatencyBucketCounts) {
		return fmt.Errorf("latency_buckets has %d indexes but latency_bucket_counts %d counts: want one count per index", len(row.LatencyBuckets), len(row.LatencyBucketCounts))
	}
	var sum uint64
	for i, b := range row.LatencyBuckets {
		if b >= latency.Buckets || i > 0 && b <= row.LatencyBuckets[i-1] {
			return fmt.Errorf("latency_buckets %v: want increasing indexes below %d", row.LatencyBuckets, latency.Buckets)
		}
		c := row.LatencyBucketCounts[i]
		if c == 0 || c > row.Requests {
			return fmt.Errorf("latency_bucket_counts %v: want counts from 1 to requests %d", row.LatencyBucketCounts, row.Requests)
		}
		sum += c
	}
	if sum != row.Requests {
		return fmt.Errorf("latency_bucket_counts %v add up to %d, not requests %d", row.LatencyBucketCounts, sum, row.Requests)
	}
	return nil
}
