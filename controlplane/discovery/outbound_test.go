package discovery

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

func spiffe(ns, sa string) string { return "spiffe://" + testTrustDomain + "/ns/" + ns + "/sa/" + sa }

func endpointAddresses(b *controlplanev1.Backend) []string {
	var out []string
	for _, e := range b.GetEndpoints() {
		out = append(out, e.Address)
	}
	return out
}

// A Deployment scaled from 1 to 3 replicas: once its new pods are ready in
// the EndpointSlice, a subscribed proxy has them, with identities for the
// injected ones only, and not the one that is not ready.
func TestOutboundFollowsScaledDeployment(t *testing.T) {
	h := start(t, harnessOptions{})
	ns := meshedNamespace(t, h.c, "scale")
	ctx := context.Background()

	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
			},
		},
	}
	svc := service(ns, "web", servicePortSpec{name: "http", port: 80, target: 8080})
	create(t, h.c, deploy, svc)
	createPod(t, h.c, pod(ns, podSpec{name: "web-a", serviceAccount: "web", ip: "10.10.0.1", node: "node-1", injected: true, labels: map[string]string{"app": "web"}}))
	ports := []slicePortSpec{{name: "http", port: 8080}}
	slice := endpointSlice(ns, "web-abc", "web", ports, endpointSpec{ip: "10.10.0.1", pod: "web-a", node: "node-1", zone: "zone-a"})
	create(t, h.c, slice)

	byName := h.outbound(t, h.client, "web."+ns+".svc.cluster.local:80", ns)
	first := await(t, byName, "one endpoint", func(r *controlplanev1.OutboundResponse) bool {
		return len(r.GetBackends()) > 0 && len(r.Backends[0].Endpoints) == 1
	})
	want := &controlplanev1.OutboundResponse{
		Known:    true,
		Service:  &controlplanev1.ServiceRef{Name: "web", Namespace: ns, Port: 80},
		Protocol: controlplanev1.Protocol_PROTOCOL_HTTP1,
		Backends: []*controlplanev1.Backend{{
			Service: &controlplanev1.ServiceRef{Name: "web", Namespace: ns, Port: 80},
			Endpoints: []*controlplanev1.Endpoint{
				{Address: "10.10.0.1:8080", Identity: spiffe(ns, "web"), Pod: "web-a", Node: "node-1", Zone: "zone-a"},
			},
		}},
	}
	if diff := cmp.Diff(want, first, protocmp.Transform()); diff != "" {
		t.Fatalf("first response (-want +got):\n%s", diff)
	}

	// The same Service dialed at its ClusterIP.
	if err := h.c.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	byIP := h.outbound(t, h.client, svc.Spec.ClusterIP+":80", ns)
	got := await(t, byIP, "the Service at its ClusterIP", func(r *controlplanev1.OutboundResponse) bool { return r.Known })
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("response for the ClusterIP (-want +got):\n%s", diff)
	}

	// Scale to 3, as kubectl scale would; then what the ReplicaSet
	// controller, the kubelet and the EndpointSlice controller would do.
	deploy.Spec.Replicas = ptr.To[int32](3)
	if err := h.c.Update(ctx, deploy); err != nil {
		t.Fatal(err)
	}
	createPod(t, h.c, pod(ns, podSpec{name: "web-b", serviceAccount: "web", ip: "10.10.0.2", node: "node-2", injected: true, labels: map[string]string{"app": "web"}}))
	createPod(t, h.c, pod(ns, podSpec{name: "web-c", serviceAccount: "web", ip: "10.10.0.3", node: "node-2", labels: map[string]string{"app": "web"}}))
	createPod(t, h.c, pod(ns, podSpec{name: "web-d", serviceAccount: "web", ip: "10.10.0.4", node: "node-1", injected: true, labels: map[string]string{"app": "web"}}))
	slice.Endpoints = endpointSlice(ns, "", "web", nil,
		endpointSpec{ip: "10.10.0.1", pod: "web-a", node: "node-1", zone: "zone-a"},
		endpointSpec{ip: "10.10.0.2", pod: "web-b", node: "node-2", zone: "zone-b"},
		endpointSpec{ip: "10.10.0.3", pod: "web-c", node: "node-2", zone: "zone-b"},
		endpointSpec{ip: "10.10.0.4", pod: "web-d", node: "node-1", zone: "zone-a", notReady: true},
	).Endpoints
	if err := h.c.Update(ctx, slice); err != nil {
		t.Fatal(err)
	}
	scaled := await(t, byName, "three endpoints", func(r *controlplanev1.OutboundResponse) bool { return len(r.Backends[0].Endpoints) == 3 })
	wantEndpoints := []*controlplanev1.Endpoint{
		{Address: "10.10.0.1:8080", Identity: spiffe(ns, "web"), Pod: "web-a", Node: "node-1", Zone: "zone-a"},
		{Address: "10.10.0.2:8080", Identity: spiffe(ns, "web"), Pod: "web-b", Node: "node-2", Zone: "zone-b"},
		// Not injected: no identity, so no mTLS to it.
		{Address: "10.10.0.3:8080", Pod: "web-c", Node: "node-2", Zone: "zone-b"},
	}
	if diff := cmp.Diff(wantEndpoints, scaled.Backends[0].Endpoints, protocmp.Transform()); diff != "" {
		t.Fatalf("endpoints after scaling (-want +got):\n%s", diff)
	}
	await(t, byIP, "three endpoints at the ClusterIP", func(r *controlplanev1.OutboundResponse) bool { return len(r.Backends[0].Endpoints) == 3 })

	// A pod dialed at its own IP is that pod, not its Service's endpoints.
	byPod := h.outbound(t, h.client, "10.10.0.2:8080", ns)
	got = await(t, byPod, "the pod", func(r *controlplanev1.OutboundResponse) bool { return r.Known })
	if got.Service.GetName() != "web" || len(got.Backends) != 1 || !slices.Equal(endpointAddresses(got.Backends[0]), []string{"10.10.0.2:8080"}) || len(got.Routes) != 0 {
		t.Fatalf("pod IP destination: got %v, want Service web with the one endpoint 10.10.0.2:8080 and no routes", got)
	}

	// Nothing else changed: nothing more is sent.
	select {
	case r := <-byName:
		t.Fatalf("got a response though nothing changed: %v", r)
	case <-time.After(300 * time.Millisecond):
	}

	// The metrics count the three streams, what they were sent, and what
	// the Index holds.
	reg := prometheus.NewPedanticRegistry()
	if err := h.ix.Register(reg); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(h.ix.metrics.outStreams); n < 3 {
		t.Errorf("trellis_discovery_streams{kind=outbound} = %v, want at least the test's 3", n)
	}
	if n := testutil.ToFloat64(h.ix.metrics.outSent); n < 5 {
		t.Errorf("trellis_discovery_responses_sent_total{kind=outbound} = %v, want at least the 5 responses the test awaited", n)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP trellis_discovery_synced 1 once discovery holds the whole cluster state and serves streams, else 0.
# TYPE trellis_discovery_synced gauge
trellis_discovery_synced 1
`), "trellis_discovery_synced"); err != nil {
		t.Error(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	objects := map[string]float64{}
	for _, f := range families {
		if f.GetName() == "trellis_discovery_objects" {
			for _, m := range f.GetMetric() {
				objects[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
	}
	if objects["Service"] < 1 || objects["EndpointSlice"] < 1 || objects["Pod"] < 3 {
		t.Errorf("trellis_discovery_objects = %v, want at least this test's Service, slice and 3 pods", objects)
	}
}

// An HTTPRoute splitting a Service's traffic 80/20 compiles to that table,
// is Accepted, and has its refs resolved; another controller's entry in its
// status stays.
func TestHTTPRouteWeights(t *testing.T) {
	h := start(t, harnessOptions{status: true})
	ns := meshedNamespace(t, h.c, "split")
	ctx := context.Background()
	for _, name := range []string{"web", "web-v1", "web-v2"} {
		create(t, h.c, service(ns, name, servicePortSpec{name: "http", port: 80, target: 8080}))
	}
	create(t, h.c,
		endpointSlice(ns, "web-v1-x", "web-v1", []slicePortSpec{{name: "http", port: 8080}}, endpointSpec{ip: "10.11.0.1", pod: "v1"}),
		endpointSlice(ns, "web-v2-x", "web-v2", []slicePortSpec{{name: "http", port: 8080}}, endpointSpec{ip: "10.11.0.2", pod: "v2"}),
	)
	route := httpRoute(ns, "split", []gwv1.ParentReference{serviceParent("", "web", 80)},
		gwv1.HTTPRouteRule{
			Matches:     pathPrefix("/"),
			BackendRefs: []gwv1.HTTPBackendRef{backendRef("", "web-v1", 80, 80), backendRef("", "web-v2", 80, 20)},
			Filters: []gwv1.HTTPRouteFilter{{
				Type:                  gwv1.HTTPRouteFilterRequestHeaderModifier,
				RequestHeaderModifier: &gwv1.HTTPHeaderFilter{Set: []gwv1.HTTPHeader{{Name: "x-split", Value: "yes"}}},
			}},
			Timeouts: &gwv1.HTTPRouteTimeouts{Request: ptr.To(gwv1.Duration("5s"))},
			Retry:    &gwv1.HTTPRouteRetry{Attempts: ptr.To(2), Codes: []gwv1.HTTPRouteRetryStatusCode{503}, Backoff: ptr.To(gwv1.Duration("100ms"))},
		},
		gwv1.HTTPRouteRule{
			Matches:     []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchExact), Value: ptr.To("/healthz")}}},
			BackendRefs: []gwv1.HTTPBackendRef{backendRef("", "web", 80, -1)},
		},
	)
	policy := &meshv1.TrafficPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: meshv1.TrafficPolicySpec{
			TargetRefs:       []meshv1.LocalPolicyTargetReference{{Kind: "Service", Name: "web"}},
			LoadBalancer:     meshv1.LoadBalancerRoundRobin,
			ConnectionLimits: &meshv1.ConnectionLimits{MaxConnections: ptr.To[int32](100)},
		},
	}
	// A backend's own policy governs its endpoints.
	v2Policy := &meshv1.TrafficPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-v2"},
		Spec: meshv1.TrafficPolicySpec{
			TargetRefs:       []meshv1.LocalPolicyTargetReference{{Kind: "Service", Name: "web-v2"}},
			ConnectionLimits: &meshv1.ConnectionLimits{MaxConnections: ptr.To[int32](50)},
			OutlierDetection: &meshv1.OutlierDetection{ConsecutiveErrors: ptr.To[int32](3)},
			RetryBudget:      &meshv1.RetryBudget{MinRetriesPerSecond: ptr.To[int32](1)},
		},
	}
	create(t, h.c, route, policy, v2Policy)

	ch := h.outbound(t, h.client, "web."+ns+":80", ns)
	got := await(t, ch, "the route table", func(r *controlplanev1.OutboundResponse) bool {
		return len(r.Routes) == 2 && r.Policy != nil && len(r.Backends) == 3 && r.Backends[2].Policy != nil
	})
	webPolicy := &controlplanev1.TrafficPolicy{
		LoadBalancer:            controlplanev1.LoadBalancer_LOAD_BALANCER_ROUND_ROBIN,
		ConnectTimeout:          durationProto(10 * time.Second),
		MaxConnections:          100,
		RetryBudgetPercent:      20,
		RetryBudgetMinPerSecond: 10,
	}
	web := &controlplanev1.ServiceRef{Name: "web", Namespace: ns, Port: 80}
	v1 := &controlplanev1.ServiceRef{Name: "web-v1", Namespace: ns, Port: 80}
	v2 := &controlplanev1.ServiceRef{Name: "web-v2", Namespace: ns, Port: 80}
	want := &controlplanev1.OutboundResponse{
		Known:    true,
		Service:  web,
		Protocol: controlplanev1.Protocol_PROTOCOL_HTTP1,
		Backends: []*controlplanev1.Backend{
			{Service: web, Policy: webPolicy},
			{Service: v1, Endpoints: []*controlplanev1.Endpoint{{Address: "10.11.0.1:8080", Pod: "v1"}}},
			{Service: v2, Endpoints: []*controlplanev1.Endpoint{{Address: "10.11.0.2:8080", Pod: "v2"}}, Policy: &controlplanev1.TrafficPolicy{
				LoadBalancer:            controlplanev1.LoadBalancer_LOAD_BALANCER_LEAST_REQUEST,
				ConnectTimeout:          durationProto(10 * time.Second),
				MaxConnections:          50,
				ConsecutiveErrors:       3,
				BaseEjectionTime:        durationProto(30 * time.Second),
				OutlierInterval:         durationProto(10 * time.Second),
				MaxEjectionPercent:      50,
				RetryBudgetPercent:      20,
				RetryBudgetMinPerSecond: 1,
			}},
		},
		Routes: []*controlplanev1.Route{
			{
				// Exact path first.
				Name:     ns + "/split/1",
				Matches:  []*controlplanev1.Match{{Path: &controlplanev1.PathMatch{Kind: controlplanev1.PathMatch_KIND_EXACT, Value: "/healthz"}}},
				Backends: []*controlplanev1.WeightedBackend{{Backend: 0, Weight: 1}},
			},
			{
				Name:           ns + "/split/0",
				Matches:        []*controlplanev1.Match{{Path: &controlplanev1.PathMatch{Kind: controlplanev1.PathMatch_KIND_PREFIX, Value: "/"}}},
				Backends:       []*controlplanev1.WeightedBackend{{Backend: 1, Weight: 80}, {Backend: 2, Weight: 20}},
				RequestHeaders: []*controlplanev1.HeaderModifier{{Action: controlplanev1.HeaderModifier_ACTION_SET, Name: "x-split", Value: "yes"}},
				Timeout:        durationProto(5 * time.Second),
				Retry:          &controlplanev1.Retry{Attempts: 2, Codes: []uint32{503}, Backoff: durationProto(100 * time.Millisecond)},
			},
		},
		Policy: webPolicy,
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("compiled response (-want +got):\n%s", diff)
	}

	key := client.ObjectKeyFromObject(route)
	waitParentStatus(t, h.c, key, "Accepted and resolved", func(s gwv1.RouteParentStatus) error {
		return wantConditions(s, route.Generation, "True/Accepted", "True/ResolvedRefs")
	})

	// Another controller's entry (a Gateway parent) is left alone when
	// Trellis's changes.
	other := gwv1.RouteParentStatus{
		ParentRef:      gwv1.ParentReference{Name: "edge"},
		ControllerName: "example.com/gateway",
		Conditions: []metav1.Condition{{
			Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: metav1.Now(),
		}},
	}
	eventually(t, "adding another controller's status", func() error {
		if err := h.c.Get(ctx, key, route); err != nil {
			return err
		}
		route.Status.Parents = append([]gwv1.RouteParentStatus{other}, route.Status.Parents...)
		return h.c.Status().Update(ctx, route)
	})
	if err := h.c.Delete(ctx, service(ns, "web-v2")); err != nil {
		t.Fatal(err)
	}
	waitParentStatus(t, h.c, key, "web-v2 not found", func(s gwv1.RouteParentStatus) error {
		return wantConditions(s, route.Generation, "True/Accepted", "False/BackendNotFound")
	})
	if err := h.c.Get(ctx, key, route); err != nil {
		t.Fatal(err)
	}
	if len(route.Status.Parents) != 2 || route.Status.Parents[0].ControllerName != "example.com/gateway" {
		t.Fatalf("status.parents = %+v, want the other controller's entry first, then Trellis's", route.Status.Parents)
	}
	// And the missing backend keeps its share, without endpoints (its
	// requests fail, as the Gateway API asks).
	got = await(t, ch, "web-v2 gone", func(r *controlplanev1.OutboundResponse) bool {
		return len(r.Backends) == 3 && len(r.Backends[2].Endpoints) == 0
	})
	if w := got.Routes[1].Backends; len(w) != 2 || w[1].Weight != 20 {
		t.Fatalf("weights after web-v2 went: %v, want web-v2 to keep its 20", w)
	}
}

// Route status for each way a reference can fail.
func TestRouteStatusReasons(t *testing.T) {
	h := start(t, harnessOptions{status: true})
	ns := meshedNamespace(t, h.c, "refs")
	elsewhere := meshedNamespace(t, h.c, "refs-other")
	create(t, h.c,
		service(ns, "web", servicePortSpec{name: "http", port: 80, target: 8080}),
		service(elsewhere, "db", servicePortSpec{name: "tcp", port: 5432, target: 5432}),
	)
	withRef := func(ref gwv1.HTTPBackendRef) gwv1.HTTPRouteRule {
		return gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{ref}}
	}
	configMap := backendRef("", "settings", 80, -1)
	configMap.Group, configMap.Kind = ptr.To(gwv1.Group("")), ptr.To(gwv1.Kind("ConfigMap"))
	cases := map[string]struct {
		route    *gwv1.HTTPRoute
		accepted string // status/reason
		resolved string
	}{
		"missing backend": {
			route:    httpRoute(ns, "missing", []gwv1.ParentReference{serviceParent("", "web", 0)}, withRef(backendRef("", "nowhere", 80, -1))),
			accepted: "True/Accepted", resolved: "False/BackendNotFound",
		},
		"missing backend port": {
			route:    httpRoute(ns, "badport", []gwv1.ParentReference{serviceParent("", "web", 0)}, withRef(backendRef("", "web", 81, -1))),
			accepted: "True/Accepted", resolved: "False/BackendNotFound",
		},
		"not a Service": {
			route:    httpRoute(ns, "kind", []gwv1.ParentReference{serviceParent("", "web", 0)}, withRef(configMap)),
			accepted: "True/Accepted", resolved: "False/InvalidKind",
		},
		"other namespace without a ReferenceGrant": {
			route:    httpRoute(ns, "cross", []gwv1.ParentReference{serviceParent("", "web", 0)}, withRef(backendRef(elsewhere, "db", 5432, -1))),
			accepted: "True/Accepted", resolved: "False/RefNotPermitted",
		},
		"consumer route to its parent Service, without a ReferenceGrant": {
			route:    httpRoute(ns, "consumer", []gwv1.ParentReference{serviceParent(elsewhere, "db", 5432)}, withRef(backendRef(elsewhere, "db", 5432, -1))),
			accepted: "True/Accepted", resolved: "True/ResolvedRefs",
		},
		"missing parent": {
			route:    httpRoute(ns, "orphan", []gwv1.ParentReference{serviceParent("", "gone", 80)}, withRef(backendRef("", "web", 80, -1))),
			accepted: "False/NoMatchingParent", resolved: "True/ResolvedRefs",
		},
		"parent without the port": {
			route:    httpRoute(ns, "parentport", []gwv1.ParentReference{serviceParent("", "web", 8443)}, withRef(backendRef("", "web", 80, -1))),
			accepted: "False/NoMatchingParent", resolved: "True/ResolvedRefs",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			create(t, h.c, tc.route)
			waitParentStatus(t, h.c, client.ObjectKeyFromObject(tc.route), tc.accepted+", "+tc.resolved, func(s gwv1.RouteParentStatus) error {
				return wantConditions(s, tc.route.Generation, tc.accepted, tc.resolved)
			})
		})
	}

	// A ReferenceGrant lets the cross-namespace route resolve.
	create(t, h.c, &gwv1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: elsewhere, Name: "routes-from-" + ns},
		Spec: gwv1.ReferenceGrantSpec{
			From: []gwv1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "HTTPRoute", Namespace: gwv1.Namespace(ns)}},
			To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Service"}},
		},
	})
	waitParentStatus(t, h.c, client.ObjectKey{Namespace: ns, Name: "cross"}, "resolved once granted", func(s gwv1.RouteParentStatus) error {
		return wantConditions(s, 1, "True/Accepted", "True/ResolvedRefs")
	})

	// The missing backend is in the route table as a backend without
	// endpoints, so its share of requests fails rather than going elsewhere.
	got := await(t, h.outbound(t, h.client, "web."+ns+":80", ns), "the routes", func(r *controlplanev1.OutboundResponse) bool { return len(r.Routes) > 0 })
	i := slices.IndexFunc(got.Backends, func(b *controlplanev1.Backend) bool { return b.GetService().GetName() == "nowhere" })
	if i < 0 || len(got.Backends[i].Endpoints) != 0 {
		t.Fatalf("backends %v: want Service nowhere, without endpoints", got.Backends)
	}
}

// waitParentStatus waits for Trellis's status.parents entry of a route to
// satisfy check.
func waitParentStatus(t *testing.T, c client.Client, key client.ObjectKey, what string, check func(gwv1.RouteParentStatus) error) {
	t.Helper()
	eventually(t, "route "+key.String()+": "+what, func() error {
		var r gwv1.HTTPRoute
		if err := c.Get(context.Background(), key, &r); err != nil {
			return err
		}
		var ours []gwv1.RouteParentStatus
		for _, p := range r.Status.Parents {
			if p.ControllerName == ControllerName {
				ours = append(ours, p)
			}
		}
		if len(ours) != 1 {
			return fmt.Errorf("%d status entries of %s, want 1: %+v", len(ours), ControllerName, r.Status.Parents)
		}
		return check(ours[0])
	})
}

// wantConditions checks Accepted and ResolvedRefs, each as "Status/Reason".
func wantConditions(s gwv1.RouteParentStatus, generation int64, accepted, resolved string) error {
	for typ, want := range map[string]string{"Accepted": accepted, "ResolvedRefs": resolved} {
		i := slices.IndexFunc(s.Conditions, func(c metav1.Condition) bool { return c.Type == typ })
		if i < 0 {
			return fmt.Errorf("no %s condition in %+v", typ, s.Conditions)
		}
		c := s.Conditions[i]
		if got := string(c.Status) + "/" + c.Reason; got != want || c.ObservedGeneration != generation {
			return fmt.Errorf("%s is %s (generation %d, %q), want %s (generation %d)", typ, got, c.ObservedGeneration, c.Message, want, generation)
		}
	}
	return nil
}

// A consumer route (in the caller's namespace) decides its namespace's
// requests; other namespaces get the producer's route.
func TestConsumerRouteBeatsProducerRoute(t *testing.T) {
	h := start(t, harnessOptions{})
	producer := meshedNamespace(t, h.c, "producer")
	consumer := meshedNamespace(t, h.c, "consumer")
	bystander := meshedNamespace(t, h.c, "bystander")
	for _, name := range []string{"api", "api-stable", "api-canary"} {
		create(t, h.c, service(producer, name, servicePortSpec{name: "http", port: 80, target: 8080}))
	}
	create(t, h.c,
		httpRoute(producer, "stable", []gwv1.ParentReference{serviceParent("", "api", 80)},
			gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backendRef("", "api-stable", 80, -1)}}),
		httpRoute(consumer, "canary", []gwv1.ParentReference{serviceParent(producer, "api", 80)},
			gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backendRef(producer, "api-canary", 80, -1)}}),
		&gwv1.ReferenceGrant{
			ObjectMeta: metav1.ObjectMeta{Namespace: producer, Name: "consumer-routes"},
			Spec: gwv1.ReferenceGrantSpec{
				From: []gwv1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "HTTPRoute", Namespace: gwv1.Namespace(consumer)}},
				To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Service"}},
			},
		},
	)
	routedTo := func(r *controlplanev1.OutboundResponse) string {
		if len(r.Routes) != 1 || len(r.Routes[0].Backends) != 1 {
			return ""
		}
		return r.Backends[r.Routes[0].Backends[0].Backend].GetService().GetName()
	}
	dest := "api." + producer + ":80"
	for caller, want := range map[string]string{consumer: "api-canary", bystander: "api-stable", producer: "api-stable"} {
		got := await(t, h.outbound(t, h.client, dest, caller), "a route to "+want, func(r *controlplanev1.OutboundResponse) bool { return routedTo(r) == want })
		if got.Routes[0].Name == "" {
			t.Errorf("caller in %s: route without a name", caller)
		}
	}
}

// Outbound answers a proxy for its own namespace only.
func TestOutboundChecksCaller(t *testing.T) {
	h := start(t, harnessOptions{})
	ctx := context.Background()
	cases := map[string]struct {
		ctx  context.Context
		code codes.Code
	}{
		"no identity":                    {ctx, codes.Unauthenticated},
		"another namespace's view":       {asIdentity(ctx, "other", "client"), codes.PermissionDenied},
		"its own namespace's view is OK": {asIdentity(ctx, "shop", "client"), codes.OK},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			stream, err := h.client.Outbound(tc.ctx, &controlplanev1.OutboundRequest{Destination: "web.shop:80", Namespace: "shop"})
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != tc.code {
				t.Fatalf("got %v, want %s", err, tc.code)
			}
		})
	}
}

// A destination that is nothing yet is unknown, then known once it is.
func TestUnknownDestinationBecomesKnown(t *testing.T) {
	h := start(t, harnessOptions{})
	ns := meshedNamespace(t, h.c, "late")

	byName := h.outbound(t, h.client, "late."+ns+".svc:8080", ns)
	byPodIP := h.outbound(t, h.client, "10.12.0.7:9090", ns)
	for _, ch := range []<-chan *controlplanev1.OutboundResponse{byName, byPodIP} {
		first := await(t, ch, "a first response", func(*controlplanev1.OutboundResponse) bool { return true })
		if !proto.Equal(first, &controlplanev1.OutboundResponse{}) {
			t.Fatalf("first response %v, want known=false and nothing else", first)
		}
	}

	create(t, h.c,
		service(ns, "late", servicePortSpec{name: "grpc", port: 8080, target: 9090}),
		endpointSlice(ns, "late-1", "late", []slicePortSpec{{name: "grpc", port: 9090}}, endpointSpec{ip: "10.12.0.7", pod: "late-0"}),
	)
	got := await(t, byName, "known", func(r *controlplanev1.OutboundResponse) bool { return r.Known && len(r.Backends[0].Endpoints) == 1 })
	if got.Protocol != controlplanev1.Protocol_PROTOCOL_GRPC || got.Service.GetName() != "late" {
		t.Fatalf("got %v, want Service late, protocol gRPC", got)
	}
	got = await(t, byPodIP, "known", func(r *controlplanev1.OutboundResponse) bool { return r.Known })
	if got.Service.GetName() != "late" || got.Service.GetPort() != 8080 || endpointAddresses(got.Backends[0])[0] != "10.12.0.7:9090" {
		t.Fatalf("got %v, want the endpoint 10.12.0.7:9090 of Service late port 8080", got)
	}
}

// A stream whose proxy does not read holds up no other: each change still
// reaches the reading stream promptly.
func TestSlowSubscriberDoesNotDelayOthers(t *testing.T) {
	h := start(t, harnessOptions{})
	ns := meshedNamespace(t, h.c, "slow")
	ctx := context.Background()
	create(t, h.c, service(ns, "big", servicePortSpec{name: "http", port: 80, target: 8080}))
	// 400 endpoints: a response is some 20 KB, so a few fill the stream's
	// flow-control window of a proxy that does not read.
	eps := make([]endpointSpec, 400)
	for i := range eps {
		eps[i] = endpointSpec{ip: fmt.Sprintf("10.13.%d.%d", i/200, i%200+1), pod: fmt.Sprintf("big-%d", i), node: "node-with-a-long-name-1", zone: "zone-a"}
	}
	slice := endpointSlice(ns, "big-1", "big", []slicePortSpec{{name: "http", port: 8080}}, eps...)
	create(t, h.c, slice)

	// The slow proxy has its own connection and never calls Recv.
	slowConn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = slowConn.Close() }()
	slowCtx, cancelSlow := context.WithCancel(ctx)
	defer cancelSlow()
	slow, err := controlplanev1.NewDiscoveryServiceClient(slowConn).Outbound(asIdentity(slowCtx, ns, "slow"), &controlplanev1.OutboundRequest{Destination: "big." + ns + ":80", Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	fast := h.outbound(t, h.client, "big."+ns+":80", ns)
	await(t, fast, "400 endpoints", func(r *controlplanev1.OutboundResponse) bool { return len(r.Backends[0].Endpoints) == 400 })

	// Take one endpoint out at a time; each change must reach the fast
	// stream, and quickly.
	var worst time.Duration
	for i := range 40 {
		slice.Endpoints[i].Conditions.Ready = ptr.To(false)
		if err := h.c.Update(ctx, slice); err != nil {
			t.Fatal(err)
		}
		sent := time.Now()
		await(t, fast, fmt.Sprintf("%d endpoints", 399-i), func(r *controlplanev1.OutboundResponse) bool { return len(r.Backends[0].Endpoints) == 399-i })
		worst = max(worst, time.Since(sent))
	}
	t.Logf("slowest change to reach the reading stream: %s", worst)
	if worst > 2*time.Second {
		t.Errorf("a change took %s to reach the reading stream while another stream did not read", worst)
	}

	// When the slow proxy reads at last, it gets what its connection had
	// buffered, then the latest state, not the 40 in between.
	n := 0
	for {
		resp, err := slow.Recv()
		if err != nil {
			t.Fatal(err)
		}
		n++
		if len(resp.Backends[0].Endpoints) == 360 {
			break
		}
	}
	t.Logf("the slow stream got %d responses for 41 states", n)
	if n >= 41 {
		t.Errorf("the slow stream got all %d states: it should have skipped to the latest", n)
	}
}

func durationProto(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
