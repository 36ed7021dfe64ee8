package detect

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// bufSize is the most either detector reads before it gives up: a 16 KiB
// ClientHello in records with their headers, which also holds the longest
// HTTP/1 request line with its CRLF.
const bufSize = maxHello + 1<<10

// buffers recycles the detectors' buffers: one is taken for every
// connection, and given back as soon as its bytes have been replayed.
var buffers = sync.Pool{New: func() any { return new([bufSize]byte) }}

// replayConn is a connection whose first bytes were read by a detector:
// Read returns those bytes again before it reads from the connection.
type replayConn struct {
	net.Conn
	buf []byte         // read and not yet replayed
	arr *[bufSize]byte // buf's backing array, pooled
}

// Read replays the bytes the detector read, then reads from the
// connection. Like a net.Conn's, it must not be called concurrently.
func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.buf) == 0 {
		return r.Conn.Read(p)
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	if len(r.buf) == 0 {
		r.release()
	}
	return n, nil
}

// WriteTo writes the replayed bytes to w and then copies the connection,
// so that io.Copy from a replayed TCP connection to another still splices
// once the replayed bytes are out.
func (r *replayConn) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(r.buf) > 0 {
		n, err := w.Write(r.buf)
		total += int64(n)
		r.buf = r.buf[n:]
		if err != nil {
			return total, err
		}
		r.release()
	}
	n, err := io.Copy(w, r.Conn)
	return total + n, err
}

// Buffered is how many bytes are left to replay before Read reads from the
// connection: once they have been read, a caller may use Unwrap's
// connection directly, to splice it.
func (r *replayConn) Buffered() int { return len(r.buf) }

// Unwrap is the connection the bytes were read from.
func (r *replayConn) Unwrap() net.Conn { return r.Conn }

func (r *replayConn) release() {
	if r.arr != nil {
		buffers.Put(r.arr)
		r.arr, r.buf = nil, nil
	}
}

// replayCloseWriter is a replayConn of a connection that can half-close,
// such as a *net.TCPConn, so that a relay can still pass on the FIN.
type replayCloseWriter struct{ *replayConn }

func (r replayCloseWriter) CloseWrite() error {
	return r.Conn.(interface{ CloseWrite() error }).CloseWrite()
}

// reader reads the start of a connection into a pooled buffer until its
// deadline, for a detector that looks at each read as it arrives.
type reader struct {
	c   net.Conn
	arr *[bufSize]byte
	n   int
}

// start takes a buffer and sets c's read deadline timeout from now; no
// deadline when timeout is not positive.
func start(c net.Conn, timeout time.Duration) (reader, error) {
	if timeout > 0 {
		if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return reader{}, err
		}
	}
	return reader{c: c, arr: buffers.Get().(*[bufSize]byte)}, nil
}

// more reads once into the rest of the buffer. It reports false, with a
// nil error, when the connection timed out or ended, or the buffer is
// full: nothing more will arrive for the detector.
func (r *reader) more() (bool, error) {
	if r.n == bufSize {
		return false, nil
	}
	// A Read that returns neither bytes nor an error is allowed but
	// useless; a few in a row mean the connection is broken.
	for range 100 {
		m, err := r.c.Read(r.arr[r.n:])
		r.n += m
		switch {
		case err == nil && m == 0:
			continue
		case err == nil || m > 0 && endOfInput(err):
			// The detector looks at these bytes first; the error comes
			// again with the next read, if it needs one.
			return true, nil
		case endOfInput(err):
			return false, nil
		}
		return false, err
	}
	return false, io.ErrNoProgress
}

func (r *reader) bytes() []byte { return r.arr[:r.n] }

// done clears the read deadline and hands the bytes read to a replaying
// connection.
func (r *reader) done(err error) (net.Conn, error) {
	if cerr := r.c.SetReadDeadline(time.Time{}); cerr != nil && err == nil {
		err = cerr
	}
	rc := &replayConn{Conn: r.c, buf: r.arr[:r.n], arr: r.arr}
	if r.n == 0 {
		rc.release()
	}
	if _, ok := r.c.(interface{ CloseWrite() error }); ok {
		return replayCloseWriter{rc}, err
	}
	return rc, err
}

// endOfInput reports whether a read error means only that no more bytes
// will come in time: the deadline passed or the peer finished sending.
func endOfInput(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
