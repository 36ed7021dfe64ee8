package discovery

import (
	"strings"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// protocolFor says what a port carries, from its appProtocol if it names a
// protocol the proxy knows, else from its name's prefix, Istio-style
// (http-web, grpc, h2c-api, tcp-db). explicit is false when neither says,
// and the answer is then opaque TCP.
func protocolFor(appProtocol *string, name string) (p controlplanev1.Protocol, explicit bool) {
	if appProtocol != nil {
		switch strings.ToLower(*appProtocol) {
		case "kubernetes.io/h2c", "h2c", "http2":
			return controlplanev1.Protocol_PROTOCOL_HTTP2, true
		case "grpc":
			return controlplanev1.Protocol_PROTOCOL_GRPC, true
		case "http", "kubernetes.io/ws":
			return controlplanev1.Protocol_PROTOCOL_HTTP1, true
		case "tcp", "https", "tls", "kubernetes.io/wss":
			return controlplanev1.Protocol_PROTOCOL_TCP, true
		}
	}
	if p, ok := protocolFromName(name); ok {
		return p, true
	}
	return controlplanev1.Protocol_PROTOCOL_TCP, false
}

// namePrefixes map a port name, or its part before the first '-', to a protocol.
var namePrefixes = map[string]controlplanev1.Protocol{
	"http":  controlplanev1.Protocol_PROTOCOL_HTTP1,
	"http2": controlplanev1.Protocol_PROTOCOL_HTTP2,
	"h2c":   controlplanev1.Protocol_PROTOCOL_HTTP2,
	"grpc":  controlplanev1.Protocol_PROTOCOL_GRPC,
	"tcp":   controlplanev1.Protocol_PROTOCOL_TCP,
	"https": controlplanev1.Protocol_PROTOCOL_TCP,
	"tls":   controlplanev1.Protocol_PROTOCOL_TCP,
}

func protocolFromName(name string) (controlplanev1.Protocol, bool) {
	prefix, _, _ := strings.Cut(strings.ToLower(name), "-")
	p, ok := namePrefixes[prefix]
	return p, ok
}
