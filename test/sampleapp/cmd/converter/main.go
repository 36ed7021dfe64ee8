// Command converter is the sample app's gRPC converter (package
// trellis.sample.converter.v1), with the gRPC health service and reflection,
// and the same conversion over HTTP (GET /convert?celsius=21.5&unit=F) for
// the mesh's HTTPRoute demonstrations.
//
// Each setting is a flag whose default comes from the environment variable
// named beside it:
//
//	--listen-addr       LISTEN_ADDR       address to serve gRPC on (default :9090)
//	--http-listen-addr  HTTP_LISTEN_ADDR  address to serve HTTP on (default :8080; "off" for none)
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
	"net/http"
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
	addrs, cfg, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "converter:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, addrs, cfg, logger); err != nil {
		logger.Error("converter stopped", "error", err)
		os.Exit(1)
	}
}

// listenAddrs are where the converter serves.
type listenAddrs struct {
	grpc string
	// http is empty when HTTP is off.
	http string
}

func parse(args []string) (listenAddrs, converter.Config, error) {
	fs := flag.NewFlagSet("converter", flag.ContinueOnError)
	addr := fs.String("listen-addr", env("LISTEN_ADDR", ":9090"), "address to serve gRPC on (LISTEN_ADDR)")
	httpAddr := fs.String("http-listen-addr", env("HTTP_LISTEN_ADDR", ":8080"), `address to serve HTTP on, or "off" (HTTP_LISTEN_ADDR)`)
	version := fs.String("version", env("VERSION", converter.V1), "v1 or v2 (VERSION)")
	failPercent := fs.String("fail-percent", env("FAIL_PERCENT", "0"), "share of requests, 0 to 100, that fail with Unavailable (FAIL_PERCENT)")
	delay := fs.String("delay", env("DELAY", "0s"), "duration added to each request (DELAY)")
	if err := fs.Parse(args); err != nil {
		return listenAddrs{}, converter.Config{}, err
	}
	if fs.NArg() > 0 {
		return listenAddrs{}, converter.Config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	addrs := listenAddrs{grpc: *addr, http: *httpAddr}
	if addrs.http == "off" {
		addrs.http = ""
	}
	cfg := converter.Config{Version: *version, Pod: os.Getenv("POD_NAME")}
	var err error
	if cfg.FailPercent, err = strconv.Atoi(*failPercent); err != nil {
		return addrs, cfg, fmt.Errorf("FAIL_PERCENT %q: want a whole number from 0 to 100", *failPercent)
	}
	if cfg.Delay, err = time.ParseDuration(*delay); err != nil {
		return addrs, cfg, fmt.Errorf("DELAY %q: want a Go duration such as 300ms or 2s", *delay)
	}
	return addrs, cfg, cfg.Validate()
}

func env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, addrs listenAddrs, cfg converter.Config, logger *slog.Logger) error {
	lis, err := net.Listen("tcp", addrs.grpc)
	if err != nil {
		return err
	}
	conv := converter.NewServer(cfg)
	srv, hs := converter.NewGRPCServer(conv)
	errc := make(chan error, 2)
	go func() { errc <- fmt.Errorf("serving gRPC on %s: %w", addrs.grpc, srv.Serve(lis)) }()
	var httpSrv *http.Server
	httpAddr := "off"
	if addrs.http != "" {
		hl, err := net.Listen("tcp", addrs.http)
		if err != nil {
			srv.Stop()
			return err
		}
		httpAddr = hl.Addr().String()
		httpSrv = &http.Server{Handler: conv.HTTPHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { errc <- fmt.Errorf("serving HTTP on %s: %w", addrs.http, httpSrv.Serve(hl)) }()
	}
	logger.Info("converter started", "grpcAddr", lis.Addr().String(), "httpAddr", httpAddr, "version", cfg.Version,
		"failPercent", cfg.FailPercent, "delay", cfg.Delay.String(), "pod", cfg.Pod)

	select {
	case err := <-errc:
		srv.Stop()
		if httpSrv != nil {
			_ = httpSrv.Close()
		}
		return err
	case <-ctx.Done():
	}
	logger.Info("stopping: draining requests")
	hs.Shutdown()
	stopCtx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	if httpSrv != nil {
		if err := httpSrv.Shutdown(stopCtx); err != nil {
			logger.Warn("HTTP requests still open after the graceful stop timeout; closing them", "timeout", stopTimeout.String())
			_ = httpSrv.Close()
		}
	}
	select {
	case <-stopped:
	case <-stopCtx.Done():
		logger.Warn("requests still open after the graceful stop timeout; closing them", "timeout", stopTimeout.String())
		srv.Stop()
	}
	return nil
}
