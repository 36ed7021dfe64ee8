package detect

import (
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// What detection costs a connection, its reads from memory rather than a
// socket, the replayed bytes read back so the buffer is recycled:
//
//	go test -run '^$' -bench . -benchmem ./proxy/detect/

func BenchmarkDetect(b *testing.B) {
	for name, in := range map[string]string{
		"http1":  "GET /api/v1/temperature?city=Paris HTTP/1.1\r\nHost: temperature.default.svc.cluster.local:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
		"http2":  preface + "\x00\x00\x12\x04\x00\x00\x00\x00\x00",
		"opaque": "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
	} {
		b.Run(name, func(b *testing.B) {
			benchmark(b, []byte(in), func(c net.Conn) net.Conn {
				_, conn, err := Detect(c, time.Second)
				if err != nil {
					b.Fatal(err)
				}
				return conn
			})
		})
	}
}

func BenchmarkPeekClientHello(b *testing.B) {
	rec := capturedHello(b, &tls.Config{ServerName: serverName, NextProtos: []string{"trellis/h2"}})
	benchmark(b, rec, func(c net.Conn) net.Conn {
		_, ok, conn, err := PeekClientHello(c, time.Second)
		if err != nil || !ok {
			b.Fatal(ok, err)
		}
		return conn
	})
}

func benchmark(b *testing.B, in []byte, detect func(net.Conn) net.Conn) {
	c := &memConn{deadlines: make([]time.Time, 0, 2)}
	out := make([]byte, len(in))
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		c.data, c.deadlines = in, c.deadlines[:0]
		conn := detect(c)
		if n, err := conn.Read(out); n != len(in) || err != nil {
			b.Fatal(n, err)
		}
	}
}
