// Command converter is the sample app's gRPC converter (package
// trellis.sample.converter.v1), with the gRPC health service and reflection.
//
// Each setting is a flag whose default comes from the environment variable
// named beside it:
//
//	--listen-addr   LISTEN_ADDR   address to serve on (default :9090)
//	--version       VERSION       v1 or v2; v2 rounds to one decimal (default v1)
//	--fail-percent  FAIL_PERCENT  0 to 100: that share of requests fail with Unavailable (default 0)
//	--delay         DELAY         a duration added to each request, such as 300ms (default 0s)
//	                POD_NAME      sent back in responses
//
// It stops gracefully on SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/test/sampleapp/converter"
)

// stopTimeout bounds the graceful stop: streams left open after it are cut.
const stopTimeout = 10 * time.Second

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	addr, cfg, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "converter:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, addr, cfg, logger); err != nil {
		logger.Error("converter stopped", "error", err)
		os.Exit(1)
	}
}

func parse(args []string) (string, converter.Config, error) {
	fs := flag.NewFlagSet("converter", flag.ContinueOnError)
	addr := fs.String("listen-addr", env("LISTEN_ADDR", ":9090"), "address to serve gRPC on (LISTEN_ADDR)")
	version := fs.String("version", env("VERSION", converter.V1), "v1 or v2 (VERSION)")
	failPercent := fs.String("fail-percent", env("FAIL_PERCENT", "0"), "share of requests, 0 to 100, that fail with Unavailable (FAIL_PERCENT)")
	delay := fs.String("delay", env("DELAY", "0s"), "duration added to each request (DELAY)")
	if err := fs.Parse(args); err != nil {
		return "", converter.Config{}, err
	}
	if fs.NArg() > 0 {
		return "", converter.Config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg := converter.Config{Version: *version, Pod: os.Getenv("POD_NAME")}
	var err error
	if cfg.FailPercent, err = strconv.Atoi(*failPercent); err != nil {
		return "", cfg, fmt.Errorf("FAIL_PERCENT %q: want a whole number from 0 to 100", *failPercent)
	}
	if cfg.Delay, err = time.ParseDuration(*delay); err != nil {
		return "", cfg, fmt.Errorf("DELAY %q: want a Go duration such as 300ms or 2s", *delay)
	}
	return *addr, cfg, cfg.Validate()
}

func env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, addr string, cfg converter.Config, logger *slog.Logger) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv, hs := converter.NewGRPCServer(cfg)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	logger.Info("converter started", "addr", lis.Addr().String(), "version", cfg.Version,
		"failPercent", cfg.FailPercent, "delay", cfg.Delay.String(), "pod", cfg.Pod)

	select {
	case err := <-errc:
		return fmt.Errorf("serving %s: %w", addr, err)
	case <-ctx.Done():
	}
	logger.Info("stopping: draining requests")
	hs.Shutdown()
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(stopTimeout):
		logger.Warn("requests still open after the graceful stop timeout; closing them", "timeout", stopTimeout.String())
		srv.Stop()
	}
	return nil
}
