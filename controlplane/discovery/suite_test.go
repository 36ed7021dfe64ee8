package discovery

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/test/testenv"
)

// One API server for the package's integration tests, with Trellis's CRDs
// and the Gateway API's (experimental channel, for HTTPRoute retry). It
// starts on first use, so that unit tests and benchmarks do without it,
// and TestMain stops it. There are no controllers: tests write the
// EndpointSlices that the EndpointSlice controller would.
var suite struct {
	once   sync.Once
	err    error
	env    *envtest.Environment
	cfg    *rest.Config
	client client.Client
}

func TestMain(m *testing.M) {
	// The informers' and leader election's logs are noise here.
	ctrllog.SetLogger(logr.Discard())
	klog.SetLogger(logr.Discard())
	code := m.Run()
	if suite.env != nil {
		if err := suite.env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}
	os.Exit(code)
}

func cluster(t testing.TB) (*rest.Config, client.Client) {
	t.Helper()
	suite.once.Do(func() { suite.err = startCluster() })
	if suite.err != nil {
		t.Fatal(suite.err)
	}
	return suite.cfg, suite.client
}

func startCluster() error {
	env, cfg, _, err := testenv.Start(testenv.Options{})
	if err != nil {
		return err
	}
	suite.env = env
	if err := installGatewayCRDs(cfg, "httproutes", "grpcroutes", "referencegrants"); err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 1000, 2000
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return err
	}
	suite.cfg, suite.client = cfg, c
	return nil
}

// installGatewayCRDs installs the Gateway API's CRDs of the given
// resources (experimental channel), from the module this project builds
// against.
func installGatewayCRDs(cfg *rest.Config, resources ...string) error {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		return fmt.Errorf("locating the Gateway API module: %w", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "experimental")
	var paths []string
	for _, r := range resources {
		paths = append(paths, filepath.Join(dir, "gateway.networking.k8s.io_"+r+".yaml"))
	}
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: paths, ErrorIfPathMissing: true}); err != nil {
		return fmt.Errorf("installing the Gateway API CRDs: %w", err)
	}
	return nil
}

// testIdentityKey carries the caller's namespace/serviceAccount in tests,
// which run without TLS; the control plane reads it from the client
// certificate instead.
const testIdentityKey = "x-test-identity"

func metadataIdentity(ctx context.Context) (string, string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(testIdentityKey)
	if len(v) != 1 {
		return "", "", false
	}
	ns, sa, ok := strings.Cut(v[0], "/")
	return ns, sa, ok
}

func asIdentity(ctx context.Context, namespace, serviceAccount string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, testIdentityKey, namespace+"/"+serviceAccount)
}

// harness is a discovery server over the test cluster, on loopback.
type harness struct {
	ctx    context.Context
	c      client.Client
	ix     *Index
	addr   string
	client controlplanev1.DiscoveryServiceClient
}

type harnessOptions struct {
	// status runs a StatusWriter, behind leader election.
	status bool
}

const testTrustDomain = "cluster.local"

func start(t *testing.T, opts harnessOptions) *harness {
	t.Helper()
	cfg, c := cluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	ix := NewIndex(Config{Mesh: meshv1.DefaultMeshName, TrustDomain: testTrustDomain, MTLSMode: meshv1.MTLSModeStrict})
	cache, err := NewCache(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.Watch(ctx, cache); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = cache.Start(ctx) })
	wg.Go(func() { ix.Run(ctx) })
	if opts.status {
		ensureNamespace(t, c, "trellis-system", nil)
		w := NewStatusWriter(ix, c)
		wg.Go(func() {
			_ = RunElected(ctx, cfg, Election{Namespace: "trellis-system", Name: "trellis-discovery-status", Identity: t.Name(), RetryPeriod: 200 * time.Millisecond},
				func(ctx context.Context) { _ = w.Start(ctx) })
		})
	}

	srv := NewServer(ix)
	srv.PeerIdentity = metadataIdentity
	srv.PodWait = time.Second
	gs := grpc.NewServer()
	controlplanev1.RegisterDiscoveryServiceServer(gs, srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = gs.Serve(lis) })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		gs.Stop()
		cancel()
		wg.Wait()
	})
	select {
	case <-ix.Synced():
	case <-time.After(30 * time.Second):
		t.Fatal("the informers did not sync in 30s")
	}
	return &harness{ctx: ctx, c: c, ix: ix, addr: lis.Addr().String(), client: controlplanev1.NewDiscoveryServiceClient(conn)}
}

// outbound opens an Outbound stream and returns its responses as they come.
func (h *harness) outbound(t *testing.T, client controlplanev1.DiscoveryServiceClient, destination, namespace string) <-chan *controlplanev1.OutboundResponse {
	t.Helper()
	ctx, cancel := context.WithCancel(asIdentity(h.ctx, namespace, "client"))
	t.Cleanup(cancel)
	stream, err := client.Outbound(ctx, &controlplanev1.OutboundRequest{Destination: destination, Namespace: namespace})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *controlplanev1.OutboundResponse, 1024)
	go func() {
		defer close(ch)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			ch <- resp
		}
	}()
	return ch
}

// await returns the first response that satisfies ok, failing the test
// with the last one seen if none does within the timeout.
func await[T any](t *testing.T, ch <-chan T, what string, ok func(T) bool) T {
	t.Helper()
	timeout := time.After(20 * time.Second)
	var last T
	for {
		select {
		case v, open := <-ch:
			if !open {
				t.Fatalf("stream ended before %s; last response: %v", what, last)
			}
			if ok(v) {
				return v
			}
			last = v
		case <-timeout:
			t.Fatalf("no response with %s in 20s; last: %v", what, last)
		}
	}
}

// eventually retries f until it returns nil, failing with its last error.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
