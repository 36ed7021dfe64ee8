package detect

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"reflect"
	"testing"
	"time"
)

const serverName = "api.default.svc.cluster.local"

// certificate is a self-signed certificate for serverName.
func certificate(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: serverName},
		DNSNames:     []string{serverName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// capturedHello is the first flight of a crypto/tls client with cfg: its
// ClientHello record.
func capturedHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer func() { _ = a.Close(); _ = b.Close() }()
	go func() { _ = tls.Client(a, cfg).Handshake() }()
	header := make([]byte, recordHeader)
	if _, err := io.ReadFull(b, header); err != nil {
		t.Fatal(err)
	}
	rec := make([]byte, recordHeader+(int(header[3])<<8|int(header[4])))
	copy(rec, header)
	if _, err := io.ReadFull(b, rec[recordHeader:]); err != nil {
		t.Fatal(err)
	}
	return rec
}

// fragment splits the handshake in a record's payload into records of at
// most n bytes each, as a client may.
func fragment(rec []byte, n int) []byte {
	var out []byte
	for p := rec[recordHeader:]; len(p) > 0; {
		k := min(n, len(p))
		out = append(out, handshakeType, 3, 1, byte(k>>8), byte(k))
		out = append(out, p[:k]...)
		p = p[k:]
	}
	return out
}

// The pieces of a hand-made ClientHello.

func u16(n int) []byte { return []byte{byte(n >> 8), byte(n)} }

func vec16(b ...[]byte) []byte {
	v := bytes.Join(b, nil)
	return append(u16(len(v)), v...)
}

func ext(typ int, data []byte) []byte { return append(u16(typ), vec16(data)...) }

func sni(names ...string) []byte {
	var list [][]byte
	for _, n := range names {
		list = append(list, append([]byte{0}, vec16([]byte(n))...))
	}
	return ext(0, vec16(list...))
}

func alpn(protos ...string) []byte {
	var list [][]byte
	for _, p := range protos {
		list = append(list, append([]byte{byte(len(p))}, p...))
	}
	return ext(16, vec16(list...))
}

// body is a ClientHello body with extensions exts, or none when nil.
func body(exts ...[]byte) []byte {
	b := append([]byte{3, 3}, make([]byte, 32)...) // legacy_version, random
	b = append(b, 0)                               // no session ID
	b = append(b, 0, 2, 0x13, 0x01)                // TLS_AES_128_GCM_SHA256
	b = append(b, 1, 0)                            // null compression
	if exts != nil {
		b = append(b, vec16(exts...)...)
	}
	return b
}

// record puts a handshake message of type typ and body b in one record.
func record(typ byte, b []byte) []byte {
	msg := append([]byte{typ, byte(len(b) >> 16), byte(len(b) >> 8), byte(len(b))}, b...)
	return append([]byte{handshakeType, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

func TestPeekClientHelloFromCryptoTLS(t *testing.T) {
	cert, pool := certificate(t)
	for name, maxVersion := range map[string]uint16{"TLS 1.3": tls.VersionTLS13, "TLS 1.2": tls.VersionTLS12} {
		t.Run(name, func(t *testing.T) {
			client, server := pipe(t)
			handshake := make(chan error, 1)
			go func() {
				c := tls.Client(client, &tls.Config{
					ServerName: serverName,
					NextProtos: []string{"trellis/h2", "http/1.1"},
					RootCAs:    pool,
					MaxVersion: maxVersion,
				})
				if err := c.Handshake(); err != nil {
					handshake <- err
					return
				}
				_, err := c.Write([]byte("ping"))
				handshake <- err
			}()

			hello, ok, conn, err := PeekClientHello(server, 5*time.Second)
			if err != nil || !ok {
				t.Fatalf("PeekClientHello: ok %v, %v", ok, err)
			}
			want := Hello{ServerName: serverName, ALPN: []string{"trellis/h2", "http/1.1"}}
			if !reflect.DeepEqual(hello, want) {
				t.Errorf("hello = %+v, want %+v", hello, want)
			}
			if _, ok := conn.(interface{ CloseWrite() error }); !ok {
				t.Error("the replay of a *net.TCPConn has no CloseWrite")
			}

			// The server handshakes over the replay: it must see the very
			// bytes the client sent.
			s := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"trellis/h2"}})
			if err := s.Handshake(); err != nil {
				t.Fatalf("handshake over the replayed connection: %v", err)
			}
			if p := s.ConnectionState().NegotiatedProtocol; p != "trellis/h2" {
				t.Errorf("negotiated %q, want trellis/h2", p)
			}
			if got := readAll(t, s, 4); string(got) != "ping" {
				t.Errorf("read %q, want ping", got)
			}
			if err := <-handshake; err != nil {
				t.Fatalf("client: %v", err)
			}
		})
	}
}

func TestPeekClientHelloFragmented(t *testing.T) {
	rec := capturedHello(t, &tls.Config{ServerName: serverName, NextProtos: []string{"trellis/h2"}})
	want := Hello{ServerName: serverName, ALPN: []string{"trellis/h2"}}
	for _, size := range []int{1, 4, 7, 100, 1 << 14} {
		for _, chunk := range []int{1, 3, 0} {
			in := fragment(rec, size)
			c := &memConn{data: bytes.Clone(in), chunk: chunk}
			hello, ok, conn, err := PeekClientHello(c, time.Second)
			if err != nil || !ok || !reflect.DeepEqual(hello, want) {
				t.Errorf("records of %d, reads of %d: %+v, ok %v, %v; want %+v", size, chunk, hello, ok, err, want)
				continue
			}
			if back, _ := io.ReadAll(conn); !bytes.Equal(back, in) {
				t.Errorf("records of %d, reads of %d: replay differs from the input", size, chunk)
			}
		}
	}
}

func TestPeekClientHello(t *testing.T) {
	for name, tc := range map[string]struct {
		in   []byte
		ok   bool
		want Hello
	}{
		"SNI and ALPN":            {record(1, body(sni("a.b"), alpn("h2", "http/1.1"))), true, Hello{ServerName: "a.b", ALPN: []string{"h2", "http/1.1"}}},
		"other extensions":        {record(1, body(ext(43, []byte{2, 3, 4}), sni("a.b"), ext(0xfe0d, nil))), true, Hello{ServerName: "a.b"}},
		"no extensions":           {record(1, body()), true, Hello{}},
		"empty extensions":        {record(1, body([]byte{})), true, Hello{}},
		"the first host name":     {record(1, body(sni("a.b", "c.d"))), true, Hello{ServerName: "a.b"}},
		"followed by more":        {append(record(1, body(sni("a.b"))), 0x14, 3, 3, 0, 1, 1), true, Hello{ServerName: "a.b"}},
		"HTTP":                    {[]byte("GET / HTTP/1.1\r\n\r\n"), false, Hello{}},
		"nothing":                 {nil, false, Hello{}},
		"SSLv2 hello":             {[]byte{0x80, 0x2e, 0x01, 0x03, 0x01}, false, Hello{}},
		"application data":        {[]byte{23, 3, 3, 0, 1, 0}, false, Hello{}},
		"major version 2":         {[]byte{22, 2, 0, 0, 1, 1}, false, Hello{}},
		"empty record":            {[]byte{22, 3, 1, 0, 0}, false, Hello{}},
		"record over 16 KiB":      {[]byte{22, 3, 1, 0x40, 0x01}, false, Hello{}},
		"ServerHello":             {record(2, body(sni("a.b"))), false, Hello{}},
		"ClientHello over 16 KiB": {[]byte{22, 3, 1, 0, 4, 1, 0, 0x3f, 0xfd}, false, Hello{}},
		"ClientHello of 16 KiB":   {record(1, body(sni("a.b"), ext(21, make([]byte, maxHello-4-len(body(sni("a.b")))-2-4)))), true, Hello{ServerName: "a.b"}},
		"cut short":               {record(1, body(sni("a.b")))[:40], false, Hello{}},
		"over 16 KiB in pieces":   {[]byte{22, 3, 1, 0, 1, 1, 22, 3, 1, 0, 1, 0, 22, 3, 1, 0, 1, 0x40, 22, 3, 1, 0, 1, 0}, false, Hello{}},
		"no room for the random":  {record(1, []byte{3, 3, 0, 0}), false, Hello{}},
		"no compression methods":  {record(1, body()[:len(body())-2]), false, Hello{}},
		"alert after a fragment":  {append(fragment(record(1, body(sni("a.b"))), 10)[:15], 21, 3, 3, 0, 2, 2, 40), false, Hello{}},
		"session ID over 32":      {record(1, append(append(append([]byte{3, 3}, make([]byte, 32)...), 33), append(make([]byte, 33), 0, 2, 0x13, 1, 1, 0)...)), false, Hello{}},
		"odd cipher suites":       {record(1, append(append([]byte{3, 3}, make([]byte, 32)...), 0, 0, 3, 1, 2, 3, 1, 0)), false, Hello{}},
		"no compression":          {record(1, append(append([]byte{3, 3}, make([]byte, 32)...), 0, 0, 2, 1, 2, 0)), false, Hello{}},
		"bytes after extensions":  {record(1, append(body(sni("a.b")), 0)), false, Hello{}},
		"extension cut short":     {record(1, append(body()[:len(body())], 0, 4, 0, 0, 0, 9)), false, Hello{}},
		"two SNI extensions":      {record(1, body(sni("a.b"), sni("c.d"))), false, Hello{}},
		"two ALPN extensions":     {record(1, body(alpn("h2"), alpn("h2"))), false, Hello{}},
		"empty server name list":  {record(1, body(ext(0, vec16()))), false, Hello{}},
		"empty server name":       {record(1, body(sni(""))), false, Hello{}},
		"SNI with trailing bytes": {record(1, body(ext(0, append(vec16([]byte{0, 0, 1, 'a'}), 0)))), false, Hello{}},
		"empty protocol list":     {record(1, body(ext(16, vec16()))), false, Hello{}},
		"empty protocol":          {record(1, body(alpn("h2", ""))), false, Hello{}},
		"protocol cut short":      {record(1, body(ext(16, vec16([]byte{5, 'h'})))), false, Hello{}},
		"server name cut short":   {record(1, body(ext(0, vec16([]byte{0, 0, 9, 'a'})))), false, Hello{}},
		"extension type cut":      {record(1, append(body()[:len(body())], 0, 1, 0)), false, Hello{}},
	} {
		t.Run(name, func(t *testing.T) {
			c := &memConn{data: bytes.Clone(tc.in)}
			hello, ok, conn, err := PeekClientHello(c, time.Second)
			if err != nil || ok != tc.ok || !reflect.DeepEqual(hello, tc.want) {
				t.Errorf("PeekClientHello = %+v, ok %v, %v; want %+v, ok %v", hello, ok, err, tc.want, tc.ok)
			}
			if back, _ := io.ReadAll(conn); !bytes.Equal(back, tc.in) {
				t.Errorf("replayed %q, want %q", back, tc.in)
			}
		})
	}
}

func TestPeekClientHelloDecidesEarly(t *testing.T) {
	// Not TLS, or a ClientHello announced too long: no need to wait.
	for name, in := range map[string][]byte{
		"HTTP":          []byte("GET"),
		"announced big": {22, 3, 1, 0x40, 0x00, 1, 0x00, 0x40, 0x00},
	} {
		t.Run(name, func(t *testing.T) {
			client, server := pipe(t)
			if _, err := client.Write(in); err != nil {
				t.Fatal(err)
			}
			begin := time.Now()
			_, ok, _, err := PeekClientHello(server, 10*time.Second)
			if err != nil || ok {
				t.Fatalf("ok %v, %v; want not ok", ok, err)
			}
			if d := time.Since(begin); d > 5*time.Second {
				t.Errorf("took %v: waited for bytes it did not need", d)
			}
		})
	}
}

func TestPeekClientHelloTimeout(t *testing.T) {
	rec := capturedHello(t, &tls.Config{ServerName: serverName})
	client, server := pipe(t)
	if _, err := client.Write(rec[:len(rec)/2]); err != nil {
		t.Fatal(err)
	}
	_, ok, conn, err := PeekClientHello(server, 100*time.Millisecond)
	if err != nil || ok {
		t.Fatalf("half a ClientHello: ok %v, %v; want not ok, no error", ok, err)
	}
	if _, err := client.Write(rec[len(rec)/2:]); err != nil {
		t.Fatal(err)
	}
	if back := readAll(t, conn, len(rec)); !bytes.Equal(back, rec) {
		t.Error("the replay after a timeout differs from what was sent")
	}
}

func TestPeekClientHelloReadError(t *testing.T) {
	broken := errors.New("connection reset by peer")
	rec := record(1, body(sni("a.b")))
	_, ok, _, err := PeekClientHello(&memConn{data: rec[:20], err: broken}, time.Second)
	if ok || !errors.Is(err, broken) {
		t.Errorf("ok %v, %v; want not ok and %v", ok, err, broken)
	}
	hello, ok, _, err := PeekClientHello(&memConn{data: rec, err: broken, errAtOnce: true}, time.Second)
	if !ok || hello.ServerName != "a.b" || !errors.Is(err, broken) {
		t.Errorf("%+v, ok %v, %v; want a.b, ok and %v", hello, ok, err, broken)
	}
}

func TestPeekClientHelloTooManyRecords(t *testing.T) {
	// A 4 KiB ClientHello in one-byte records takes 24 KiB: more than the
	// detector reads.
	in := fragment(record(1, body(sni("a.b"), ext(21, make([]byte, 4<<10)))), 1)
	_, ok, conn, err := PeekClientHello(&memConn{data: bytes.Clone(in)}, time.Second)
	if ok || err != nil {
		t.Errorf("ok %v, %v; want not ok, no error", ok, err)
	}
	if back, _ := io.ReadAll(conn); !bytes.Equal(back, in) {
		t.Error("the replay differs from the input")
	}
}
