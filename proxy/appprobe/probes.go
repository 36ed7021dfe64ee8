package appprobe

import (
	"encoding/json"
	"strconv"
)

// The app's probes as the injector writes them into the proxy's
// environment: the JSON of inject.AppProbes, a map of Kubernetes
// ProbeHandlers. The types below decode the part of that JSON the proxy
// relays, with the same field names, so that the proxy does not link
// Kubernetes' API packages for four small structs. inject's
// TestAppProbesDecodeInTheProxy runs the injector and checks that they read
// everything it writes but the fields it lists as unrelayed.

// Probes are an injected pod's original app probes, keyed by
// <container>/<livez|readyz|startupz>, the end of their relay path on the
// admin port.
type Probes map[string]Handler

// ParseProbes decodes v, the value of sidecar.EnvAppProbes.
func ParseProbes(v string) (Probes, error) {
	var p Probes
	if err := json.Unmarshal([]byte(v), &p); err != nil {
		return nil, err
	}
	return p, nil
}

// Handler is a Kubernetes ProbeHandler without exec, which the injector
// never relays: a valid one has exactly one action.
type Handler struct {
	HTTPGet   *HTTPGetAction   `json:"httpGet,omitempty"`
	TCPSocket *TCPSocketAction `json:"tcpSocket,omitempty"`
	GRPC      *GRPCAction      `json:"grpc,omitempty"`
}

// HTTPGetAction is a Kubernetes HTTPGetAction without protocol: the relay
// speaks HTTP/1.1.
type HTTPGetAction struct {
	// Path may hold a query string, which is kept.
	Path string `json:"path,omitempty"`
	Port Port   `json:"port"`
	// Host defaults to the pod's IP.
	Host string `json:"host,omitempty"`
	// Scheme is HTTP (the default) or HTTPS.
	Scheme      string       `json:"scheme,omitempty"`
	HTTPHeaders []HTTPHeader `json:"httpHeaders,omitempty"`
}

// HTTPHeader is a header of an HTTP probe's request.
type HTTPHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// TCPSocketAction is a Kubernetes TCPSocketAction.
type TCPSocketAction struct {
	Port Port `json:"port"`
	// Host defaults to the pod's IP.
	Host string `json:"host,omitempty"`
}

// GRPCAction is a Kubernetes GRPCAction without mode: the relay connects
// in plaintext.
type GRPCAction struct {
	Port int32 `json:"port"`
	// Service is the one to check; nil or "" is the server's overall
	// health.
	Service *string `json:"service"`
}

// Port is the port of an HTTP or TCP probe, in the JSON of a Kubernetes
// IntOrString: a number, or the name of one of the container's ports. The
// injector resolves names, so a name here fails the probe.
type Port struct {
	// Named says the JSON held a string, Name, rather than a number.
	Named  bool
	Number int32
	Name   string
}

// UnmarshalJSON decodes a port as IntOrString does.
func (p *Port) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		p.Named, p.Number = true, 0
		return json.Unmarshal(b, &p.Name)
	}
	p.Named, p.Name = false, ""
	return json.Unmarshal(b, &p.Number)
}

// MarshalJSON encodes a port as IntOrString does.
func (p Port) MarshalJSON() ([]byte, error) {
	if p.Named {
		return json.Marshal(p.Name)
	}
	return strconv.AppendInt(nil, int64(p.Number), 10), nil
}
