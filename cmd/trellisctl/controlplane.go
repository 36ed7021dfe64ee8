package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/streaming/pkg/httpstream"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/trellis-mesh/trellis/controllers"
	"github.com/trellis-mesh/trellis/controlplane/traffic"
)

// controlPlane is the traffic API of one Mesh's control plane, through one
// of its replicas: each replica answers for the whole mesh (it asks the
// others for their proxies' traffic and adds it up), and says when an
// answer misses a replica.
type controlPlane struct {
	// name is the replica's pod name, or the URL given with
	// --control-plane-url.
	name string
	// base is http://127.0.0.1:<forwarded port> or the URL given.
	base   string
	client *http.Client
	close  func()
	// warn receives the warning of an answer that misses a replica.
	warn io.Writer
}

// Close ends the port-forward.
func (cp *controlPlane) Close() {
	if cp.close != nil {
		cp.close()
	}
}

// connectControlPlane reaches one replica of the Mesh's control plane: the
// first --control-plane-url, or the first ready pod of its Deployment to
// which a port-forward to its HTTP port succeeds.
func (o *options) connectControlPlane(ctx context.Context) (*controlPlane, error) {
	return o.connectControlPlaneOn(ctx, 0)
}

// connectControlPlaneOn is connectControlPlane with the port-forward on
// local port local (0: any free port).
func (o *options) connectControlPlaneOn(ctx context.Context, local int) (*controlPlane, error) {
	cp := &controlPlane{client: &http.Client{Timeout: o.requestTimeout}, warn: o.stderr}
	if len(o.controlPlaneURLs) > 0 {
		u := o.controlPlaneURLs[0]
		if _, err := url.Parse(u); err != nil {
			return nil, fmt.Errorf("--control-plane-url %q: %w", u, err)
		}
		cp.name, cp.base = u, strings.TrimRight(u, "/")
		return cp, nil
	}
	cl, err := o.clients()
	if err != nil {
		return nil, err
	}
	mesh, err := cl.getMesh(ctx, o.mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: the traffic commands read the control plane of the Mesh named by --mesh", err)
	}
	ns := meshNamespace(mesh)
	pods, err := controlPlanePods(ctx, cl.c, ns, mesh.Name)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, p := range pods {
		port, stop, err := forwardPort(ctx, cl, ns, p, local, controllers.ControlPlaneHTTPPort, io.Discard)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cp.name, cp.base, cp.close = p, fmt.Sprintf("http://127.0.0.1:%d", port), stop
		return cp, nil
	}
	return nil, errors.Join(errs...)
}

// controlPlaneSelector finds a Mesh's control plane pods, as the operator
// labels them (controllers.controlPlaneSelector).
func controlPlaneSelector(mesh string) client.MatchingLabels {
	return client.MatchingLabels{
		controllers.LabelName:     controllers.ControlPlaneName,
		controllers.LabelInstance: mesh,
	}
}

// controlPlanePods are the names of the ready pods of the Mesh's control
// plane, sorted.
func controlPlanePods(ctx context.Context, c client.Client, ns, mesh string) ([]string, error) {
	var list corev1.PodList
	sel := controlPlaneSelector(mesh)
	if err := c.List(ctx, &list, client.InNamespace(ns), sel); err != nil {
		return nil, fmt.Errorf("listing the control plane pods of Mesh %s in namespace %s: %w", mesh, ns, err)
	}
	var ready []string
	for i := range list.Items {
		if podReady(&list.Items[i]) {
			ready = append(ready, list.Items[i].Name)
		}
	}
	if len(ready) == 0 {
		return nil, fmt.Errorf("no ready pod of Mesh %s's control plane (Deployment %s/%s, %d pods with labels %s=%s,%s=%s): "+
			"`kubectl -n %s get pods -l %s=%s` shows them, and `trellisctl check` says what is wrong",
			mesh, ns, controllers.ControlPlaneName, len(list.Items),
			controllers.LabelName, controllers.ControlPlaneName, controllers.LabelInstance, mesh,
			ns, controllers.LabelInstance, mesh)
	}
	slices.Sort(ready)
	return ready, nil
}

func podReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || !p.DeletionTimestamp.IsZero() {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// forwardPort listens on loopback port local (0: a free one) and forwards its connections
// to port of pod ns/name through the API server, as kubectl port-forward
// does: WebSockets first, SPDY when the API server cannot upgrade to them.
// stop ends it.
// Errors of single forwarded connections go to errOut.
func forwardPort(ctx context.Context, cl *clients, ns, pod string, local, port int, errOut io.Writer) (uint16, func(), error) {
	cfg := cl.cfg
	req := cl.kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("portforward")
	u := req.URL()
	// The forward outlives the request timeout of ordinary calls.
	streamCfg := rest.CopyConfig(cfg)
	streamCfg.Timeout = 0
	transport, upgrader, err := spdy.RoundTripperFor(streamCfg)
	if err != nil {
		return 0, nil, err
	}
	dialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	if ws, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, streamCfg); err == nil {
		dialer = portforward.NewFallbackDialerForStreaming(ws, dialer, func(err error) bool {
			return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		})
	}
	fctx, cancel := context.WithCancel(ctx)
	ready := make(chan struct{})
	pf, err := portforward.NewOnAddressesForStreamingWithContext(fctx, dialer, []string{"127.0.0.1"},
		[]string{fmt.Sprintf("%d:%d", local, port)}, ready, io.Discard, errOut)
	if err != nil {
		cancel()
		return 0, nil, err
	}
	var forwardErr error
	done := make(chan struct{})
	go func() {
		forwardErr = pf.ForwardPorts()
		close(done)
	}()
	select {
	case <-ready:
	case <-done:
		cancel()
		err := forwardErr
		if err == nil {
			err = errors.New("port-forward ended before it was ready")
		}
		hint := "the API server must reach the pod's kubelet"
		if apierrors.IsForbidden(err) || strings.Contains(err.Error(), "forbidden") {
			hint = "it needs the right to create pods/portforward in " + ns
		}
		return 0, nil, fmt.Errorf("port-forward to pod %s/%s port %d: %w (%s)", ns, pod, port, err, hint)
	case <-ctx.Done():
		cancel()
		return 0, nil, ctx.Err()
	}
	ports, err := pf.GetPorts()
	if err == nil && len(ports) != 1 {
		err = fmt.Errorf("%d ports forwarded, want 1", len(ports))
	}
	if err != nil {
		cancel()
		return 0, nil, fmt.Errorf("port-forward to pod %s/%s: %w", ns, pod, err)
	}
	return ports[0].Local, func() {
		cancel()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
	}, nil
}

// get decodes the replica's answer to path?query into v, and returns its
// HeaderPartial: what the answer misses, if anything.
func (cp *controlPlane) get(ctx context.Context, path string, query url.Values, v any) (string, error) {
	u := cp.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := cp.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("control plane %s: %w", cp.name, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return "", fmt.Errorf("control plane %s: reading %s: %w", cp.name, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e traffic.ErrorResponse
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return "", fmt.Errorf("control plane %s: %s: %s", cp.name, path, e.Error)
		}
		if resp.StatusCode == http.StatusNotFound {
			return "", fmt.Errorf("control plane %s: %s answered 404: it predates the traffic API; upgrade the Mesh's control plane", cp.name, path)
		}
		return "", fmt.Errorf("control plane %s: %s answered %s", cp.name, path, resp.Status)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return "", fmt.Errorf("control plane %s: %s: not the traffic API's JSON: %w", cp.name, path, err)
	}
	partial := resp.Header.Get(traffic.HeaderPartial)
	if partial != "" && cp.warn != nil {
		_, _ = fmt.Fprintf(cp.warn, "Warning: %s\n", partial)
	}
	return partial, nil
}

func trafficQuery(namespace string, window time.Duration) url.Values {
	q := url.Values{"window": {window.String()}}
	if namespace != "" {
		q.Set("namespace", namespace)
	}
	return q
}

func (cp *controlPlane) stat(ctx context.Context, namespace, by string, window time.Duration) (traffic.StatResponse, error) {
	q := trafficQuery(namespace, window)
	q.Set("by", by)
	var resp traffic.StatResponse
	_, err := cp.get(ctx, traffic.PathStat, q, &resp)
	return resp, err
}

func (cp *controlPlane) top(ctx context.Context, namespace string, window time.Duration) (traffic.TopResponse, error) {
	var resp traffic.TopResponse
	_, err := cp.get(ctx, traffic.PathTop, trafficQuery(namespace, window), &resp)
	return resp, err
}

func (cp *controlPlane) edges(ctx context.Context, namespace string, window time.Duration) (traffic.EdgesResponse, error) {
	var resp traffic.EdgesResponse
	_, err := cp.get(ctx, traffic.PathEdges, trafficQuery(namespace, window), &resp)
	return resp, err
}

// proxies are the mesh's proxies, and what the answer misses, if anything.
func (cp *controlPlane) proxies(ctx context.Context, namespace string) ([]traffic.ProxyStatus, string, error) {
	q := url.Values{}
	if namespace != "" {
		q.Set("namespace", namespace)
	}
	var resp []traffic.ProxyStatus
	partial, err := cp.get(ctx, traffic.PathProxies, q, &resp)
	return resp, partial, err
}
