package detect

import (
	"bytes"
	"crypto/tls"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

// referenceDetect is what Detect must say of a whole input, written as
// plainly as possible rather than a byte at a time.
func referenceDetect(b []byte) Protocol {
	if bytes.HasPrefix(b, []byte(preface)) {
		return HTTP2
	}
	i := bytes.Index(b, []byte("\r\n"))
	if i < 0 || i > maxRequestLine {
		return Opaque
	}
	parts := bytes.Split(b[:i], []byte(" "))
	if len(parts) != 3 || len(parts[0]) == 0 || len(parts[1]) == 0 {
		return Opaque
	}
	const token = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	for _, c := range parts[0] {
		if !strings.ContainsRune(token, rune(c)) {
			return Opaque
		}
	}
	for _, c := range parts[1] {
		if c < ' ' || c == 0x7f {
			return Opaque
		}
	}
	if v := string(parts[2]); v != "HTTP/1.0" && v != "HTTP/1.1" {
		return Opaque
	}
	return HTTP1
}

func FuzzDetect(f *testing.F) {
	for _, s := range []string{
		preface, preface + "\x00\x00", preface[:10], "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r",
		"GET / HTTP/1.1\r\n", "GET / HTTP/1.1\n", "OPTIONS * HTTP/1.0\r\n\r\n", "GET /\x80 HTTP/1.1\r\n",
		"\x16\x03\x01\x00\x05", "", "G", "GET  / HTTP/1.1\r\n",
	} {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		c := &memConn{data: bytes.Clone(in), chunk: int(chunk % 17)}
		p, conn, err := Detect(c, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if (p == HTTP2) != bytes.HasPrefix(in, []byte(preface)) {
			t.Errorf("Detect(%q) = %v", in, p)
		}
		if want := referenceDetect(in); p != want {
			t.Errorf("Detect(%q) in reads of %d = %v, want %v", in, chunk%17, p, want)
		}
		if back, err := io.ReadAll(conn); err != nil || !bytes.Equal(back, in) {
			t.Errorf("replayed %q, %v; want %q", back, err, in)
		}
	})
}

func FuzzClientHello(f *testing.F) {
	rec := capturedHello(f, &tls.Config{ServerName: serverName, NextProtos: []string{"trellis/h2", "h2"}})
	for _, s := range [][]byte{
		rec, fragment(rec, 50), rec[:100],
		record(1, body(sni("a.b"), alpn("h2"))), record(1, body()),
		[]byte("GET / HTTP/1.1\r\n"), {22, 3, 1, 0, 0},
	} {
		f.Add(s, uint8(0))
		f.Add(s, uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		// Whatever the reads, the same answer and the same bytes back.
		whole, wholeOK, conn, err := PeekClientHello(&memConn{data: bytes.Clone(in)}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if back, _ := io.ReadAll(conn); !bytes.Equal(back, in) {
			t.Errorf("replayed %q, want %q", back, in)
		}
		hello, ok, conn, err := PeekClientHello(&memConn{data: bytes.Clone(in), chunk: int(chunk%17) + 1}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ok != wholeOK || !reflect.DeepEqual(hello, whole) {
			t.Errorf("in reads of %d: %+v, ok %v; at once: %+v, ok %v", chunk%17+1, hello, ok, whole, wholeOK)
		}
		if back, _ := io.ReadAll(conn); !bytes.Equal(back, in) {
			t.Errorf("in reads of %d: replayed %q, want %q", chunk%17+1, back, in)
		}
		if ok && in[0] != handshakeType {
			t.Errorf("%q is a ClientHello?", in)
		}
	})
}
