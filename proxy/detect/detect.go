package detect

import (
	"fmt"
	"net"
	"time"
)

// Protocol is what a connection speaks, as far as its first bytes tell.
type Protocol int

const (
	// Opaque is anything that is neither HTTP/1 nor HTTP/2 in the clear,
	// or that did not say so in time: TLS, a database protocol, a protocol
	// in which the server speaks first.
	Opaque Protocol = iota
	// HTTP1 is HTTP/1.0 or HTTP/1.1 in the clear.
	HTTP1
	// HTTP2 is HTTP/2 in the clear with prior knowledge (h2c), as gRPC
	// clients without TLS send it.
	HTTP2
)

func (p Protocol) String() string {
	switch p {
	case Opaque:
		return "opaque"
	case HTTP1:
		return "http1"
	case HTTP2:
		return "http2"
	}
	return fmt.Sprintf("Protocol(%d)", int(p))
}

// preface is the HTTP/2 client connection preface (RFC 9113, 3.4).
const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// maxRequestLine is the longest HTTP/1 request line taken for HTTP/1,
// without its CRLF: the least that servers must accept (RFC 9112, 3), and
// more than most allow.
const maxRequestLine = 8 << 10

// Detect reads the start of c, for at most timeout (none if it is not
// positive), and says which protocol it speaks: HTTP2 for the HTTP/2
// client preface; HTTP1 for an HTTP/1.0 or HTTP/1.1 request line (a token
// method, a space, a request target, a space, the version and CRLF, the
// line at most 8 KiB); Opaque for anything else, or when the timeout
// passes or c ends before the bytes tell. It decides at the first byte
// that rules both out, without waiting for more: a TLS ClientHello, whose
// first byte cannot start a method, is Opaque at once. A protocol in
// which the server speaks first is Opaque only after the timeout, which
// should therefore be short, or such ports not detected at all.
//
// The returned connection reads the bytes Detect read and then from c. It
// has an Unwrap() net.Conn method that returns c and a Buffered() int
// method that counts the bytes still to replay, so that a caller can
// splice c once they are out; io.Copy from it does so by itself. It has a
// CloseWrite method when c has one. Detect clears c's read deadline. Its
// error is a read error other than the timeout or the end of c, with the
// protocol if the bytes before it decided one; the returned connection
// is still to be closed.
func Detect(c net.Conn, timeout time.Duration) (Protocol, net.Conn, error) {
	r, err := start(c, timeout)
	if err != nil {
		return Opaque, c, err
	}
	var s sniffer
	for {
		more, err := r.more()
		if p, ok := s.feed(r.bytes()); ok {
			conn, err := r.done(err) // a reset that came with the deciding bytes
			return p, conn, err
		}
		if !more {
			conn, err := r.done(err)
			return Opaque, conn, err
		}
	}
}

// sniffer classifies the start of a connection a read at a time, keeping
// where it was so that a client that sends a byte at a time costs no more
// than one that sends them all at once.
type sniffer struct {
	n     int  // bytes looked at
	notH2 bool // a byte differed from the preface
	line  lineState
	field int // where the request line's current field starts
}

// lineState is how far an HTTP/1 request line has been read.
type lineState int

const (
	inMethod lineState = iota
	inTarget
	inVersion
	atCR
	atLF
	lineDone
	notHTTP1
)

// version is the HTTP/1 version without its minor digit, 0 or 1.
const version = "HTTP/1."

// feed looks at the bytes of b it has not seen, b being all the bytes read
// so far, and reports the protocol once they decide it.
func (s *sniffer) feed(b []byte) (Protocol, bool) {
	for ; s.n < len(b) && !s.notH2; s.n++ {
		c := b[s.n]
		switch {
		case c != preface[s.n]:
			s.notH2 = true
		case s.n == len(preface)-1:
			return HTTP2, true
		}
		// No request line ends in this loop: one of HTTP/1 differs from
		// the preface by its version at the latest.
		if s.step(c) == notHTTP1 && s.notH2 {
			return Opaque, true
		}
	}
	for ; s.n < len(b); s.n++ {
		if s.line == inTarget {
			// Most of a request line is its target: pass over it in a
			// tight loop, leaving its end, or the limit, to step.
			for s.n < len(b) && s.n < maxRequestLine && b[s.n] > ' ' && b[s.n] != 0x7f {
				s.n++
			}
			if s.n == len(b) {
				break
			}
		}
		switch s.step(b[s.n]) {
		case lineDone:
			return HTTP1, true
		case notHTTP1:
			return Opaque, true
		}
	}
	return Opaque, false
}

// step takes c, the byte at s.n, into the request line and returns the
// state after it.
func (s *sniffer) step(c byte) lineState {
	if s.line < atCR && s.n >= maxRequestLine {
		s.line = notHTTP1
	}
	switch s.line {
	case inMethod:
		switch {
		case c == ' ' && s.n > 0:
			s.line, s.field = inTarget, s.n+1
		case !isTokenChar[c]:
			s.line = notHTTP1
		}
	case inTarget:
		switch {
		case c == ' ' && s.n > s.field:
			s.line, s.field = inVersion, s.n+1
		case c <= ' ' || c == 0x7f: // an empty target, or a control character
			s.line = notHTTP1
		}
	case inVersion:
		switch i := s.n - s.field; {
		case i < len(version) && c == version[i]:
		case i == len(version) && (c == '0' || c == '1'):
			s.line = atCR
		default:
			s.line = notHTTP1
		}
	case atCR:
		s.line = notHTTP1
		if c == '\r' {
			s.line = atLF
		}
	case atLF:
		s.line = notHTTP1
		if c == '\n' {
			s.line = lineDone
		}
	}
	return s.line
}

// isTokenChar is whether a byte may be in a token, such as a method
// (RFC 9110, 5.6.2).
var isTokenChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()
