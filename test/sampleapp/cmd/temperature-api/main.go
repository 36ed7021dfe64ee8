// Command temperature-api is the sample app's HTTP/1.1 JSON API:
//
//	GET /temperature?city=Oslo&unit=F   (unit F, C or K; C when left out)
//	GET /healthz, GET /readyz
//
// It converts temperatures by calling the converter over gRPC, on one
// plain-text connection (mTLS is the mesh's job). Each setting is a flag
// whose default comes from the environment variable named beside it:
//
//	--listen-addr        LISTEN_ADDR        address to serve HTTP on (default :8080)
//	--converter-addr     CONVERTER_ADDR     the converter's host:port (default converter:9090)
//	--converter-timeout  CONVERTER_TIMEOUT  bound of each converter call (default 2s)
//	                     POD_NAME           sent back in responses
//
// It stops gracefully on SIGTERM or SIGINT.
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
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	converterv1 "github.com/trellis-mesh/trellis/test/sampleapp/converter/v1"
	"github.com/trellis-mesh/trellis/test/sampleapp/temperature"
)

// shutdownTimeout bounds how long requests in flight may take to finish
// after SIGTERM.
const shutdownTimeout = 10 * time.Second

type options struct {
	listenAddr    string
	converterAddr string
	cfg           temperature.Config
}

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	opts, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "temperature-api:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, opts, logger); err != nil {
		logger.Error("temperature-api stopped", "error", err)
		os.Exit(1)
	}
}

func parse(args []string) (options, error) {
	fs := flag.NewFlagSet("temperature-api", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.listenAddr, "listen-addr", env("LISTEN_ADDR", ":8080"), "address to serve HTTP on (LISTEN_ADDR)")
	fs.StringVar(&o.converterAddr, "converter-addr", env("CONVERTER_ADDR", "converter:9090"), "the converter's host:port (CONVERTER_ADDR)")
	timeout := fs.String("converter-timeout", env("CONVERTER_TIMEOUT", "2s"), "bound of each converter call (CONVERTER_TIMEOUT)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	d, err := time.ParseDuration(*timeout)
	if err != nil || d <= 0 {
		return o, fmt.Errorf("CONVERTER_TIMEOUT %q: want a positive Go duration such as 500ms or 2s", *timeout)
	}
	if _, _, err := net.SplitHostPort(o.converterAddr); err != nil {
		return o, fmt.Errorf("CONVERTER_ADDR %q: want host:port, such as converter:9090", o.converterAddr)
	}
	o.cfg = temperature.Config{ConverterTimeout: d, Pod: os.Getenv("POD_NAME")}
	return o, nil
}

func env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, o options, logger *slog.Logger) error {
	// One connection for all requests; it connects lazily and reconnects
	// with backoff by itself.
	conn, err := grpc.NewClient(o.converterAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("CONVERTER_ADDR %q: %w", o.converterAddr, err)
	}
	defer func() { _ = conn.Close() }()
	api := temperature.New(o.cfg, converterv1.NewConverterClient(conn), logger)

	srv := &http.Server{Addr: o.listenAddr, Handler: api.Handler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	logger.Info("temperature-api started", "addr", o.listenAddr, "converter", o.converterAddr,
		"converterTimeout", o.cfg.ConverterTimeout.String(), "pod", o.cfg.Pod)

	select {
	case err := <-errc:
		return fmt.Errorf("serving %s: %w", o.listenAddr, err)
	case <-ctx.Done():
	}
	logger.Info("stopping: draining requests")
	shutdown, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
