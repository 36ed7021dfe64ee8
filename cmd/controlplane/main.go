// Command controlplane is a Mesh's control plane: identity, discovery and
// policy for its proxies. The operator deploys it, one Deployment per Mesh.
//
// It loads the mesh's signing intermediate, signs the proxies' certificates
// (IdentityService) and answers their questions about destinations and
// their own pods (DiscoveryService) on its gRPC port, over TLS with a
// certificate it signs for itself, writes the status of the GAMMA routes
// of its Mesh's namespaces (one elected replica), and serves health and
// metrics on its HTTP port, with the traffic the proxies report
// (TelemetryService) under /api/v1/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/ca"
	"github.com/trellis-mesh/trellis/controlplane"
	"github.com/trellis-mesh/trellis/controlplane/auth"
	"github.com/trellis-mesh/trellis/controlplane/discovery"
	"github.com/trellis-mesh/trellis/controlplane/traffic"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

const (
	// grpcShutdownGrace is how long running calls may finish after SIGTERM
	// before they are cut; with the HTTP shutdown it stays within the
	// pod's default 30 s termination grace period.
	grpcShutdownGrace  = 15 * time.Second
	httpShutdownGrace  = 10 * time.Second
	signerPollInterval = 10 * time.Second
)

func main() {
	cfg := controlplane.Config{}
	var logLevel string
	var kubeQPS float64
	var kubeBurst int
	var mtlsMode string
	var trafficMaxRows int
	var service string
	flag.StringVar(&cfg.Mesh, "mesh", "default", "name of the Mesh this control plane serves")
	flag.StringVar(&cfg.Namespace, "namespace", "trellis-system", "namespace the control plane runs in")
	flag.StringVar(&cfg.TrustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of the mesh")
	flag.StringVar(&cfg.SignerDir, "signer-dir", "/var/run/trellis/signer", "directory with the signing intermediate: tls.crt, tls.key, ca.crt")
	flag.StringVar(&cfg.HTTPAddr, "http-addr", ":15014", "address of /healthz, /readyz and /metrics")
	flag.StringVar(&cfg.GRPCAddr, "grpc-addr", ":15012", "address of the proxies' gRPC API")
	flag.DurationVar(&cfg.WorkloadCertTTL, "workload-cert-ttl", ca.DefaultWorkloadValidity,
		fmt.Sprintf("life of the workload certificates this control plane signs, never past the signer's (%s to %s)",
			controlplane.MinWorkloadCertTTL, controlplane.MaxWorkloadCertTTL))
	flag.DurationVar(&cfg.TokenCacheTTL, "token-cache-ttl", time.Minute,
		"how long an accepted ServiceAccount token is remembered instead of reviewed again (0 reviews every request)")
	flag.Float64Var(&kubeQPS, "kube-api-qps", 100, "requests per second to the Kubernetes API server (token reviews included)")
	flag.IntVar(&kubeBurst, "kube-api-burst", 200, "burst of requests to the Kubernetes API server")
	flag.StringVar(&logLevel, "log-level", "info", "error, warn, info, debug or trace")
	flag.StringVar(&mtlsMode, "mtls-mode", string(meshv1.MTLSModePermissive), "the Mesh's spec.mtls.mode, sent to every proxy: Permissive or Strict")
	flag.IntVar(&trafficMaxRows, "traffic-max-rows", 4096,
		"most rows of the proxies' traffic reports kept per 10 s bucket (30 buckets: the last 5 minutes); more are dropped and counted in trellis_controlplane_traffic_rows_dropped_total")
	flag.StringVar(&service, "service", "trellis-controlplane",
		"the control plane's Service in --namespace: its ready endpoints are the other replicas, which the traffic API asks for their proxies' traffic")
	flag.Parse()

	level := slog.LevelInfo
	switch logLevel {
	case "error":
		level = slog.LevelError
	case "warn":
		level = slog.LevelWarn
	case "debug", "trace":
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if err := cfg.Validate(); err != nil {
		logger.Error("invalid flags", "error", err)
		os.Exit(2)
	}
	if mtlsMode != string(meshv1.MTLSModePermissive) && mtlsMode != string(meshv1.MTLSModeStrict) {
		logger.Error("invalid flags", "error", fmt.Sprintf("--mtls-mode=%q: want Permissive or Strict", mtlsMode))
		os.Exit(2)
	}
	restCfg, err := kubeConfig(float32(kubeQPS), kubeBurst)
	if err != nil {
		logger.Error("connecting to Kubernetes", "error", err)
		os.Exit(1)
	}
	kube, err := kubeClient(restCfg)
	if err != nil {
		logger.Error("connecting to Kubernetes", "error", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx = logr.NewContext(ctx, logr.FromSlogHandler(logger.Handler()))
	if err := run(ctx, cfg, kube, restCfg, meshv1.MTLSMode(mtlsMode), trafficOptions{maxRows: trafficMaxRows, service: service}, logger); err != nil {
		logger.Error("control plane stopped", "error", err)
		os.Exit(1)
	}
}

// kubeConfig uses the pod's ServiceAccount in a cluster and, outside one
// (running locally), KUBECONFIG or ~/.kube/config.
func kubeConfig(qps float32, burst int) (*rest.Config, error) {
	rc, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("not in a cluster, and no usable KUBECONFIG: %w", err)
		}
	}
	if err != nil {
		return nil, err
	}
	rc.QPS, rc.Burst = qps, burst
	return rest.AddUserAgent(rc, "trellis-controlplane"), nil
}

// kubeClient is the client of token reviews. Protobuf costs the API server
// less than JSON for every TokenReview; this client only handles built-in
// types, which all speak it.
func kubeClient(rc *rest.Config) (kubernetes.Interface, error) {
	rc = rest.CopyConfig(rc)
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	return kubernetes.NewForConfig(rc)
}

// startDiscovery starts the discovery index on its own informer cache and
// the route status writer behind leader election, and returns the service
// to register. The gRPC server starts once the caches have synced, so that
// no proxy is told a half-read cluster.
func startDiscovery(ctx context.Context, cfg controlplane.Config, restCfg *rest.Config, mode meshv1.MTLSMode, reg prometheus.Registerer, logger *slog.Logger) (*discovery.Server, cache.Cache, error) {
	ix := discovery.NewIndex(discovery.Config{Mesh: cfg.Mesh, TrustDomain: cfg.TrustDomain, MTLSMode: mode})
	if err := ix.Register(reg); err != nil {
		return nil, nil, fmt.Errorf("discovery metrics: %w", err)
	}
	c, err := discovery.NewCache(restCfg)
	if err != nil {
		return nil, nil, fmt.Errorf("discovery cache: %w", err)
	}
	if err := ix.Watch(ctx, c); err != nil {
		return nil, nil, fmt.Errorf("discovery watches: %w", err)
	}
	go func() {
		if err := c.Start(ctx); err != nil {
			logger.Error("discovery cache stopped", "error", err)
		}
	}()
	go ix.Run(ctx)

	kc, err := client.New(restCfg, client.Options{Scheme: discovery.Scheme()})
	if err != nil {
		return nil, nil, err
	}
	identity, err := os.Hostname() // the pod's name
	if err != nil {
		return nil, nil, err
	}
	go func() {
		err := discovery.RunElected(ctx, restCfg,
			discovery.Election{Namespace: cfg.Namespace, Name: "trellis-discovery-status-" + cfg.Mesh, Identity: identity},
			func(ctx context.Context) {
				if err := discovery.NewStatusWriter(ix, kc).Start(ctx); err != nil {
					logger.Error("route status writer stopped", "error", err)
				}
			})
		if err != nil && ctx.Err() == nil {
			logger.Error("route status leader election stopped", "error", err)
		}
	}()

	select {
	case <-ix.Synced():
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	srv := discovery.NewServer(ix)
	srv.PeerIdentity = func(ctx context.Context) (string, string, bool) {
		p, ok := auth.FromContext(ctx)
		return p.Namespace, p.ServiceAccount, ok
	}
	return srv, c, nil
}

// trafficOptions configure the traffic Store and its API.
type trafficOptions struct {
	maxRows int
	// service is the control plane's Service, whose endpoints are the
	// replicas.
	service string
}

func run(ctx context.Context, cfg controlplane.Config, kube kubernetes.Interface, restCfg *rest.Config, mode meshv1.MTLSMode, to trafficOptions, logger *slog.Logger) error {
	// Whichever server fails first stops the other.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	srv := controlplane.New(cfg, kube, logger)
	go srv.WatchSigner(ctx, signerPollInterval)

	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.GRPCAddr, err)
	}
	// The proxies' traffic reports, served on the HTTP port's /api/v1/.
	// Each proxy reports to this replica or another; the API asks the
	// others (their pod IPs, on this same HTTP port) to answer for the
	// whole mesh.
	self := os.Getenv("POD_NAME")
	if self == "" {
		if self, err = os.Hostname(); err != nil {
			return fmt.Errorf("this replica's pod name: POD_NAME is not set and the hostname is unknown: %w", err)
		}
	}
	_, portText, err := net.SplitHostPort(cfg.HTTPAddr)
	httpPort, perr := strconv.Atoi(portText)
	if err != nil || perr != nil {
		return fmt.Errorf("--http-addr=%q: want [host]:port, such as :15014", cfg.HTTPAddr)
	}
	store := traffic.NewStore(traffic.Options{MaxRowsPerBucket: to.maxRows, Self: self})
	if err := store.Register(srv.Registry()); err != nil {
		return fmt.Errorf("traffic metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", store.Handler())
	mux.Handle("/", srv.Handler())
	// Health first: /healthz answers, and /readyz says not ready, while the
	// discovery caches sync.
	httpSrv := &http.Server{Addr: cfg.HTTPAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	httpDone := make(chan error, 1)
	go func() { httpDone <- httpSrv.ListenAndServe() }()
	disco, podCache, err := startDiscovery(ctx, cfg, restCfg, mode, srv.Registry(), logger)
	if err != nil {
		return err
	}
	store.SetPods(traffic.ReaderPods(podCache))
	store.SetPeers(traffic.EndpointSlicePeers(podCache, cfg.Namespace, to.service, self, httpPort))
	gs := srv.GRPCServer()
	controlplanev1.RegisterDiscoveryServiceServer(gs, disco)
	traffic.NewServer(store).Register(gs)
	grpcDone := make(chan error, 1)
	go func() { grpcDone <- srv.ServeGRPC(ctx, gs, lis, grpcShutdownGrace) }()

	logger.Info("control plane started", "mesh", cfg.Mesh, "namespace", cfg.Namespace,
		"grpc", cfg.GRPCAddr, "http", cfg.HTTPAddr, "workloadCertTTL", cfg.WorkloadCertTTL.String())

	var runErr error
	grpcStopped := false
	select {
	case err := <-httpDone:
		runErr = fmt.Errorf("serving %s: %w", cfg.HTTPAddr, err)
	case runErr = <-grpcDone:
		grpcStopped = true
	case <-ctx.Done():
	}
	// gRPC drains within its grace period while /readyz says not ready.
	cancel()
	if !grpcStopped {
		if err := <-grpcDone; err != nil && runErr == nil {
			runErr = err
		}
	}
	shutdown, cancelShutdown := context.WithTimeout(context.Background(), httpShutdownGrace)
	defer cancelShutdown()
	if err := httpSrv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) && runErr == nil {
		runErr = err
	}
	if runErr == nil {
		logger.Info("control plane stopped")
	}
	return runErr
}
