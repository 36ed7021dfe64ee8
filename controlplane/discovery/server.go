package discovery

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// Server is the DiscoveryService, answering from an Index.
type Server struct {
	controlplanev1.UnimplementedDiscoveryServiceServer

	index *Index

	// PeerIdentity returns the namespace and ServiceAccount of the workload
	// that made a call, from its mTLS client certificate; ok is false when
	// the call carries none. Outbound then serves only a caller asking for
	// its own namespace, Inbound only a pod's own ServiceAccount. While it
	// is nil, Inbound serves no one, and Outbound anyone.
	PeerIdentity func(ctx context.Context) (namespace, serviceAccount string, ok bool)

	// PodWait is how long Inbound waits for a pod that the informers have
	// not seen yet (a proxy can start before its pod reaches the cache)
	// before it answers NotFound. NewServer sets 30s.
	PodWait time.Duration
}

// NewServer returns a DiscoveryService answering from ix; set PeerIdentity
// before serving.
func NewServer(ix *Index) *Server {
	return &Server{index: ix, PodWait: 30 * time.Second}
}

// refuse counts a stream refused before it started, and returns err.
func (s *Server) refuse(err error) error {
	s.index.metrics.refused.WithLabelValues(status.Code(err).String()).Inc()
	return err
}

// waitSynced holds a stream until the Index has the whole cluster state.
func (s *Server) waitSynced(ctx context.Context) error {
	select {
	case <-s.index.Synced():
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// Outbound streams what is known of a destination: its whole state now,
// then each time it changes.
func (s *Server) Outbound(req *controlplanev1.OutboundRequest, stream controlplanev1.DiscoveryService_OutboundServer) error {
	ctx := stream.Context()
	m := s.index.metrics
	if len(req.Destination) == 0 || len(req.Destination) > 512 {
		return s.refuse(status.Error(codes.InvalidArgument, "destination must be an IP:port or a Service's host:port of at most 512 characters"))
	}
	if len(req.Namespace) > 63 {
		return s.refuse(status.Error(codes.InvalidArgument, "namespace is longer than 63 characters"))
	}
	if s.PeerIdentity != nil {
		// A proxy has its certificate before it dials anything; consumer
		// routes are its namespace's own business.
		ns, sa, ok := s.PeerIdentity(ctx)
		if !ok {
			return s.refuse(status.Errorf(codes.Unauthenticated, "Outbound needs the proxy's mTLS client certificate, and the call has none"))
		}
		if ns != req.Namespace {
			return s.refuse(status.Errorf(codes.PermissionDenied,
				"caller %s/%s asked for namespace %q's view of %s: a proxy may ask only for its own namespace's", ns, sa, req.Namespace, req.Destination))
		}
	}
	if err := s.waitSynced(ctx); err != nil {
		return err
	}
	sub, stop, err := s.index.watchOutbound(req.Destination, req.Namespace)
	if err != nil {
		return s.refuse(status.Error(codes.InvalidArgument, err.Error()))
	}
	defer stop()
	m.outStreams.Inc()
	defer m.outStreams.Dec()
	var last *controlplanev1.OutboundResponse
	for {
		if resp, ok := sub.take(); ok && resp != last && !proto.Equal(resp, last) {
			if err := stream.Send(resp); err != nil {
				return err
			}
			m.outSent.Inc()
			last = resp
			continue
		}
		select {
		case <-sub.wait():
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// Inbound streams a pod's inbound state to the pod's own proxy: the caller
// must hold the identity of the pod's ServiceAccount.
func (s *Server) Inbound(req *controlplanev1.InboundRequest, stream controlplanev1.DiscoveryService_InboundServer) error {
	ctx := stream.Context()
	m := s.index.metrics
	if req.Pod == "" || req.Namespace == "" {
		return s.refuse(status.Error(codes.InvalidArgument, "pod and namespace must both be set to the proxy's own pod"))
	}
	if s.PeerIdentity == nil {
		return s.refuse(status.Error(codes.PermissionDenied, "this control plane has no way to identify callers, so it serves Inbound to no one"))
	}
	ns, sa, ok := s.PeerIdentity(ctx)
	if !ok {
		return s.refuse(status.Errorf(codes.Unauthenticated, "Inbound for pod %s/%s needs the proxy's mTLS client certificate, and the call has none", req.Namespace, req.Pod))
	}
	if ns != req.Namespace {
		return s.refuse(status.Errorf(codes.PermissionDenied,
			"caller is ServiceAccount %s/%s, which cannot be pod %s/%s's: a proxy may watch only its own pod", ns, sa, req.Namespace, req.Pod))
	}
	if err := s.waitSynced(ctx); err != nil {
		return err
	}
	sub, stop := s.index.watchInbound(objKey{req.Namespace, req.Pod})
	defer stop()
	m.inStreams.Inc()
	defer m.inStreams.Dec()

	notFound := time.NewTimer(s.PodWait)
	defer notFound.Stop()
	waiting := notFound.C
	var last *controlplanev1.InboundResponse
	for {
		if st, ok := sub.take(); ok && st.found {
			// Checked again on every change: a pod can be deleted and come
			// back under the same name with another ServiceAccount.
			waiting = nil
			if st.serviceAccount != sa {
				return s.refuse(status.Errorf(codes.PermissionDenied,
					"caller is ServiceAccount %s/%s, but pod %s/%s runs as ServiceAccount %s: a proxy may watch only its own pod",
					ns, sa, req.Namespace, req.Pod, st.serviceAccount))
			}
			if !st.meshed {
				return s.refuse(status.Errorf(codes.FailedPrecondition,
					"namespace %s is not in Mesh %s: label it trellis.dev/mesh=%s (or trellis-injection=enabled for the default Mesh)",
					req.Namespace, s.index.cfg.Mesh, s.index.cfg.Mesh))
			}
			if !proto.Equal(st.resp, last) {
				if err := stream.Send(st.resp); err != nil {
					return err
				}
				m.inSent.Inc()
				last = st.resp
			}
			continue
		}
		select {
		case <-sub.wait():
		case <-waiting:
			return s.refuse(status.Errorf(codes.NotFound, "pod %s/%s does not exist (waited %s for it)", req.Namespace, req.Pod, s.PodWait))
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}
