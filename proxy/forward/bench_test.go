package forward

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))

// The cost of the proxy on loopback, against the same traffic without it:
//
//	go test -run '^$' -bench . ./proxy/forward/
//
// Throughput streams one connection; Connect opens, echoes a byte over
// and closes a connection per operation.

func BenchmarkThroughput(b *testing.B) {
	sink := serveB(b, func(c *net.TCPConn) {
		_, _ = io.Copy(io.Discard, c)
		_, _ = c.Write([]byte{1}) // all of it arrived
	})
	for name, addr := range map[string]string{"direct": sink, "proxied": proxyB(b, sink)} {
		b.Run(name, func(b *testing.B) {
			c, err := net.Dial("tcp4", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			chunk := make([]byte, 1<<20)
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			_ = c.(*net.TCPConn).CloseWrite()
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				b.Fatal(err)
			}
		})
	}
}

func BenchmarkConnect(b *testing.B) {
	srv := serveB(b, echo)
	for name, addr := range map[string]string{"direct": srv, "proxied": proxyB(b, srv)} {
		b.Run(name, func(b *testing.B) {
			one := make([]byte, 1)
			for b.Loop() {
				c, err := net.Dial("tcp4", addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(one); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, one); err != nil {
					b.Fatal(err)
				}
				_ = c.Close()
			}
		})
	}
}

func serveB(b *testing.B, handle func(*net.TCPConn)) string {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return ln.Addr().String()
}

// proxyB is a forwarder to dst on loopback, logging only errors.
func proxyB(b *testing.B, dst string) string {
	f := New(Outbound, Options{Destination: to(dst), Metrics: NewMetrics(prometheus.NewRegistry()), Log: quietLog})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = f.Serve(ln) }()
	b.Cleanup(func() { _ = f.Shutdown(context.Background()) })
	return ln.Addr().String()
}
