package detect

import (
	"net"
	"time"
)

// Hello is what a TLS ClientHello says about where the client is going.
type Hello struct {
	// ServerName is the server_name extension's host name (SNI); empty
	// when the client sent none, as clients that dial an IP do.
	ServerName string
	// ALPN is the application protocols the client offers, in its order
	// of preference; nil when it offers none.
	ALPN []string
}

const (
	recordHeader  = 5
	maxRecord     = 1 << 14 // a plaintext record's payload (RFC 8446, 5.1)
	handshakeType = 22      // the record content type of a handshake
	clientHello   = 1       // the handshake message type
	// maxHello is the largest ClientHello read, its handshake header
	// included. Browsers' are under 2 KiB even with post-quantum key
	// shares; more is a client probing the proxy.
	maxHello = 16 << 10
)

// PeekClientHello reads a TLS ClientHello at the start of c, for at most
// timeout (none if it is not positive), without consuming it: the
// returned connection reads the same bytes again, then from c, like
// Detect's. ok is false, at the first byte that shows it, when c does not
// start with a TLS handshake record; it is also false when the ClientHello
// is malformed, is longer than 16 KiB, or did not arrive whole in time,
// so that the caller relays c as opaque bytes rather than fail it. A
// ClientHello split over several records is put back together. err is a
// read error other than the timeout or the end of c.
func PeekClientHello(c net.Conn, timeout time.Duration) (hello Hello, ok bool, replay net.Conn, err error) {
	r, err := start(c, timeout)
	if err != nil {
		return Hello{}, false, c, err
	}
	var a assembler
	for {
		more, err := r.more()
		if msg, decided := a.feed(r.bytes()); decided {
			if msg != nil {
				hello, ok = parseClientHello(msg)
			}
			conn, err := r.done(err)
			return hello, ok, conn, err
		}
		if !more {
			conn, err := r.done(err)
			return Hello{}, false, conn, err
		}
	}
}

// assembler takes TLS records as they arrive and puts together the
// handshake message they carry.
type assembler struct {
	next  int    // where the next record starts
	msg   []byte // the handshake bytes of the records so far
	owned bool   // msg is a copy, not a part of the read bytes
}

// feed looks at b, all the bytes read so far, and reports whether they
// decide: with the ClientHello's body once it is whole, with nil as soon
// as they are not the start of one.
func (a *assembler) feed(b []byte) (body []byte, decided bool) {
	for {
		rec := b[a.next:]
		// Rule out what is not a ClientHello from its first bytes: the
		// content type, the major version, the lengths and, in the first
		// record, the handshake type and size.
		if len(rec) > 0 && rec[0] != handshakeType || len(rec) > 1 && rec[1] != 3 {
			return nil, true
		}
		if len(rec) < recordHeader {
			return nil, false
		}
		n := int(rec[3])<<8 | int(rec[4])
		if n == 0 || n > maxRecord {
			return nil, true
		}
		if a.msg == nil {
			first := rec[recordHeader:min(len(rec), recordHeader+n)]
			if len(first) > 0 && first[0] != clientHello || len(first) >= 4 && helloSize(first) > maxHello {
				return nil, true
			}
		}
		if len(rec) < recordHeader+n {
			return nil, false
		}
		payload := rec[recordHeader : recordHeader+n]
		switch {
		case a.msg == nil:
			a.msg = payload
		case !a.owned:
			a.msg = append(append(make([]byte, 0, 2*len(a.msg)+n), a.msg...), payload...)
			a.owned = true
		default:
			a.msg = append(a.msg, payload...)
		}
		a.next += recordHeader + n
		if len(a.msg) < 4 {
			continue
		}
		size := helloSize(a.msg)
		switch {
		case size > maxHello:
			return nil, true
		case len(a.msg) >= size:
			return a.msg[4:size], true
		}
	}
}

// helloSize is the size of the handshake message that msg starts with,
// its 4-byte header included.
func helloSize(msg []byte) int {
	return 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
}

// parseClientHello reads the server name and ALPN protocols from a
// ClientHello's body (RFC 8446, 4.1.2; RFC 6066, 3; RFC 7301, 3.1),
// checking every length, as a server would before it trusts any of it.
func parseClientHello(body []byte) (Hello, bool) {
	var h Hello
	s := bytesReader(body)
	var sessionID, suites, compression, exts bytesReader
	if !s.skip(2+32) || // legacy_version, random
		!s.vector8(&sessionID) || len(sessionID) > 32 ||
		!s.vector16(&suites) || len(suites) < 2 || len(suites)%2 != 0 ||
		!s.vector8(&compression) || len(compression) < 1 {
		return Hello{}, false
	}
	if len(s) == 0 { // a TLS 1.0 ClientHello may have no extensions
		return h, true
	}
	if !s.vector16(&exts) || len(s) != 0 {
		return Hello{}, false
	}
	var sawSNI, sawALPN bool
	for len(exts) > 0 {
		var typ uint16
		var data bytesReader
		if !exts.uint16(&typ) || !exts.vector16(&data) {
			return Hello{}, false
		}
		switch typ {
		case 0: // server_name
			if sawSNI || !parseServerName(data, &h) {
				return Hello{}, false
			}
			sawSNI = true
		case 16: // application_layer_protocol_negotiation
			if sawALPN || !parseALPN(data, &h) {
				return Hello{}, false
			}
			sawALPN = true
		}
	}
	return h, true
}

func parseServerName(data bytesReader, h *Hello) bool {
	var list bytesReader
	if !data.vector16(&list) || len(data) != 0 || len(list) == 0 {
		return false
	}
	for len(list) > 0 {
		var typ uint8
		var name bytesReader
		if !list.uint8(&typ) || !list.vector16(&name) || len(name) == 0 {
			return false
		}
		if typ == 0 && h.ServerName == "" { // host_name; the only type there is
			h.ServerName = string(name)
		}
	}
	return true
}

func parseALPN(data bytesReader, h *Hello) bool {
	var list bytesReader
	if !data.vector16(&list) || len(data) != 0 || len(list) == 0 {
		return false
	}
	for len(list) > 0 {
		var proto bytesReader
		if !list.vector8(&proto) || len(proto) == 0 {
			return false
		}
		h.ALPN = append(h.ALPN, string(proto))
	}
	return true
}

// bytesReader reads the big-endian integers and length-prefixed vectors
// of TLS's presentation language, each method reporting false when too few
// bytes are left, after which the parse is over.
type bytesReader []byte

func (r *bytesReader) skip(n int) bool {
	if len(*r) < n {
		return false
	}
	*r = (*r)[n:]
	return true
}

func (r *bytesReader) uint8(v *uint8) bool {
	if len(*r) < 1 {
		return false
	}
	*v = (*r)[0]
	*r = (*r)[1:]
	return true
}

func (r *bytesReader) uint16(v *uint16) bool {
	if len(*r) < 2 {
		return false
	}
	*v = uint16((*r)[0])<<8 | uint16((*r)[1])
	*r = (*r)[2:]
	return true
}

func (r *bytesReader) vector8(v *bytesReader) bool {
	var n uint8
	return r.uint8(&n) && r.take(int(n), v)
}

func (r *bytesReader) vector16(v *bytesReader) bool {
	var n uint16
	return r.uint16(&n) && r.take(int(n), v)
}

func (r *bytesReader) take(n int, v *bytesReader) bool {
	if len(*r) < n {
		return false
	}
	*v = (*r)[:n]
	*r = (*r)[n:]
	return true
}
