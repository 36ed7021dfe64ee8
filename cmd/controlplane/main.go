// Command controlplane is a Mesh's control plane: identity, discovery and
// policy for its proxies. The operator deploys it, one Deployment per Mesh.
//
// For now it loads the mesh's signing certificate and serves its health and
// metrics; the identity and discovery services come with their issue.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/controlplane"
)

func main() {
	cfg := controlplane.Config{}
	var logLevel string
	flag.StringVar(&cfg.Mesh, "mesh", "default", "name of the Mesh this control plane serves")
	flag.StringVar(&cfg.Namespace, "namespace", "trellis-system", "namespace the control plane runs in")
	flag.StringVar(&cfg.TrustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of the mesh")
	flag.StringVar(&cfg.SignerDir, "signer-dir", "/var/run/trellis/signer", "directory with the signing intermediate: tls.crt, tls.key, ca.crt")
	flag.StringVar(&cfg.HTTPAddr, "http-addr", ":15014", "address of /healthz, /readyz and /metrics")
	flag.StringVar(&cfg.GRPCAddr, "grpc-addr", ":15012", "address of the proxies' gRPC API")
	flag.StringVar(&logLevel, "log-level", "info", "error, warn, info, debug or trace")
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

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg, logger); err != nil {
		logger.Error("control plane stopped", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg controlplane.Config, logger *slog.Logger) error {
	srv := controlplane.New(cfg, logger)
	go srv.WatchSigner(ctx, 10*time.Second)

	httpSrv := &http.Server{Addr: cfg.HTTPAddr, Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- httpSrv.ListenAndServe() }()
	logger.Info("control plane started", "mesh", cfg.Mesh, "namespace", cfg.Namespace, "http", cfg.HTTPAddr)

	select {
	case err := <-errc:
		return fmt.Errorf("serving %s: %w", cfg.HTTPAddr, err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := httpSrv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
