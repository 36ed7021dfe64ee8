package detect

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// memConn is a connection whose reads return data, at most chunk bytes at
// a time, and then err (io.EOF when nil). It records the read deadlines
// set on it.
type memConn struct {
	net.Conn  // nil: the methods the detectors must not call panic
	data      []byte
	chunk     int
	err       error
	deadlines []time.Time
	clearErr  error // returned when the deadline is cleared
	errAtOnce bool  // return err with the last bytes, not after them
}

func (c *memConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		return 0, io.EOF
	}
	n := len(p)
	if c.chunk > 0 {
		n = min(n, c.chunk)
	}
	n = copy(p[:n], c.data)
	c.data = c.data[n:]
	if len(c.data) == 0 && c.errAtOnce {
		return n, c.err
	}
	return n, nil
}

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.deadlines = append(c.deadlines, t)
	if t.IsZero() {
		return c.clearErr
	}
	return nil
}

// pipe is a connected pair over loopback TCP: client writes, server is
// what the detectors read.
func pipe(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Close()
		_ = s.Close()
	})
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// readAll reads c until it ends or has given n bytes.
func readAll(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading %d bytes back: %v", n, err)
	}
	return got
}

func TestDetect(t *testing.T) {
	// long is a request line of n bytes before its CRLF.
	long := func(n int) string { return "GET /" + strings.Repeat("a", n-len("GET / HTTP/1.1")) + " HTTP/1.1\r\n" }
	for name, tc := range map[string]struct {
		in   string
		want Protocol
	}{
		"http2 preface":                 {preface, HTTP2},
		"http2 preface and a frame":     {preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00", HTTP2},
		"GET":                           {"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1},
		"HTTP/1.0":                      {"GET / HTTP/1.0\r\n\r\n", HTTP1},
		"POST absolute form":            {"POST http://a.b/c?d=e HTTP/1.1\r\nContent-Length: 0\r\n\r\n", HTTP1},
		"OPTIONS asterisk form":         {"OPTIONS * HTTP/1.1\r\n", HTTP1},
		"CONNECT authority form":        {"CONNECT a.b:443 HTTP/1.1\r\n", HTTP1},
		"extension method":              {"M-SEARCH * HTTP/1.1\r\n", HTTP1},
		"lower-case method is a token":  {"get / HTTP/1.1\r\n", HTTP1},
		"non-ASCII target":              {"GET /caf\xc3\xa9 HTTP/1.1\r\n", HTTP1},
		"request line of 8 KiB":         {long(8192), HTTP1},
		"request line over 8 KiB":       {long(8193), Opaque},
		"TLS":                           {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", Opaque},
		"SSH":                           {"SSH-2.0-OpenSSH_9.6\r\n", Opaque},
		"PostgreSQL":                    {"\x00\x00\x00\x08\x04\xd2\x16\x2f", Opaque},
		"HTTP/2.0 request line":         {"GET / HTTP/2.0\r\n", Opaque},
		"HTTP/1.2":                      {"GET / HTTP/1.2\r\n", Opaque},
		"bare LF":                       {"GET / HTTP/1.1\n", Opaque},
		"empty target":                  {"GET  HTTP/1.1\r\n", Opaque},
		"empty method":                  {" / HTTP/1.1\r\n", Opaque},
		"space in target":               {"GET /a b HTTP/1.1\r\n", Opaque},
		"control character in target":   {"GET /a\tb HTTP/1.1\r\n", Opaque},
		"no version":                    {"GET /\r\n", Opaque},
		"empty line first":              {"\r\nGET / HTTP/1.1\r\n", Opaque},
		"preface diverges after a line": {"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", Opaque},
	} {
		t.Run(name, func(t *testing.T) {
			// The input arrives and the client waits: Detect must decide
			// from the bytes alone, long before its timeout.
			client, server := pipe(t)
			if _, err := client.Write([]byte(tc.in)); err != nil {
				t.Fatal(err)
			}
			begin := time.Now()
			got, conn, err := Detect(server, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Detect = %v, want %v", got, tc.want)
			}
			if d := time.Since(begin); d > 5*time.Second {
				t.Errorf("Detect took %v: it waited for more bytes than it needed", d)
			}
			if back := readAll(t, conn, len(tc.in)); string(back) != tc.in {
				t.Errorf("replayed %q, want %q", back, tc.in)
			}
		})
	}
}

func TestSnifferDecidesAtTheFirstByteThatCan(t *testing.T) {
	for _, tc := range []struct {
		in   string // decided by its last byte, not before
		want Protocol
	}{
		{"\x16", Opaque},
		{" ", Opaque},
		{"P\r", Opaque},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", HTTP2},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r", Opaque},
		{"PRI * HTTP/1.1\r\n", HTTP1},
		{"GET /\x01", Opaque},
		{"GET / HTTP/1.1\r\n", HTTP1},
		{"GET / HTTP/1.1\r\r", Opaque},
		{"GET / HTTP/1.2", Opaque},
	} {
		var s sniffer
		for k := 1; k <= len(tc.in); k++ {
			p, ok := s.feed([]byte(tc.in[:k]))
			if ok != (k == len(tc.in)) || ok && p != tc.want {
				t.Errorf("%q: after %d bytes: %v, decided %v; want %v decided after %d", tc.in, k, p, ok, tc.want, len(tc.in))
				break
			}
		}
	}
}

func TestDetectEndsEarly(t *testing.T) {
	// A client that stops sending, or closes, before the bytes decide is
	// opaque, with what it sent replayed.
	for name, in := range map[string]string{
		"nothing":             "",
		"part of the preface": preface[:20],
		"part of a request":   "GET / HT",
	} {
		t.Run(name+"/timeout", func(t *testing.T) {
			client, server := pipe(t)
			if _, err := client.Write([]byte(in)); err != nil {
				t.Fatal(err)
			}
			begin := time.Now()
			got, conn, err := Detect(server, 100*time.Millisecond)
			if err != nil || got != Opaque {
				t.Fatalf("Detect = %v, %v; want opaque, no error", got, err)
			}
			if d := time.Since(begin); d < 100*time.Millisecond || d > 5*time.Second {
				t.Errorf("Detect returned after %v, want after its timeout of 100ms", d)
			}
			// The deadline is gone: the rest arrives after it and is read.
			time.Sleep(150 * time.Millisecond)
			if _, err := client.Write([]byte("rest")); err != nil {
				t.Fatal(err)
			}
			if back := readAll(t, conn, len(in)+4); string(back) != in+"rest" {
				t.Errorf("read %q, want %q", back, in+"rest")
			}
		})
		t.Run(name+"/EOF", func(t *testing.T) {
			client, server := pipe(t)
			if _, err := client.Write([]byte(in)); err != nil {
				t.Fatal(err)
			}
			_ = client.CloseWrite()
			got, conn, err := Detect(server, 10*time.Second)
			if err != nil || got != Opaque {
				t.Fatalf("Detect = %v, %v; want opaque, no error", got, err)
			}
			back, err := io.ReadAll(conn)
			if err != nil || string(back) != in {
				t.Errorf("read %q, %v; want %q and the end", back, err, in)
			}
		})
	}
}

func TestDetectByteAtATime(t *testing.T) {
	// Each byte is a segment of its own: Detect must take the bytes as
	// they come and decide when the last arrives, within its timeout, or
	// say opaque at the timeout, keeping every byte, if they are too slow.
	for name, tc := range map[string]struct {
		in      string
		gap     time.Duration // between bytes
		timeout time.Duration
		want    Protocol
	}{
		"http2 in time":      {preface, 5 * time.Millisecond, 5 * time.Second, HTTP2},
		"http1 in time":      {"GET / HTTP/1.1\r\n", 5 * time.Millisecond, 5 * time.Second, HTTP1},
		"http2 too slow":     {preface, 20 * time.Millisecond, 200 * time.Millisecond, Opaque},
		"http1 too slow":     {"GET /index.html HTTP/1.1\r\n", 20 * time.Millisecond, 200 * time.Millisecond, Opaque},
		"opaque on byte one": {"\x16\x03", 300 * time.Millisecond, 5 * time.Second, Opaque},
	} {
		t.Run(name, func(t *testing.T) {
			client, server := pipe(t)
			_ = client.SetNoDelay(true)
			sent := make(chan error, 1)
			go func() {
				for i := range len(tc.in) {
					if _, err := client.Write([]byte{tc.in[i]}); err != nil {
						sent <- err
						return
					}
					time.Sleep(tc.gap)
				}
				sent <- nil
			}()
			begin := time.Now()
			got, conn, err := Detect(server, tc.timeout)
			if err != nil || got != tc.want {
				t.Fatalf("Detect = %v, %v; want %v", got, err, tc.want)
			}
			if d := time.Since(begin); tc.in[0] == 0x16 && d >= tc.gap {
				t.Errorf("Detect took %v: it waited for the second byte although the first decided", d)
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			if back := readAll(t, conn, len(tc.in)); string(back) != tc.in {
				t.Errorf("read %q, want %q", back, tc.in)
			}
		})
	}
}

func TestDetectReadError(t *testing.T) {
	broken := errors.New("connection reset by peer")
	c := &memConn{data: []byte("GET / HT"), chunk: 3, err: broken}
	got, conn, err := Detect(c, time.Second)
	if !errors.Is(err, broken) || got != Opaque {
		t.Fatalf("Detect = %v, %v; want opaque and %v", got, err, broken)
	}
	if back := readAll(t, conn, 8); string(back) != "GET / HT" {
		t.Errorf("read %q, want what came before the error", back)
	}
	if len(c.deadlines) != 2 || !c.deadlines[1].IsZero() {
		t.Errorf("read deadlines set: %v, want the timeout and then none", c.deadlines)
	}

	// A reset that comes with the bytes that decide is still reported.
	c = &memConn{data: []byte("GET / HTTP/1.1\r\n"), err: broken, errAtOnce: true}
	if got, _, err := Detect(c, time.Second); !errors.Is(err, broken) || got != HTTP1 {
		t.Errorf("Detect = %v, %v; want http1 and %v", got, err, broken)
	}
	// The end of the connection with them is no error.
	c = &memConn{data: []byte("GET / HTTP/1.1\r\n"), err: io.EOF, errAtOnce: true}
	if got, _, err := Detect(c, time.Second); err != nil || got != HTTP1 {
		t.Errorf("Detect = %v, %v; want http1, no error", got, err)
	}
}

func TestDetectNoProgress(t *testing.T) {
	stuck := &stuckConn{memConn: &memConn{chunk: 1, data: []byte("GET")}}
	if _, _, err := Detect(stuck, time.Second); !errors.Is(err, io.ErrNoProgress) {
		t.Errorf("Detect on a connection whose reads return nothing: %v, want io.ErrNoProgress", err)
	}
}

// stuckConn returns 0, nil from every read once its data is out.
type stuckConn struct{ *memConn }

func (c *stuckConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, nil
	}
	return c.memConn.Read(p)
}

func TestDetectedConn(t *testing.T) {
	client, server := pipe(t)
	req := "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
	if _, err := client.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	got, conn, err := Detect(server, time.Second)
	if err != nil || got != HTTP1 {
		t.Fatalf("Detect = %v, %v", got, err)
	}
	type detected interface {
		net.Conn
		Unwrap() net.Conn
		Buffered() int
		CloseWrite() error
	}
	d, ok := conn.(detected)
	if !ok {
		t.Fatalf("the conn of a *net.TCPConn is a %T, without Unwrap, Buffered or CloseWrite", conn)
	}
	if d.Unwrap() != server {
		t.Errorf("Unwrap = %v, want the detected connection", d.Unwrap())
	}
	if d.Buffered() != len(req) {
		t.Errorf("Buffered = %d, want %d", d.Buffered(), len(req))
	}
	// The replayed bytes, then the rest: the body and a FIN passed on by
	// CloseWrite, through io.Copy, which uses WriteTo.
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = client.CloseWrite()
	var out bytes.Buffer
	if _, err := io.Copy(&out, conn); err != nil {
		t.Fatal(err)
	}
	if out.String() != req+"hello" {
		t.Errorf("copied %q, want %q", out.String(), req+"hello")
	}
	if d.Buffered() != 0 {
		t.Errorf("Buffered after the copy = %d", d.Buffered())
	}
	if err := d.CloseWrite(); err != nil {
		t.Errorf("CloseWrite: %v", err)
	}
	if n, err := client.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("the client read %d, %v after the server's CloseWrite, want EOF", n, err)
	}

	// Without CloseWrite on the connection, none on the replay.
	a, b := net.Pipe()
	defer func() { _ = a.Close(); _ = b.Close() }()
	go func() { _, _ = a.Write([]byte("\x16")) }()
	_, conn, err = Detect(b, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := conn.(interface{ CloseWrite() error }); ok {
		t.Error("the conn of a net.Pipe end has CloseWrite")
	}
}

func TestWriteToError(t *testing.T) {
	c := &memConn{data: []byte("GET / HTTP/1.1\r\n")}
	_, conn, err := Detect(c, 0)
	if err != nil {
		t.Fatal(err)
	}
	full := errors.New("disk full")
	if _, err := io.Copy(failingWriter{full}, conn); !errors.Is(err, full) {
		t.Errorf("io.Copy to a failing writer: %v, want %v", err, full)
	}
	if len(c.deadlines) != 1 || !c.deadlines[0].IsZero() {
		t.Errorf("deadlines with no timeout: %v, want only the clearing", c.deadlines)
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

func TestDetectClosedConn(t *testing.T) {
	_, server := pipe(t)
	_ = server.Close()
	if _, conn, err := Detect(server, time.Second); err == nil || conn != server {
		t.Errorf("Detect on a closed connection: %v, %v; want an error and the connection", conn, err)
	}
	if _, _, conn, err := PeekClientHello(server, time.Second); err == nil || conn != server {
		t.Errorf("PeekClientHello on a closed connection: %v, %v; want an error and the connection", conn, err)
	}
}

func TestDetectClearDeadlineError(t *testing.T) {
	closed := errors.New("use of closed network connection")
	p, conn, err := Detect(&memConn{data: []byte(preface), clearErr: closed}, time.Second)
	if !errors.Is(err, closed) || p != HTTP2 || conn == nil {
		t.Errorf("Detect = %v, %v, %v; want http2, a conn and the error of clearing the deadline", p, conn, err)
	}
}

func TestProtocolString(t *testing.T) {
	for p, want := range map[Protocol]string{Opaque: "opaque", HTTP1: "http1", HTTP2: "http2", 9: "Protocol(9)"} {
		if p.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(p), p.String(), want)
		}
	}
}
