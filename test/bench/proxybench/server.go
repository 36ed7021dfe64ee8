package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// serveCommand, as the first argument, makes this program the server that
// every row's requests end at; the benchmark runs itself so in the server's
// namespace.
const serveCommand = "serve"

// serve answers every request with the same body, its headers set without
// canonicalizing or allocating, so that the server costs every row the same
// and as little as it can. It returns on SIGTERM.
func serve(args []string) int {
	fs := flag.NewFlagSet(serveCommand, flag.ContinueOnError)
	addr := fs.String("addr", fmt.Sprintf(":%d", serverPort), "listen address")
	size := fs.Int("body-bytes", bodyBytes, "response body size")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	body := bytes.Repeat([]byte("t"), *size)
	contentType := []string{"application/octet-stream"}
	contentLength := []string{strconv.Itoa(len(body))}
	srv := &http.Server{
		Addr: *addr,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			h["Content-Type"] = contentType
			h["Content-Length"] = contentLength
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "server:", err)
		return 1
	}
	return 0
}
