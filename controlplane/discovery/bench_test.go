package discovery

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// BenchmarkEndpointPropagation measures how long an EndpointSlice change
// takes to reach every proxy that watches its Service, at the scale the
// control plane must handle: 5,000 Services with 10 endpoints each (50,000
// endpoints and pods) in 50 namespaces, and 2,000 proxies, each with its own
// gRPC connection on loopback, 10 on each of 200 Services.
//
// The Index is fed Go objects through Upsert, which is what the informers'
// handlers call (pods through the cache's transform, as the informer stores
// them); everything after that is the served path: the worker recomputes,
// fans out, and each stream sends over real gRPC to a client that decodes.
// Each iteration flips one endpoint's readiness in one watched Service and
// waits until its 10 proxies have the change.
//
// Reported: p50-ms and p99-ms from the change to each proxy's receipt,
// p99-all-ms to the last of a Service's proxies, index-MB (HeapInuse with the
// cluster indexed), heap-MB (with the 2,000 streams and their clients,
// which run in the same process), and burst-all-ms: from changing 1,200
// Services at once (all 200 watched ones among them) to the last of the
// 2,000 proxies having its change.
func BenchmarkEndpointPropagation(b *testing.B) {
	const (
		nServices    = 5000
		perService   = 10
		nNamespaces  = 50
		nProxies     = 2000
		watchedSvcs  = 200
		proxiesPerSv = nProxies / watchedSvcs
	)
	ix := NewIndex(Config{Mesh: meshv1.DefaultMeshName, TrustDomain: "cluster.local"})
	slicesBySvc := make([]*discoveryv1.EndpointSlice, nServices)
	for n := range nNamespaces {
		ix.Upsert(namespace(fmt.Sprintf("ns-%d", n), true))
	}
	for i := range nServices {
		ns := fmt.Sprintf("ns-%d", i%nNamespaces)
		name := fmt.Sprintf("svc-%d", i)
		svc := service(ns, name, servicePortSpec{name: "http", port: 80, target: 8080})
		svc.Spec.ClusterIP = fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
		svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
		ix.Upsert(svc)
		eps := make([]endpointSpec, perService)
		for j := range eps {
			podName := fmt.Sprintf("%s-%d", name, j)
			ip := fmt.Sprintf("10.%d.%d.%d", 1+i/1000, (i%1000)/4, (i%4)*perService+j+1)
			full := pod(ns, podSpec{name: podName, serviceAccount: name, ip: ip, node: fmt.Sprintf("node-%d", j), injected: true, labels: map[string]string{"app": name}})
			slim, _ := slimPod(full)
			ix.Upsert(slim.(*corev1.Pod))
			eps[j] = endpointSpec{ip: ip, pod: podName, node: fmt.Sprintf("node-%d", j), zone: fmt.Sprintf("zone-%d", j%3)}
		}
		s := endpointSlice(ns, name+"-abcde", name, []slicePortSpec{{name: "http", port: 8080}}, eps...)
		s.ResourceVersion = "1"
		slicesBySvc[i] = s
		ix.Upsert(s)
	}
	ix.MarkSynced()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ix.Run(ctx)
	indexHeap := heapInuse()

	gs := grpc.NewServer()
	controlplanev1.RegisterDiscoveryServiceServer(gs, NewServer(ix))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	// Each proxy reports the time of every response it receives.
	type receipt struct {
		proxy int
		at    time.Time
	}
	receipts := make(chan receipt, nProxies*4)
	var ready sync.WaitGroup
	conns := make([]*grpc.ClientConn, nProxies)
	for p := range nProxies {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		conns[p] = conn
		svc := p % watchedSvcs
		stream, err := controlplanev1.NewDiscoveryServiceClient(conn).Outbound(ctx, &controlplanev1.OutboundRequest{
			Destination: fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local:80", svc, svc%nNamespaces),
			Namespace:   fmt.Sprintf("ns-%d", (p/watchedSvcs)%nNamespaces),
		})
		if err != nil {
			b.Fatal(err)
		}
		ready.Add(1)
		go func() {
			first := true
			for {
				resp, err := stream.Recv()
				if err != nil {
					return
				}
				if first {
					if len(resp.GetBackends()) == 0 || len(resp.Backends[0].Endpoints) != perService {
						b.Errorf("proxy %d: first response %v, want %d endpoints", p, resp, perService)
					}
					first = false
					ready.Done()
					continue
				}
				receipts <- receipt{p, time.Now()}
			}
		}()
	}
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	ready.Wait()
	totalHeap := heapInuse()

	var each, all []time.Duration
	rng := rand.New(rand.NewPCG(1, 2))
	for b.Loop() {
		svc := rng.IntN(watchedSvcs)
		s := slicesBySvc[svc].DeepCopy()
		s.Endpoints[0].Conditions.Ready = ptr.To(!ptr.Deref(s.Endpoints[0].Conditions.Ready, true))
		s.ResourceVersion = fmt.Sprint(b.N, len(each))
		slicesBySvc[svc] = s
		start := time.Now()
		ix.Upsert(s)
		var last time.Duration
		for range proxiesPerSv {
			select {
			case r := <-receipts:
				if r.proxy%watchedSvcs != svc {
					b.Fatalf("proxy %d of Service %d got a response for a change to Service %d", r.proxy, r.proxy%watchedSvcs, svc)
				}
				d := r.at.Sub(start)
				each = append(each, d)
				last = max(last, d)
			case <-time.After(10 * time.Second):
				b.Fatalf("Service %d's proxies did not all get the change in 10s", svc)
			}
		}
		all = append(all, last)
	}
	// A burst, as a rolling restart or a node going away makes: every
	// watched Service and 1,000 unwatched ones change at once.
	b.StopTimer()
	start := time.Now()
	for i := range watchedSvcs + 1000 {
		svc := i
		if i >= watchedSvcs {
			svc = nServices - 1 - (i - watchedSvcs)
		}
		s := slicesBySvc[svc].DeepCopy()
		s.Endpoints[1].Conditions.Ready = ptr.To(!ptr.Deref(s.Endpoints[1].Conditions.Ready, true))
		s.ResourceVersion = fmt.Sprint("burst-", i)
		ix.Upsert(s)
	}
	var burst time.Duration
	for range nProxies {
		select {
		case r := <-receipts:
			burst = max(burst, r.at.Sub(start))
		case <-time.After(10 * time.Second):
			b.Fatal("the burst did not reach every proxy in 10s")
		}
	}
	b.ReportMetric(float64(burst)/float64(time.Millisecond), "burst-all-ms")
	b.ReportMetric(percentile(each, 50), "p50-ms")
	b.ReportMetric(percentile(each, 99), "p99-ms")
	b.ReportMetric(percentile(all, 99), "p99-all-ms")
	b.ReportMetric(float64(indexHeap)/(1<<20), "index-MB")
	b.ReportMetric(float64(totalHeap)/(1<<20), "heap-MB")
}

func heapInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// percentile is the p-th percentile of ds, in milliseconds.
func percentile(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(len(s)-1, len(s)*p/100)
	return float64(s[i]) / float64(time.Millisecond)
}
