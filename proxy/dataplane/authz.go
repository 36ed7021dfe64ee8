package dataplane

import (
	"net/http"
	"slices"
	"strings"

	"github.com/trellis-mesh/trellis/ca"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// caller is who a request or connection comes from, and what it asks for.
// An HTTP request has a method and path; a connection the proxy does not
// read as HTTP has neither (http false).
type caller struct {
	peer   string // SPIFFE ID, "" for a plaintext caller
	port   uint32
	http   bool
	method string
	path   string
}

// authorizer decides by the pod's AuthorizationPolicies, compiled by the
// control plane: a deny rule that matches denies; else an allow rule that
// matches allows; else the default, deny when any Allow policy selects the
// pod. Without policies (nil Authorization), everyone may call.
type authorizer struct {
	trustDomain string
}

// decide says whether c may call, and the rule that decided ("" for the
// default).
func (a *authorizer) decide(authz *controlplanev1.Authorization, c caller) (bool, string) {
	if authz == nil {
		return true, ""
	}
	for _, r := range authz.Deny {
		if a.matches(r, c, true) {
			return false, r.Name
		}
	}
	for _, r := range authz.Allow {
		if a.matches(r, c, false) {
			return true, r.Name
		}
	}
	return !authz.DefaultDeny, ""
}

// matches says whether rule r holds for c: each field it sets must, each
// by any of its values. paths and methods never hold for a connection not
// read as HTTP in an allow rule, and are passed over in a deny rule, so
// that both fail closed.
func (a *authorizer) matches(r *controlplanev1.AuthorizationRule, c caller, deny bool) bool {
	if len(r.Identities) > 0 && !slices.ContainsFunc(r.Identities, func(id string) bool { return idMatches(id, c.peer) }) {
		return false
	}
	if len(r.Namespaces) > 0 {
		td, ns, _, err := ca.ParseSPIFFEID(c.peer)
		if c.peer == "" || err != nil || td != a.trustDomain || !slices.Contains(r.Namespaces, ns) {
			return false
		}
	}
	if r.Unauthenticated && c.peer != "" {
		return false
	}
	if len(r.Ports) > 0 && !slices.Contains(r.Ports, c.port) {
		return false
	}
	if len(r.Paths) > 0 || len(r.Methods) > 0 {
		if !c.http {
			return deny
		}
		if len(r.Paths) > 0 && !slices.ContainsFunc(r.Paths, func(p string) bool { return pathMatches(p, c.path) }) {
			return false
		}
		if len(r.Methods) > 0 && !slices.Contains(r.Methods, c.method) {
			return false
		}
	}
	return true
}

// idMatches matches a SPIFFE ID exactly, or by prefix with a trailing *;
// a caller without an identity matches none.
func idMatches(pattern, id string) bool {
	if id == "" {
		return false
	}
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(id, p)
	}
	return id == pattern
}

func pathMatches(pattern, path string) bool {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(path, p)
	}
	return path == pattern
}

// authorization is the pod's Authorization now; nil (everyone) until the
// control plane has answered.
func (p *Proxy) authorization() *controlplanev1.Authorization {
	if in := p.inbound.Load(); in != nil {
		if st := in.Load(); st != nil {
			return st.Authorization
		}
	}
	return nil
}

// authorizeHTTP checks an inbound request and answers 403 (gRPC:
// PERMISSION_DENIED) when it is denied.
func (p *Proxy) authorizeHTTP(w http.ResponseWriter, r *http.Request, peer string, port uint16) bool {
	ok, rule := p.authz.decide(p.authorization(), caller{peer: peer, port: uint32(port), http: true, method: r.Method, path: r.URL.Path})
	if ok {
		return true
	}
	p.m.denied("http", rule)
	who := peer
	if who == "" {
		who = "an unauthenticated caller"
	}
	msg := "denied by the pod's AuthorizationPolicies: " + who + " may not " + r.Method + " " + r.URL.Path + " on port " + itoa(uint32(port))
	if rule != "" {
		msg += " (rule " + rule + ")"
	}
	proxyError(w, isGRPC(r), http.StatusForbidden, codePermissionDenied, msg)
	return false
}

// authorizeTCP checks an inbound connection that is not read as HTTP.
func (p *Proxy) authorizeTCP(peer string, port uint16) bool {
	ok, rule := p.authz.decide(p.authorization(), caller{peer: peer, port: uint32(port)})
	if !ok {
		p.m.denied("tcp", rule)
		p.log.Debug("closing a connection the pod's AuthorizationPolicies deny", "peer", peer, "port", port, "rule", rule)
	}
	return ok
}
