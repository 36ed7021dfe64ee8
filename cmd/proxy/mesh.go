package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/proxy/dataplane"
	"github.com/trellis-mesh/trellis/proxy/destinations"
	"github.com/trellis-mesh/trellis/proxy/identity"
	"github.com/trellis-mesh/trellis/proxy/report"
	"github.com/trellis-mesh/trellis/proxy/tracing"
	"github.com/trellis-mesh/trellis/version"
)

// meshParts are the proxy's connection to the mesh: its identity, the
// control plane connections, discovery and the data plane that uses them.
type meshParts struct {
	id *identity.Manager
	dp *dataplane.Proxy

	mu    sync.Mutex
	conns []*grpc.ClientConn
}

// keepaliveParams keep the control plane connections alive through idle
// NATs and detect a vanished control plane; the interval is well above the
// control plane's minimum (controlplane.KeepaliveMinTime, 10s), below which
// it hangs up. The proxy does not import the control plane's package: it
// would bring client-go into every sidecar.
var keepaliveParams = keepalive.ClientParameters{
	Time:                30 * time.Second,
	Timeout:             10 * time.Second,
	PermitWithoutStream: false,
}

// startMesh starts the identity manager at once and discovery once the
// proxy holds a certificate: discovery calls are authenticated with it.
// Until then, connections to mesh destinations are relayed as they are
// (the app does not run yet: the proxy is not ready).
func startMesh(ctx context.Context, cfg runConfig, reg prometheus.Registerer, log, access *slog.Logger) (*meshParts, error) {
	host, _, err := net.SplitHostPort(cfg.controlPlane)
	if err != nil {
		return nil, fmt.Errorf("the control plane's address %q is not host:port: %w", cfg.controlPlane, err)
	}
	if cfg.controlPlaneName != "" {
		host = cfg.controlPlaneName
	}
	m := &meshParts{}
	var certify func(context.Context, *controlplanev1.CertifyRequest) (*controlplanev1.CertifyResponse, error)
	id, err := identity.New(identity.Options{
		TrustDomain:     cfg.trustDomain,
		Namespace:       cfg.namespace,
		ServiceAccount:  cfg.serviceAccount,
		TokenFile:       cfg.tokenFile,
		TrustBundleFile: cfg.trustBundleFile,
		Certify: func(ctx context.Context, req *controlplanev1.CertifyRequest) (*controlplanev1.CertifyResponse, error) {
			return certify(ctx, req)
		},
		Log:        log.With("component", "identity"),
		Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	m.id = id
	// Certify travels on a connection of its own, opened before the proxy
	// has a certificate; discovery's connection presents one.
	idConn, err := m.dial(cfg.controlPlane, host)
	if err != nil {
		return nil, err
	}
	certify = func(ctx context.Context, req *controlplanev1.CertifyRequest) (*controlplanev1.CertifyResponse, error) {
		return controlplanev1.NewIdentityServiceClient(idConn).Certify(ctx, req)
	}
	go id.Run(ctx)

	discConn, err := m.dial(cfg.controlPlane, host)
	if err != nil {
		return nil, err
	}
	dests := destinations.New(destinations.Options{
		Client:     controlplanev1.NewDiscoveryServiceClient(discConn),
		Namespace:  cfg.namespace,
		Pod:        cfg.podName,
		Log:        log.With("component", "discovery"),
		Registerer: reg,
	})
	go dests.Run(ctx)
	var tracer *tracing.Exporter
	if cfg.tracingEndpoint != "" {
		if tracer, err = tracing.NewExporter(tracing.ExporterOptions{
			Endpoint: cfg.tracingEndpoint, Service: cfg.namespace + "/" + cfg.serviceAccount,
			SamplingPercent: cfg.samplingPercent, Log: log.With("component", "tracing"), Registerer: reg,
		}); err != nil {
			return nil, err
		}
		go tracer.Run(ctx)
	}
	var rec *report.Recorder
	if cfg.reportInterval > 0 {
		// The report is a new stream on discovery's connection, so it
		// presents the same certificate.
		rec = report.NewRecorder(report.RecorderOptions{})
		rep := report.NewReporter(report.Options{
			Client:   controlplanev1.NewTelemetryServiceClient(discConn),
			Recorder: rec,
			Interval: cfg.reportInterval,
			Info: func() *controlplanev1.ProxyInfo {
				info := &controlplanev1.ProxyInfo{
					Namespace: cfg.namespace, Pod: cfg.podName, Identity: id.ID(), Version: version.Version,
				}
				if na := id.NotAfter(); !na.IsZero() {
					info.CertNotAfter = timestamppb.New(na)
				}
				last, streams := dests.Freshness()
				if !last.IsZero() {
					info.LastConfigAt = timestamppb.New(last)
				}
				info.DiscoveryStreams = uint32(streams)
				return info
			},
			Log:        log.With("component", "report"),
			Registerer: reg,
		})
		go func() {
			// Reports are authenticated with the certificate.
			select {
			case <-id.Ready():
				rep.Run(ctx)
			case <-ctx.Done():
			}
		}()
	}
	m.dp = dataplane.New(dataplane.Options{
		Identity:       id,
		Destinations:   dests,
		MTLSMode:       cfg.mtlsMode,
		Workload:       cfg.namespace + "/" + cfg.serviceAccount,
		DetectTimeout:  cfg.detectTimeout,
		ConnectTimeout: cfg.connectTimeout,
		OpaquePorts:    cfg.opaquePorts,
		Metrics:        dataplane.NewMetrics(reg),
		Log:            log,
		AccessLog:      access,
		Tracer:         tracer,
		Report:         rec,
	})
	go m.dp.Run(ctx)
	go func() {
		select {
		case <-id.Ready():
			m.dp.SetInbound(dests.Inbound(ctx))
		case <-ctx.Done():
		}
	}()
	return m, nil
}

// dial opens a lazy gRPC connection to the control plane, verifying its
// certificate for serverName against the mesh's roots and presenting the
// workload certificate once there is one.
func (m *meshParts) dial(addr, serverName string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(m.id.ControlPlaneTLS(serverName))),
		grpc.WithKeepaliveParams(keepaliveParams),
		// gRPC's default grows to two minutes between attempts: a
		// restarted control plane would be found that late.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("control plane %s: %w", addr, err)
	}
	m.mu.Lock()
	m.conns = append(m.conns, conn)
	m.mu.Unlock()
	return conn, nil
}

func (m *meshParts) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.conns {
		_ = c.Close()
	}
}
