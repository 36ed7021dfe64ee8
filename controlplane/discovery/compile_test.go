package discovery

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// Unit tests of what the index compiles, fed Go objects directly.

func TestProtocolFor(t *testing.T) {
	cases := map[string]struct {
		appProtocol *string
		name        string
		want        controlplanev1.Protocol
		explicit    bool
	}{
		"h2c appProtocol":            {ptr.To("kubernetes.io/h2c"), "web", controlplanev1.Protocol_PROTOCOL_HTTP2, true},
		"grpc appProtocol":           {ptr.To("grpc"), "", controlplanev1.Protocol_PROTOCOL_GRPC, true},
		"http appProtocol":           {ptr.To("HTTP"), "tcp-x", controlplanev1.Protocol_PROTOCOL_HTTP1, true},
		"unknown appProtocol, name":  {ptr.To("example.com/custom"), "grpc-api", controlplanev1.Protocol_PROTOCOL_GRPC, true},
		"name http":                  {nil, "http", controlplanev1.Protocol_PROTOCOL_HTTP1, true},
		"name http- prefix":          {nil, "http-metrics", controlplanev1.Protocol_PROTOCOL_HTTP1, true},
		"name h2c- prefix":           {nil, "h2c-api", controlplanev1.Protocol_PROTOCOL_HTTP2, true},
		"name tcp- prefix":           {nil, "tcp-db", controlplanev1.Protocol_PROTOCOL_TCP, true},
		"name that only starts so":   {nil, "httpbin", controlplanev1.Protocol_PROTOCOL_TCP, false},
		"no name, no appProtocol":    {nil, "", controlplanev1.Protocol_PROTOCOL_TCP, false},
		"tls appProtocol is opaque":  {ptr.To("https"), "http", controlplanev1.Protocol_PROTOCOL_TCP, true},
		"upper-case name is allowed": {nil, "GRPC-x", controlplanev1.Protocol_PROTOCOL_GRPC, true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, explicit := protocolFor(tc.appProtocol, tc.name)
			if got != tc.want || explicit != tc.explicit {
				t.Errorf("protocolFor(%v, %q) = %s, %v; want %s, %v", ptr.Deref(tc.appProtocol, "<nil>"), tc.name, got, explicit, tc.want, tc.explicit)
			}
		})
	}
}

func TestParseDestination(t *testing.T) {
	cases := map[string]struct {
		in      string
		key     string // "" when the destination can never be known
		invalid bool
	}{
		"IPv4":                    {in: "10.0.0.1:80", key: "10.0.0.1:80"},
		"IPv6":                    {in: "[fd00::1]:443", key: "[fd00::1]:443"},
		"IPv4-mapped IPv6":        {in: "[::ffff:10.0.0.1]:80", key: "10.0.0.1:80"},
		"name.namespace":          {in: "web.shop:80", key: "web.shop:80"},
		"name.namespace.svc":      {in: "web.shop.svc:80", key: "web.shop:80"},
		"full name":               {in: "web.shop.svc.cluster.local:80", key: "web.shop:80"},
		"full name with dot":      {in: "Web.Shop.svc.cluster.local.:80", key: "web.shop:80"},
		"another cluster domain":  {in: "web.shop.svc.example.org:80", key: ""},
		"single label":            {in: "web:80", key: ""},
		"external name":           {in: "api.example.com:443", key: ""},
		"no port":                 {in: "web.shop", invalid: true},
		"port 0":                  {in: "web.shop:0", invalid: true},
		"port out of range":       {in: "10.0.0.1:70000", invalid: true},
		"name that is not a name": {in: "we_b.shop:80", key: ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d, ok, err := parseDestination(tc.in, "cluster.local")
			if (err != nil) != tc.invalid {
				t.Fatalf("parseDestination(%q) error = %v, want error %v", tc.in, err, tc.invalid)
			}
			if err != nil {
				return
			}
			key := ""
			if ok {
				key = d.key()
			}
			if key != tc.key {
				t.Errorf("parseDestination(%q) = %q, want %q", tc.in, key, tc.key)
			}
		})
	}
}

// testIndex is an Index holding a meshed namespace "shop" with Service web
// (port 80, http) and the given objects.
func testIndex(t *testing.T, objs ...client.Object) *Index {
	t.Helper()
	ix := NewIndex(Config{Mesh: meshv1.DefaultMeshName, TrustDomain: "cluster.local"})
	ix.Upsert(namespace("shop", true))
	ix.Upsert(namespace("client", true))
	ix.Upsert(service("shop", "web", servicePortSpec{name: "http", port: 80, target: 8080}))
	for _, o := range objs {
		ix.Upsert(o)
	}
	ix.MarkSynced()
	return ix
}

// current is what a new stream for destination from namespace gets first.
func current(t *testing.T, ix *Index, destination, namespace string) *controlplanev1.OutboundResponse {
	t.Helper()
	s, stop, err := ix.watchOutbound(destination, namespace)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, ok := s.take()
	if !ok {
		t.Fatal("no state")
	}
	return resp
}

func at(sec int64) metav1.Time { return metav1.NewTime(time.Unix(sec, 0)) }

func routeNames(r *controlplanev1.OutboundResponse) []string {
	var out []string
	for _, rt := range r.Routes {
		out = append(out, rt.Name)
	}
	return out
}

// Rules of all routes are ordered as the Gateway API says.
func TestRoutePrecedence(t *testing.T) {
	parent := []gwv1.ParentReference{serviceParent("", "web", 0)}
	web := []gwv1.HTTPBackendRef{backendRef("", "web", 80, -1)}
	header := []gwv1.HTTPHeaderMatch{{Name: "x-canary", Value: "1"}}
	older := httpRoute("shop", "older", parent,
		gwv1.HTTPRouteRule{Matches: pathPrefix("/api"), BackendRefs: web},                                                      // older/0
		gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{{Path: pathPrefix("/")[0].Path, Headers: header}}, BackendRefs: web}, // older/1
		gwv1.HTTPRouteRule{BackendRefs: web},                                                                                   // older/2: no match, a prefix of /
		gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{ // older/3
			{Path: &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchExact), Value: ptr.To("/api/v1")}},
			{Path: pathPrefix("/api")[0].Path, Method: ptr.To(gwv1.HTTPMethodPost)},
		}, BackendRefs: web},
		gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{{Path: pathPrefix("/api")[0].Path, Headers: header}}, BackendRefs: web},                                                      // older/4
		gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchRegularExpression), Value: ptr.To("/v[0-9]+/.*")}}}, BackendRefs: web}, // older/5
	)
	older.CreationTimestamp = at(100)
	newer := httpRoute("shop", "newer", parent, gwv1.HTTPRouteRule{Matches: pathPrefix("/api"), BackendRefs: web})
	newer.CreationTimestamp = at(200)
	sameAge := httpRoute("shop", "aardvark", parent, gwv1.HTTPRouteRule{Matches: pathPrefix("/api"), BackendRefs: web})
	sameAge.CreationTimestamp = at(200)
	grpc := &gwv1.GRPCRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "grpc", CreationTimestamp: at(300)},
		Spec: gwv1.GRPCRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parent},
			Rules: []gwv1.GRPCRouteRule{
				{Matches: []gwv1.GRPCRouteMatch{{Method: &gwv1.GRPCMethodMatch{Service: ptr.To("shop.Cart")}}}},
				{Matches: []gwv1.GRPCRouteMatch{{Method: &gwv1.GRPCMethodMatch{Service: ptr.To("shop.Cart"), Method: ptr.To("Get")}}}},
			},
		},
	}
	ix := testIndex(t, older, newer, sameAge, grpc)
	got := routeNames(current(t, ix, "web.shop:80", "shop"))
	want := []string{
		"shop/grpc/1", "shop/grpc/0", // gRPC first, the most specific method first
		"shop/older/3",    // exact path
		"shop/older/5",    // regular expression
		"shop/older/3",    // prefix /api with a method
		"shop/older/4",    // prefix /api with a header
		"shop/older/0",    // prefix /api, the oldest route
		"shop/aardvark/0", // then by name
		"shop/newer/0",
		"shop/older/1", // prefix / with a header
		"shop/older/2",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("route order (-want +got):\n%s", diff)
	}
}

// Filters compile to the route; one Trellis cannot apply makes the rule's
// requests fail rather than be skipped.
func TestRouteFilters(t *testing.T) {
	parent := []gwv1.ParentReference{serviceParent("", "web", 80)}
	route := httpRoute("shop", "filters", parent,
		gwv1.HTTPRouteRule{
			Matches: pathPrefix("/old"),
			Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gwv1.HTTPRequestRedirectFilter{
				Scheme: ptr.To("https"), Hostname: ptr.To(gwv1.PreciseHostname("new.example")), StatusCode: ptr.To(301),
				Path: &gwv1.HTTPPathModifier{Type: gwv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr.To("/new")},
			}}},
		},
		gwv1.HTTPRouteRule{
			Matches: pathPrefix("/v2"),
			Filters: []gwv1.HTTPRouteFilter{
				{Type: gwv1.HTTPRouteFilterURLRewrite, URLRewrite: &gwv1.HTTPURLRewriteFilter{Path: &gwv1.HTTPPathModifier{Type: gwv1.FullPathHTTPPathModifier, ReplaceFullPath: ptr.To("/")}}},
				{Type: gwv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: &gwv1.HTTPHeaderFilter{Add: []gwv1.HTTPHeader{{Name: "x-v", Value: "2"}}, Remove: []string{"server"}}},
			},
			BackendRefs: []gwv1.HTTPBackendRef{{
				BackendRef: backendRef("", "web", 80, 0).BackendRef,
				Filters:    []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gwv1.HTTPHeaderFilter{Remove: []string{"cookie"}}}}},
			},
		},
		gwv1.HTTPRouteRule{
			Matches:     pathPrefix("/mirrored"),
			Filters:     []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterExtensionRef, ExtensionRef: &gwv1.LocalObjectReference{Group: "example.com", Kind: "Auth", Name: "x"}}},
			BackendRefs: []gwv1.HTTPBackendRef{backendRef("", "web", 80, -1)},
		},
	)
	got := current(t, testIndex(t, route), "web.shop:80", "shop").Routes
	want := []*controlplanev1.Route{
		{
			Name:     "shop/filters/2",
			Matches:  []*controlplanev1.Match{{Path: &controlplanev1.PathMatch{Kind: controlplanev1.PathMatch_KIND_PREFIX, Value: "/mirrored"}}},
			Backends: nil, // an ExtensionRef Trellis does not know: 500
		},
		{
			Name:     "shop/filters/0",
			Matches:  []*controlplanev1.Match{{Path: &controlplanev1.PathMatch{Kind: controlplanev1.PathMatch_KIND_PREFIX, Value: "/old"}}},
			Redirect: &controlplanev1.Redirect{Scheme: "https", Hostname: "new.example", PrefixPath: "/new", StatusCode: 301},
		},
		{
			Name:    "shop/filters/1",
			Matches: []*controlplanev1.Match{{Path: &controlplanev1.PathMatch{Kind: controlplanev1.PathMatch_KIND_PREFIX, Value: "/v2"}}},
			Backends: []*controlplanev1.WeightedBackend{{
				Backend: 0, Weight: 0,
				RequestHeaders: []*controlplanev1.HeaderModifier{{Action: controlplanev1.HeaderModifier_ACTION_REMOVE, Name: "cookie"}},
			}},
			ResponseHeaders: []*controlplanev1.HeaderModifier{
				{Action: controlplanev1.HeaderModifier_ACTION_ADD, Name: "x-v", Value: "2"},
				{Action: controlplanev1.HeaderModifier_ACTION_REMOVE, Name: "server"},
			},
			Rewrite: &controlplanev1.Rewrite{FullPath: "/"},
		},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
}

// Routes of namespaces outside the Mesh, or of a third namespace, do not
// apply; with routes, an unnamed port carries HTTP.
func TestRouteScope(t *testing.T) {
	ix := testIndex(t,
		httpRoute("client", "mine", []gwv1.ParentReference{serviceParent("shop", "web", 80)}, gwv1.HTTPRouteRule{}),
	)
	ix.Upsert(namespace("unmeshed", false))
	ix.Upsert(httpRoute("unmeshed", "ignored", []gwv1.ParentReference{serviceParent("shop", "web", 80)}, gwv1.HTTPRouteRule{}))
	ix.Upsert(service("shop", "plain", servicePortSpec{port: 9000, target: 9000}))
	ix.Upsert(httpRoute("shop", "plain", []gwv1.ParentReference{serviceParent("", "plain", 0)}, gwv1.HTTPRouteRule{}))
	ix.Upsert(service("shop", "bare", servicePortSpec{port: 7000, target: 7000}))

	cases := map[string]struct {
		dest, caller string
		routes       []string
		protocol     controlplanev1.Protocol
	}{
		"consumer route for its namespace":     {"web.shop:80", "client", []string{"client/mine/0"}, controlplanev1.Protocol_PROTOCOL_HTTP1},
		"none for the producer":                {"web.shop:80", "shop", nil, controlplanev1.Protocol_PROTOCOL_HTTP1},
		"none from outside the Mesh":           {"web.shop:80", "unmeshed", nil, controlplanev1.Protocol_PROTOCOL_HTTP1},
		"producer route for another namespace": {"plain.shop:9000", "client", []string{"shop/plain/0"}, controlplanev1.Protocol_PROTOCOL_HTTP1},
		"unnamed port with a route":            {"plain.shop:9000", "shop", []string{"shop/plain/0"}, controlplanev1.Protocol_PROTOCOL_HTTP1},
		"unnamed port without a route":         {"bare.shop:7000", "shop", nil, controlplanev1.Protocol_PROTOCOL_TCP},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := current(t, ix, tc.dest, tc.caller)
			if diff := cmp.Diff(tc.routes, routeNames(got)); diff != "" || got.Protocol != tc.protocol {
				t.Errorf("routes (-want +got):\n%s\nprotocol %s, want %s", diff, got.Protocol, tc.protocol)
			}
		})
	}
}

func TestAuthorization(t *testing.T) {
	policy := func(name string, action meshv1.AuthorizationAction, sel *metav1.LabelSelector, rules ...meshv1.AuthorizationRule) *meshv1.AuthorizationPolicy {
		return &meshv1.AuthorizationPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
			Spec:       meshv1.AuthorizationPolicySpec{Selector: sel, Action: action, Rules: rules},
		}
	}
	web := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	other := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}
	broken := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}}
	cases := map[string]struct {
		policies []*meshv1.AuthorizationPolicy
		want     *controlplanev1.Authorization
	}{
		"no policy: everyone": {want: nil},
		"a policy for other pods": {
			policies: []*meshv1.AuthorizationPolicy{policy("db", "", other, meshv1.AuthorizationRule{})},
			want:     nil,
		},
		"deny by default (spec: {})": {
			policies: []*meshv1.AuthorizationPolicy{policy("deny-all", "", nil)},
			want:     &controlplanev1.Authorization{DefaultDeny: true},
		},
		"from and to entries multiply": {
			policies: []*meshv1.AuthorizationPolicy{policy("web", meshv1.AuthorizationActionAllow, web, meshv1.AuthorizationRule{
				From: []meshv1.AuthorizationSource{{Unauthenticated: true}, {Namespaces: []meshv1.NamespaceName{"ops"}}},
				To:   []meshv1.AuthorizationOperation{{Paths: []meshv1.HTTPPathMatch{"/healthz"}}, {Ports: []meshv1.Port{9090}}},
			})},
			want: &controlplanev1.Authorization{DefaultDeny: true, Allow: []*controlplanev1.AuthorizationRule{
				{Name: "shop/web/0", Unauthenticated: true, Paths: []string{"/healthz"}},
				{Name: "shop/web/0", Unauthenticated: true, Ports: []uint32{9090}},
				{Name: "shop/web/0", Namespaces: []string{"ops"}, Paths: []string{"/healthz"}},
				{Name: "shop/web/0", Namespaces: []string{"ops"}, Ports: []uint32{9090}},
			}},
		},
		"deny only: allowed by default": {
			policies: []*meshv1.AuthorizationPolicy{policy("no-admin", meshv1.AuthorizationActionDeny, nil, meshv1.AuthorizationRule{
				To: []meshv1.AuthorizationOperation{{Paths: []meshv1.HTTPPathMatch{"/admin/*"}}},
			})},
			want: &controlplanev1.Authorization{Deny: []*controlplanev1.AuthorizationRule{{Name: "shop/no-admin/0", Paths: []string{"/admin/*"}}}},
		},
		"a broken Deny selector denies all": {
			policies: []*meshv1.AuthorizationPolicy{policy("broken", meshv1.AuthorizationActionDeny, broken, meshv1.AuthorizationRule{})},
			want:     &controlplanev1.Authorization{Deny: []*controlplanev1.AuthorizationRule{{Name: "shop/broken/invalid"}}},
		},
		"a broken Allow selector allows nothing": {
			policies: []*meshv1.AuthorizationPolicy{policy("broken", meshv1.AuthorizationActionAllow, broken, meshv1.AuthorizationRule{})},
			want:     &controlplanev1.Authorization{DefaultDeny: true},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ix := NewIndex(Config{Mesh: meshv1.DefaultMeshName, TrustDomain: "cluster.local"})
			for _, p := range tc.policies {
				ix.Upsert(p)
			}
			p := pod("shop", podSpec{name: "web-0", labels: map[string]string{"app": "web"}})
			if diff := cmp.Diff(tc.want, ix.authorization(p), protocmp.Transform()); diff != "" {
				t.Errorf("authorization (-want +got):\n%s", diff)
			}
		})
	}
}

// A mailbox keeps only the newest state.
func TestSubKeepsLatest(t *testing.T) {
	s := newSub[int]()
	s.offer(1, 10)
	s.offer(3, 30)
	s.offer(2, 20) // older than what it holds: dropped
	if v, ok := s.take(); !ok || v != 30 {
		t.Fatalf("take() = %d, %v; want 30, true", v, ok)
	}
	if _, ok := s.take(); ok {
		t.Fatal("take() found a state twice")
	}
	s.offer(3, 31) // a version it had: dropped
	if _, ok := s.take(); ok {
		t.Fatal("take() found a state of a version already taken")
	}
}

// Trellis's entries are replaced in place; others' stay; a condition that
// keeps its status keeps its lastTransitionTime; an entry for a parent that
// is gone goes.
func TestMergeParents(t *testing.T) {
	cond := func(typ, status string, ltt int64) metav1.Condition {
		return metav1.Condition{Type: typ, Status: metav1.ConditionStatus(status), Reason: typ, LastTransitionTime: at(ltt)}
	}
	web, api := serviceParent("", "web", 0), serviceParent("", "api", 0)
	other := gwv1.RouteParentStatus{ParentRef: gwv1.ParentReference{Name: "edge"}, ControllerName: "example.com/gw", Conditions: []metav1.Condition{cond("Accepted", "True", 1)}}
	current := []gwv1.RouteParentStatus{
		{ParentRef: api, ControllerName: ControllerName, Conditions: []metav1.Condition{cond("Accepted", "True", 5)}},
		other,
		{ParentRef: web, ControllerName: ControllerName, Conditions: []metav1.Condition{cond("Accepted", "True", 5), cond("ResolvedRefs", "True", 5)}},
	}
	desired := []gwv1.RouteParentStatus{{ParentRef: web, ControllerName: ControllerName, Conditions: []metav1.Condition{
		{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted"},
		{Type: "ResolvedRefs", Status: metav1.ConditionFalse, Reason: "BackendNotFound"},
	}}}
	got := mergeParents(current, desired)
	if len(got) != 2 || got[0].ControllerName != "example.com/gw" || got[1].ParentRef.Name != "web" {
		t.Fatalf("merged parents %+v: want the other controller's, then Trellis's for web", got)
	}
	c := got[1].Conditions
	if c[0].LastTransitionTime != at(5) {
		t.Errorf("Accepted kept its status but its lastTransitionTime went from %v to %v", at(5), c[0].LastTransitionTime)
	}
	if c[1].Status != metav1.ConditionFalse || c[1].LastTransitionTime == at(5) {
		t.Errorf("ResolvedRefs = %+v, want False with a new lastTransitionTime", c[1])
	}
}

// A new mTLS mode reaches every pod's stream.
func TestSetMTLSMode(t *testing.T) {
	ix := testIndex(t, pod("shop", podSpec{name: "web-0", serviceAccount: "web", ip: "10.0.0.1", injected: true}))
	s, stop := ix.watchInbound(objKey{"shop", "web-0"})
	defer stop()
	if st, _ := s.take(); st.resp.GetMtlsMode() != controlplanev1.MTLSMode_MTLS_MODE_PERMISSIVE {
		t.Fatalf("mode %s, want the default, Permissive", st.resp.GetMtlsMode())
	}
	ix.SetMTLSMode(meshv1.MTLSModeStrict)
	ix.flush()
	if st, ok := s.take(); !ok || st.resp.GetMtlsMode() != controlplanev1.MTLSMode_MTLS_MODE_STRICT {
		t.Fatalf("after SetMTLSMode(Strict): %v, %v; want Strict", st.resp, ok)
	}
}
