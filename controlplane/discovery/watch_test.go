package discovery

import (
	"context"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/test/testenv"
)

// The Gateway API installed after the control plane started: discovery
// finds its kinds without a restart, and a route created then reaches a
// subscribed proxy. Its own API server, since the suite's has the Gateway
// API from the start.
func TestGatewayAPIInstalledLater(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own API server")
	}
	env, cfg, _, err := testenv.Start(testenv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	ix := NewIndex(Config{Mesh: meshv1.DefaultMeshName, TrustDomain: testTrustDomain, OptionalKindPoll: 200 * time.Millisecond})
	cache, err := NewCache(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.Watch(ctx, cache); err != nil {
		t.Fatalf("Watch without the Gateway API's CRDs: %v", err)
	}
	wg.Go(func() { _ = cache.Start(ctx) })
	wg.Go(func() { ix.Run(ctx) })
	select {
	case <-ix.Synced():
	case <-time.After(30 * time.Second):
		t.Fatal("the informers did not sync in 30s without the Gateway API")
	}

	ns := meshedNamespace(t, c, "late")
	create(t, c, service(ns, "web", servicePortSpec{name: "http", port: 80, target: 8080}),
		service(ns, "web-v2", servicePortSpec{name: "http", port: 80, target: 8080}))
	sub, stop, err := ix.watchOutbound("web."+ns+":80", ns)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ch := make(chan *controlplanev1.OutboundResponse, 16)
	wg.Go(func() {
		for {
			if r, ok := sub.take(); ok {
				ch <- r
				continue
			}
			select {
			case <-sub.wait():
			case <-ctx.Done():
				return
			}
		}
	})
	await(t, ch, "the Service, without routes", func(r *controlplanev1.OutboundResponse) bool { return r.Known && len(r.Routes) == 0 })

	if err := installGatewayCRDs(cfg, "httproutes"); err != nil {
		t.Fatal(err)
	}
	create(t, c, httpRoute(ns, "to-v2", []gwv1.ParentReference{serviceParent("", "web", 80)},
		gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backendRef("", "web-v2", 80, 1)}}))
	got := await(t, ch, "the route, created after its CRD", func(r *controlplanev1.OutboundResponse) bool { return len(r.Routes) == 1 })
	if b := got.Backends[got.Routes[0].Backends[0].Backend]; b.Service.GetName() != "web-v2" {
		t.Fatalf("the route sends to %v, want web-v2", b.Service)
	}
}
