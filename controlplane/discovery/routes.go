package discovery

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"google.golang.org/protobuf/types/known/durationpb"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// isServiceParent reports whether a parentRef names a Service, as GAMMA
// routes do (group "" and kind Service, both written out: unset, they mean a
// Gateway).
func isServiceParent(p gwv1.ParentReference) bool {
	return p.Group != nil && *p.Group == "" && p.Kind != nil && *p.Kind == "Service"
}

func parentKey(routeNS string, p gwv1.ParentReference) objKey {
	ns := routeNS
	if p.Namespace != nil {
		ns = string(*p.Namespace)
	}
	return objKey{ns, string(p.Name)}
}

func parentRefs(obj client.Object) []gwv1.ParentReference {
	switch r := obj.(type) {
	case *gwv1.HTTPRoute:
		return r.Spec.ParentRefs
	case *gwv1.GRPCRoute:
		return r.Spec.ParentRefs
	}
	return nil
}

// serviceParents are the Services a route attaches to.
func serviceParents(obj client.Object) []objKey {
	var out []objKey
	for _, p := range parentRefs(obj) {
		if isServiceParent(p) {
			out = append(out, parentKey(obj.GetNamespace(), p))
		}
	}
	return out
}

// ruleBackendRefs are the backendRefs of a route's rules, rule by rule.
func ruleBackendRefs(obj client.Object) [][]gwv1.BackendRef {
	var out [][]gwv1.BackendRef
	switch r := obj.(type) {
	case *gwv1.HTTPRoute:
		for _, rule := range r.Spec.Rules {
			refs := make([]gwv1.BackendRef, len(rule.BackendRefs))
			for i, b := range rule.BackendRefs {
				refs[i] = b.BackendRef
			}
			out = append(out, refs)
		}
	case *gwv1.GRPCRoute:
		for _, rule := range r.Spec.Rules {
			refs := make([]gwv1.BackendRef, len(rule.BackendRefs))
			for i, b := range rule.BackendRefs {
				refs[i] = b.BackendRef
			}
			out = append(out, refs)
		}
	}
	return out
}

// backendServices are the Services a route's rules send to.
func backendServices(obj client.Object) []objKey {
	var out []objKey
	for _, refs := range ruleBackendRefs(obj) {
		for _, ref := range refs {
			if isServiceRef(ref.BackendObjectReference) {
				out = append(out, backendKeyOf(obj.GetNamespace(), ref.BackendObjectReference))
			}
		}
	}
	return out
}

func isServiceRef(ref gwv1.BackendObjectReference) bool {
	return deref(ref.Group) == "" && (ref.Kind == nil || *ref.Kind == "Service")
}

func backendKeyOf(routeNS string, ref gwv1.BackendObjectReference) objKey {
	ns := routeNS
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	return objKey{ns, string(ref.Name)}
}

// refCheck is what a backendRef resolves to.
type refCheck struct {
	svc  objKey
	port int32
	// reason is empty when the ref resolves, else the ResolvedRefs reason.
	reason  gwv1.RouteConditionReason
	message string
}

// checkBackendRef resolves a backendRef of route as the Gateway API says: a
// Service (InvalidKind otherwise), in the route's namespace or in one whose
// ReferenceGrant lets the route in (RefNotPermitted otherwise), that exists
// with the port named (BackendNotFound otherwise). A consumer route may name
// its parent Service, in the parent's namespace, without a grant: it sends
// its namespace's calls where they were going, and gives it no reach it did
// not have (GAMMA; the conformance suite's MeshConsumerRoute).
func (ix *Index) checkBackendRef(kind routeKind, route client.Object, ref gwv1.BackendObjectReference) refCheck {
	routeNS := route.GetNamespace()
	if !isServiceRef(ref) {
		return refCheck{reason: gwv1.RouteReasonInvalidKind, message: fmt.Sprintf(
			"%s %q of group %q is not a Service: Trellis routes to Services only", deref(ref.Kind), ref.Name, deref(ref.Group))}
	}
	k := backendKeyOf(routeNS, ref)
	c := refCheck{svc: k, port: deref(ref.Port)}
	if k.namespace != routeNS && !isParent(route, k) && !ix.grantAllows(kind, routeNS, k) {
		c.reason = gwv1.RouteReasonRefNotPermitted
		c.message = fmt.Sprintf("Service %s is in another namespace, and no ReferenceGrant in namespace %s lets %ss of namespace %s refer to it: create one",
			k, k.namespace, kind, routeNS)
		return c
	}
	svc := ix.services[k]
	switch {
	case svc == nil:
		c.reason, c.message = gwv1.RouteReasonBackendNotFound, fmt.Sprintf("Service %s does not exist", k)
	case ref.Port == nil:
		c.reason, c.message = gwv1.RouteReasonBackendNotFound, fmt.Sprintf("the reference to Service %s has no port: set port", k)
	case servicePort(svc, *ref.Port) == nil:
		c.reason, c.message = gwv1.RouteReasonBackendNotFound, fmt.Sprintf("Service %s has no TCP port %d", k, *ref.Port)
	}
	return c
}

// isParent reports whether route has the Service k as a parent.
func isParent(route client.Object, k objKey) bool {
	return slices.ContainsFunc(parentRefs(route), func(p gwv1.ParentReference) bool {
		return isServiceParent(p) && parentKey(route.GetNamespace(), p) == k
	})
}

// grantAllows reports whether a ReferenceGrant in the Service's namespace
// lets routes of kind from namespace from refer to it.
func (ix *Index) grantAllows(kind routeKind, from string, svc objKey) bool {
	for k, g := range ix.grants {
		if k.namespace != svc.namespace {
			continue
		}
		fromOK := slices.ContainsFunc(g.Spec.From, func(f gwv1.ReferenceGrantFrom) bool {
			return f.Group == gwv1.GroupName && string(f.Kind) == kind.String() && string(f.Namespace) == from
		})
		toOK := slices.ContainsFunc(g.Spec.To, func(t gwv1.ReferenceGrantTo) bool {
			return t.Group == "" && t.Kind == "Service" && (t.Name == nil || string(*t.Name) == svc.name)
		})
		if fromOK && toOK {
			return true
		}
	}
	return false
}

// attaches reports whether a route attaches to a Service port: GAMMA binds
// a parentRef without port (or sectionName) to every port.
func attaches(obj client.Object, k objKey, sp *corev1.ServicePort) bool {
	for _, p := range parentRefs(obj) {
		if isServiceParent(p) && parentKey(obj.GetNamespace(), p) == k &&
			(p.Port == nil || *p.Port == sp.Port) &&
			(p.SectionName == nil || string(*p.SectionName) == sp.Name) {
			return true
		}
	}
	return false
}

// attachedRoutes are the routes that decide requests from namespace caller
// to a Service port, as GAMMA says: the caller's namespace's routes for it
// if there are any (consumer routes), else the Service's namespace's
// (producer routes). Routes of other namespaces serve only their own
// namespace's callers; only routes of the Mesh's namespaces count. The
// routes come sorted, oldest first, then by namespace/name.
func (ix *Index) attachedRoutes(k objKey, sp *corev1.ServicePort, caller string) (routeNS string, routes []client.Object) {
	var consumer, producer []client.Object
	for rk := range ix.routesByParent[k] {
		if !ix.meshed(rk.namespace) {
			continue
		}
		obj := ix.routes[rk]
		if obj == nil || !attaches(obj, k, sp) {
			continue
		}
		switch rk.namespace {
		case k.namespace:
			producer = append(producer, obj)
		case caller:
			consumer = append(consumer, obj)
		}
	}
	routeNS, routes = k.namespace, producer
	if len(consumer) > 0 {
		routeNS, routes = caller, consumer
	}
	slices.SortFunc(routes, compareRoutes)
	return routeNS, routes
}

func compareRoutes(a, b client.Object) int {
	if c := a.GetCreationTimestamp().Compare(b.GetCreationTimestamp().Time); c != 0 {
		return c
	}
	if c := strings.Compare(a.GetNamespace()+"/"+a.GetName(), b.GetNamespace()+"/"+b.GetName()); c != 0 {
		return c
	}
	_, aGRPC := a.(*gwv1.GRPCRoute)
	_, bGRPC := b.(*gwv1.GRPCRoute)
	switch {
	case aGRPC == bGRPC:
		return 0
	case aGRPC:
		return -1
	}
	return 1
}

// outboundBuilder collects the backends of one OutboundResponse: the
// destination's Service port first, then each that the routes name, once.
type outboundBuilder struct {
	ix       *Index
	backends []*controlplanev1.Backend
	byKey    map[backendKey]uint32
	// deps are the Services whose change changes the response.
	deps map[objKey]struct{}
}

type backendKey struct {
	svc  objKey
	port int32
	// invalid stands for every backendRef that cannot be sent to: its
	// share of requests fails, as the Gateway API asks.
	invalid bool
}

func newOutboundBuilder(ix *Index) *outboundBuilder {
	return &outboundBuilder{ix: ix, byKey: map[backendKey]uint32{}, deps: map[objKey]struct{}{}}
}

func (b *outboundBuilder) add(key backendKey) uint32 {
	if i, ok := b.byKey[key]; ok {
		return i
	}
	be := &controlplanev1.Backend{}
	if !key.invalid {
		be = b.ix.backend(key.svc, key.port)
		b.deps[key.svc] = struct{}{}
	}
	i := uint32(len(b.backends))
	b.backends = append(b.backends, be)
	b.byKey[key] = i
	return i
}

// ref is the backend index of a backendRef. A missing Service (or port) is
// a backend without endpoints, which comes alive when the Service does; a
// ref that may not be followed is the invalid backend.
func (b *outboundBuilder) ref(kind routeKind, route client.Object, ref gwv1.BackendObjectReference) uint32 {
	c := b.ix.checkBackendRef(kind, route, ref)
	if c.svc.name != "" {
		b.deps[c.svc] = struct{}{}
	}
	if c.reason == "" || (c.reason == gwv1.RouteReasonBackendNotFound && ref.Port != nil) {
		return b.add(backendKey{svc: c.svc, port: c.port})
	}
	return b.add(backendKey{invalid: true})
}

// candidate is one match of one rule, with what orders it among all.
type candidate struct {
	prec  precedence
	route *controlplanev1.Route
}

// precedence orders matches as the Gateway API does. GRPCRoute rules come
// before HTTPRoute rules, which would otherwise take every gRPC call with a
// catch-all.
type precedence struct {
	http bool
	// HTTPRoute: path kind (exact 3, regular expression 2, prefix 1; where
	// regular expressions go is left to implementations), its length, a
	// method, the number of headers and of query parameters.
	pathKind, pathLen int
	method            bool
	headers, queries  int
	// GRPCRoute: characters of the service and method matched.
	grpcService, grpcMethod int
	created                 time.Time
	name                    string
	rule, match             int
}

func comparePrecedence(a, b precedence) int {
	if a.http != b.http {
		if a.http {
			return 1
		}
		return -1
	}
	more := func(x, y int) int { return cmp.Compare(y, x) }
	for _, c := range []int{
		more(a.pathKind, b.pathKind), more(a.pathLen, b.pathLen), more(boolInt(a.method), boolInt(b.method)),
		more(a.grpcService, b.grpcService), more(a.grpcMethod, b.grpcMethod),
		more(a.headers, b.headers), more(a.queries, b.queries),
		a.created.Compare(b.created), strings.Compare(a.name, b.name),
		cmp.Compare(a.rule, b.rule), cmp.Compare(a.match, b.match),
	} {
		if c != 0 {
			return c
		}
	}
	return 0
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// compileRoutes turns routes into the ordered route table: one Route per
// match, sorted by precedence. grpc reports whether a GRPCRoute is among them.
func (b *outboundBuilder) compileRoutes(routes []client.Object) (out []*controlplanev1.Route, grpc bool) {
	var cands []candidate
	for _, obj := range routes {
		switch r := obj.(type) {
		case *gwv1.HTTPRoute:
			cands = append(cands, b.httpRoute(r)...)
		case *gwv1.GRPCRoute:
			cands = append(cands, b.grpcRoute(r)...)
			grpc = true
		}
	}
	slices.SortStableFunc(cands, func(x, y candidate) int { return comparePrecedence(x.prec, y.prec) })
	out = make([]*controlplanev1.Route, len(cands))
	for i, c := range cands {
		out[i] = c.route
	}
	return out, grpc
}

func ruleName(obj client.Object, i int) string {
	return fmt.Sprintf("%s/%s/%d", obj.GetNamespace(), obj.GetName(), i)
}

func (b *outboundBuilder) httpRoute(r *gwv1.HTTPRoute) []candidate {
	var cands []candidate
	for ri := range r.Spec.Rules {
		rule := &r.Spec.Rules[ri]
		base := &controlplanev1.Route{Name: ruleName(r, ri)}
		ok := true
		for _, f := range rule.Filters {
			ok = httpFilter(base, f) && ok
		}
		for _, br := range rule.BackendRefs {
			wb := &controlplanev1.WeightedBackend{Backend: b.ref(httpRouteKind, r, br.BackendObjectReference), Weight: weight(br.Weight)}
			for _, f := range br.Filters {
				if !backendFilter(wb, f.Type, f.RequestHeaderModifier, f.ResponseHeaderModifier) {
					wb.Backend = b.add(backendKey{invalid: true})
				}
			}
			base.Backends = append(base.Backends, wb)
		}
		if !ok {
			// A filter Trellis cannot apply must not be skipped: the
			// rule's requests fail instead.
			base.Backends = nil
		}
		if t := rule.Timeouts; t != nil && t.Request != nil {
			if d, err := time.ParseDuration(string(*t.Request)); err == nil && d > 0 {
				base.Timeout = durationpb.New(d)
			}
		}
		if rt := rule.Retry; rt != nil {
			base.Retry = &controlplanev1.Retry{Attempts: uint32(max(0, deref(rt.Attempts)))}
			for _, c := range rt.Codes {
				base.Retry.Codes = append(base.Retry.Codes, uint32(c))
			}
			if rt.Backoff != nil {
				if d, err := time.ParseDuration(string(*rt.Backoff)); err == nil {
					base.Retry.Backoff = durationpb.New(d)
				}
			}
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.HTTPRouteMatch{{}}
		}
		for mi, m := range matches {
			route := cloneRoute(base)
			cm, prec := httpMatch(m)
			route.Matches = []*controlplanev1.Match{cm}
			prec.http, prec.created, prec.name, prec.rule, prec.match = true, r.CreationTimestamp.Time, r.Namespace+"/"+r.Name, ri, mi
			cands = append(cands, candidate{prec: prec, route: route})
		}
	}
	return cands
}

func (b *outboundBuilder) grpcRoute(r *gwv1.GRPCRoute) []candidate {
	var cands []candidate
	for ri := range r.Spec.Rules {
		rule := &r.Spec.Rules[ri]
		base := &controlplanev1.Route{Name: ruleName(r, ri)}
		ok := true
		for _, f := range rule.Filters {
			switch f.Type {
			case gwv1.GRPCRouteFilterRequestHeaderModifier:
				base.RequestHeaders = append(base.RequestHeaders, headerModifiers(f.RequestHeaderModifier)...)
			case gwv1.GRPCRouteFilterResponseHeaderModifier:
				base.ResponseHeaders = append(base.ResponseHeaders, headerModifiers(f.ResponseHeaderModifier)...)
			case gwv1.GRPCRouteFilterRequestMirror:
				// Not implemented; see httpFilter.
			default:
				ok = false
			}
		}
		for _, br := range rule.BackendRefs {
			wb := &controlplanev1.WeightedBackend{Backend: b.ref(grpcRouteKind, r, br.BackendObjectReference), Weight: weight(br.Weight)}
			for _, f := range br.Filters {
				if !backendFilter(wb, gwv1.HTTPRouteFilterType(f.Type), f.RequestHeaderModifier, f.ResponseHeaderModifier) {
					wb.Backend = b.add(backendKey{invalid: true})
				}
			}
			base.Backends = append(base.Backends, wb)
		}
		if !ok {
			base.Backends = nil
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.GRPCRouteMatch{{}}
		}
		for mi, m := range matches {
			route := cloneRoute(base)
			cm, prec := grpcMatch(m)
			route.Matches = []*controlplanev1.Match{cm}
			prec.created, prec.name, prec.rule, prec.match = r.CreationTimestamp.Time, r.Namespace+"/"+r.Name, ri, mi
			cands = append(cands, candidate{prec: prec, route: route})
		}
	}
	return cands
}

// cloneRoute copies a rule's compiled parts for one of its matches; the
// parts themselves are shared, and never modified once built.
func cloneRoute(r *controlplanev1.Route) *controlplanev1.Route {
	return &controlplanev1.Route{
		Name: r.Name, Backends: r.Backends, RequestHeaders: r.RequestHeaders, ResponseHeaders: r.ResponseHeaders,
		Redirect: r.Redirect, Rewrite: r.Rewrite, Timeout: r.Timeout, Retry: r.Retry,
	}
}

func weight(w *int32) uint32 {
	if w == nil {
		return 1
	}
	return uint32(max(0, *w))
}

// httpFilter applies a rule's filter to its route. RequestMirror and CORS
// are not implemented and are left out: without them requests still go
// where they should, and browsers refuse cross-origin responses that lack
// CORS headers. false for a filter that must not be skipped and that
// Trellis does not implement (ExternalAuth, ExtensionRef, any other).
func httpFilter(r *controlplanev1.Route, f gwv1.HTTPRouteFilter) bool {
	switch f.Type {
	case gwv1.HTTPRouteFilterRequestMirror, gwv1.HTTPRouteFilterCORS:
	case gwv1.HTTPRouteFilterRequestHeaderModifier:
		r.RequestHeaders = append(r.RequestHeaders, headerModifiers(f.RequestHeaderModifier)...)
	case gwv1.HTTPRouteFilterResponseHeaderModifier:
		r.ResponseHeaders = append(r.ResponseHeaders, headerModifiers(f.ResponseHeaderModifier)...)
	case gwv1.HTTPRouteFilterRequestRedirect:
		if rd := f.RequestRedirect; rd != nil {
			r.Redirect = &controlplanev1.Redirect{
				Scheme:     deref(rd.Scheme),
				Hostname:   string(deref(rd.Hostname)),
				Port:       uint32(max(0, deref(rd.Port))),
				StatusCode: uint32(max(0, deref(rd.StatusCode))),
			}
			if r.Redirect.StatusCode == 0 {
				r.Redirect.StatusCode = 302
			}
			r.Redirect.FullPath, r.Redirect.PrefixPath = pathModifier(rd.Path)
		}
	case gwv1.HTTPRouteFilterURLRewrite:
		if rw := f.URLRewrite; rw != nil {
			r.Rewrite = &controlplanev1.Rewrite{Hostname: string(deref(rw.Hostname))}
			r.Rewrite.FullPath, r.Rewrite.PrefixPath = pathModifier(rw.Path)
		}
	default:
		return false
	}
	return true
}

func pathModifier(p *gwv1.HTTPPathModifier) (full, prefix string) {
	if p == nil {
		return "", ""
	}
	switch p.Type {
	case gwv1.FullPathHTTPPathModifier:
		return deref(p.ReplaceFullPath), ""
	case gwv1.PrefixMatchHTTPPathModifier:
		return "", deref(p.ReplacePrefixMatch)
	}
	return "", ""
}

// backendFilter applies a backendRef's filter; only header modifiers are
// supported there.
func backendFilter(wb *controlplanev1.WeightedBackend, t gwv1.HTTPRouteFilterType, req, resp *gwv1.HTTPHeaderFilter) bool {
	switch t {
	case gwv1.HTTPRouteFilterRequestHeaderModifier:
		wb.RequestHeaders = append(wb.RequestHeaders, headerModifiers(req)...)
	case gwv1.HTTPRouteFilterResponseHeaderModifier:
		wb.ResponseHeaders = append(wb.ResponseHeaders, headerModifiers(resp)...)
	default:
		return false
	}
	return true
}

func headerModifiers(f *gwv1.HTTPHeaderFilter) []*controlplanev1.HeaderModifier {
	if f == nil {
		return nil
	}
	var out []*controlplanev1.HeaderModifier
	for _, h := range f.Set {
		out = append(out, &controlplanev1.HeaderModifier{Action: controlplanev1.HeaderModifier_ACTION_SET, Name: string(h.Name), Value: h.Value})
	}
	for _, h := range f.Add {
		out = append(out, &controlplanev1.HeaderModifier{Action: controlplanev1.HeaderModifier_ACTION_ADD, Name: string(h.Name), Value: h.Value})
	}
	for _, name := range f.Remove {
		out = append(out, &controlplanev1.HeaderModifier{Action: controlplanev1.HeaderModifier_ACTION_REMOVE, Name: name})
	}
	return out
}

// httpMatch compiles an HTTPRouteMatch; without a path it is a prefix
// match of /, as the CRD defaults it.
func httpMatch(m gwv1.HTTPRouteMatch) (*controlplanev1.Match, precedence) {
	out := &controlplanev1.Match{Path: &controlplanev1.PathMatch{Kind: controlplanev1.PathMatch_KIND_PREFIX, Value: "/"}}
	var prec precedence
	if m.Path != nil {
		if m.Path.Value != nil {
			out.Path.Value = *m.Path.Value
		}
		switch deref(m.Path.Type) {
		case gwv1.PathMatchExact:
			out.Path.Kind = controlplanev1.PathMatch_KIND_EXACT
		case gwv1.PathMatchRegularExpression:
			out.Path.Kind = controlplanev1.PathMatch_KIND_REGEX
		}
	}
	switch out.Path.Kind {
	case controlplanev1.PathMatch_KIND_EXACT:
		prec.pathKind = 3
	case controlplanev1.PathMatch_KIND_REGEX:
		prec.pathKind = 2
	default:
		prec.pathKind = 1
	}
	prec.pathLen = len(out.Path.Value)
	for _, h := range m.Headers {
		out.Headers = append(out.Headers, &controlplanev1.HeaderMatch{Name: string(h.Name), Value: h.Value, Regex: deref(h.Type) == gwv1.HeaderMatchRegularExpression})
	}
	for _, q := range m.QueryParams {
		out.QueryParams = append(out.QueryParams, &controlplanev1.HeaderMatch{Name: string(q.Name), Value: q.Value, Regex: deref(q.Type) == gwv1.QueryParamMatchRegularExpression})
	}
	if m.Method != nil {
		out.Method = string(*m.Method)
		prec.method = true
	}
	prec.headers, prec.queries = len(out.Headers), len(out.QueryParams)
	return out, prec
}

// grpcMatch compiles a GRPCRouteMatch. A regular expression on the service
// or method becomes one on the path, /service/method, which the Match
// message can express.
func grpcMatch(m gwv1.GRPCRouteMatch) (*controlplanev1.Match, precedence) {
	out := &controlplanev1.Match{}
	var prec precedence
	if mm := m.Method; mm != nil {
		svc, method := deref(mm.Service), deref(mm.Method)
		prec.grpcService, prec.grpcMethod = len(svc), len(method)
		if deref(mm.Type) == gwv1.GRPCMethodMatchRegularExpression {
			out.Path = &controlplanev1.PathMatch{Kind: controlplanev1.PathMatch_KIND_REGEX, Value: "/" + orAny(svc) + "/" + orAny(method)}
		} else {
			out.GrpcService, out.GrpcMethod = svc, method
		}
	}
	for _, h := range m.Headers {
		out.Headers = append(out.Headers, &controlplanev1.HeaderMatch{Name: string(h.Name), Value: h.Value, Regex: deref(h.Type) == gwv1.GRPCHeaderMatchRegularExpression})
	}
	prec.headers = len(out.Headers)
	return out, prec
}

func orAny(re string) string {
	if re == "" {
		return "[^/]+"
	}
	return "(?:" + re + ")"
}
