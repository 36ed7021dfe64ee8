package discovery

import (
	"context"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"google.golang.org/protobuf/proto"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// outKey names an outbound view: a destination as callers of one namespace
// see it (their namespace's routes may differ from others').
type outKey struct {
	dest      string
	namespace string
}

// outView is the OutboundResponse of one destination for one namespace,
// and the streams that watch it.
type outView struct {
	key outKey
	// dest is the parsed destination; parsed is false for a host that is
	// no Service's name, which is never known.
	dest   destination
	parsed bool
	// resKey and deps are where the view is filed in viewsByRes and viewsBySvc.
	resKey  string
	deps    []objKey
	version uint64
	cur     *controlplanev1.OutboundResponse
	feed    feed[*controlplanev1.OutboundResponse]
}

// inView is the InboundResponse of one pod, and the streams that watch it.
type inView struct {
	pod     objKey
	version uint64
	cur     inboundState
	feed    feed[inboundState]
}

// inboundState is what an Inbound stream needs: the pod's ServiceAccount to
// check the caller against, then the response.
type inboundState struct {
	found          bool
	serviceAccount string
	meshed         bool
	resp           *controlplanev1.InboundResponse
}

func (a inboundState) equal(b inboundState) bool {
	return a.found == b.found && a.serviceAccount == b.serviceAccount && a.meshed == b.meshed && proto.Equal(a.resp, b.resp)
}

// Run recomputes the views that changes have marked, each once however many
// changes touched it, and hands each changed view to its streams; it returns
// when ctx ends. Changes that arrive while it computes are taken together
// in the next round.
func (ix *Index) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-ix.kick:
			ix.flush()
		}
	}
}

func (ix *Index) flush() {
	var pubs []func()
	start := time.Now()
	ix.mu.Lock()
	memo := map[memoKey]memoEntry{}
	for v := range ix.dirtyOut {
		if ix.recomputeOut(v, memo) {
			version, cur := v.version, v.cur
			pubs = append(pubs, func() { v.feed.publish(version, cur) })
		}
	}
	ix.metrics.outRecomputed.Add(float64(len(ix.dirtyOut)))
	clear(ix.dirtyOut)
	for v := range ix.dirtyIn {
		if ix.recomputeIn(v) {
			version, cur := v.version, v.cur
			pubs = append(pubs, func() { v.feed.publish(version, cur) })
		}
	}
	ix.metrics.inRecomp.Add(float64(len(ix.dirtyIn)))
	clear(ix.dirtyIn)
	ix.mu.Unlock()
	for _, publish := range pubs {
		publish()
	}
	ix.metrics.round.Observe(time.Since(start).Seconds())
}

// watchOutbound subscribes to a destination as seen from a namespace. The
// subscription holds the current response at once; stop ends it.
func (ix *Index) watchOutbound(destination, namespace string) (s *sub[*controlplanev1.OutboundResponse], stop func(), err error) {
	d, ok, err := parseDestination(destination, ix.cfg.ClusterDomain)
	if err != nil {
		return nil, nil, err
	}
	key := outKey{dest: "?" + strings.ToLower(destination), namespace: namespace}
	if ok {
		key.dest = d.key()
	}
	s = newSub[*controlplanev1.OutboundResponse]()
	ix.mu.Lock()
	defer ix.mu.Unlock()
	v := ix.outViews[key]
	if v == nil {
		v = &outView{key: key, dest: d, parsed: ok}
		ix.outViews[key] = v
		ix.recomputeOut(v, map[memoKey]memoEntry{})
	}
	v.feed.add(s)
	// Offered under mu: a later round's publication cannot overtake it.
	s.offer(v.version, v.cur)
	return s, func() {
		ix.mu.Lock()
		defer ix.mu.Unlock()
		if v.feed.remove(s) && ix.outViews[key] == v {
			delete(ix.outViews, key)
			delete(ix.dirtyOut, v)
			ix.fileOut(v, "", nil)
		}
	}, nil
}

// watchInbound subscribes to a pod's inbound state.
func (ix *Index) watchInbound(pod objKey) (s *sub[inboundState], stop func()) {
	s = newSub[inboundState]()
	ix.mu.Lock()
	defer ix.mu.Unlock()
	v := ix.inViews[pod]
	if v == nil {
		v = &inView{pod: pod}
		ix.inViews[pod] = v
		ix.recomputeIn(v)
	}
	v.feed.add(s)
	s.offer(v.version, v.cur)
	return s, func() {
		ix.mu.Lock()
		defer ix.mu.Unlock()
		if v.feed.remove(s) && ix.inViews[pod] == v {
			delete(ix.inViews, pod)
			delete(ix.dirtyIn, v)
		}
	}
}

// recomputeOut recomputes a view and reports whether its response changed.
func (ix *Index) recomputeOut(v *outView, memo map[memoKey]memoEntry) bool {
	resp, resKey, deps := ix.computeOut(v, memo)
	ix.fileOut(v, resKey, deps)
	if v.cur != nil && (v.cur == resp || proto.Equal(v.cur, resp)) {
		return false
	}
	v.cur = resp
	v.version++
	return true
}

func (ix *Index) recomputeIn(v *inView) bool {
	st := ix.computeIn(v.pod)
	if v.version > 0 && v.cur.equal(st) {
		return false
	}
	v.cur = st
	v.version++
	return true
}

// fileOut files a view under the resolution key and the Services that its
// response hangs on, so that changes to them mark it.
func (ix *Index) fileOut(v *outView, resKey string, deps []objKey) {
	if v.resKey != resKey {
		if v.resKey != "" {
			removeFrom(ix.viewsByRes, v.resKey, v)
		}
		if resKey != "" {
			addTo(ix.viewsByRes, resKey, v)
		}
		v.resKey = resKey
	}
	for _, k := range v.deps {
		removeFrom(ix.viewsBySvc, k, v)
	}
	for _, k := range deps {
		addTo(ix.viewsBySvc, k, v)
	}
	v.deps = deps
}

// memoKey names an OutboundResponse for a Service port that several views
// of one round share: those of every namespace without consumer routes for
// it get the producer's.
type memoKey struct {
	svc     objKey
	port    int32
	routeNS string
}

type memoEntry struct {
	resp *controlplanev1.OutboundResponse
	deps []objKey
}

func (ix *Index) computeOut(v *outView, memo map[memoKey]memoEntry) (resp *controlplanev1.OutboundResponse, resKey string, deps []objKey) {
	if !v.parsed {
		return &controlplanev1.OutboundResponse{}, "", nil
	}
	r, resKey := ix.resolve(v.dest)
	switch r.kind {
	case serviceDestination:
		e := ix.serviceResponse(r.svc, r.port, v.key.namespace, memo)
		return e.resp, resKey, e.deps
	case endpointDestination:
		// The app dialed this pod: send it there, not to its Service's
		// other endpoints, and without the Service's routes (GAMMA: routes
		// bind to the Service's frontend only).
		ref := &controlplanev1.ServiceRef{Name: r.svc.name, Namespace: r.svc.namespace, Port: uint32(r.port.Port)}
		p, _ := protocolFor(r.port.AppProtocol, r.port.Name)
		ep := ix.endpoint(r.svc.namespace, r.address, r.endpoint)
		policy := ix.trafficPolicy(r.svc)
		return &controlplanev1.OutboundResponse{
			Known:    true,
			Service:  ref,
			Protocol: p,
			Backends: []*controlplanev1.Backend{{Service: ref, Endpoints: []*controlplanev1.Endpoint{ep}, Policy: policy}},
			Policy:   policy,
		}, resKey, []objKey{r.svc}
	case podDestination:
		pod := ix.pods[r.pod]
		ep := &controlplanev1.Endpoint{Address: r.address, Identity: ix.identity(pod), Pod: pod.Name, Node: pod.Spec.NodeName}
		return &controlplanev1.OutboundResponse{
			Known:    true,
			Protocol: containerPortProtocol(pod, v.dest.port),
			Backends: []*controlplanev1.Backend{{Endpoints: []*controlplanev1.Endpoint{ep}}},
		}, resKey, nil
	}
	return &controlplanev1.OutboundResponse{}, resKey, nil
}

// serviceResponse is the OutboundResponse for a Service port, for callers
// of namespace caller.
func (ix *Index) serviceResponse(k objKey, sp *corev1.ServicePort, caller string, memo map[memoKey]memoEntry) memoEntry {
	routeNS, routes := ix.attachedRoutes(k, sp, caller)
	mk := memoKey{k, sp.Port, routeNS}
	if e, ok := memo[mk]; ok {
		return e
	}
	b := newOutboundBuilder(ix)
	b.add(backendKey{svc: k, port: sp.Port})
	table, grpc := b.compileRoutes(routes)
	p, explicit := protocolFor(sp.AppProtocol, sp.Name)
	if !explicit && len(routes) > 0 {
		// A port that neither its appProtocol nor its name describes, but
		// that routes attach to, carries what the routes route.
		p = controlplanev1.Protocol_PROTOCOL_HTTP1
		if grpc {
			p = controlplanev1.Protocol_PROTOCOL_GRPC
		}
	}
	e := memoEntry{
		resp: &controlplanev1.OutboundResponse{
			Known:    true,
			Service:  &controlplanev1.ServiceRef{Name: k.name, Namespace: k.namespace, Port: uint32(sp.Port)},
			Protocol: p,
			Backends: b.backends,
			Routes:   table,
			Policy:   ix.trafficPolicy(k),
		},
		deps: make([]objKey, 0, len(b.deps)),
	}
	for d := range b.deps {
		e.deps = append(e.deps, d)
	}
	memo[mk] = e
	return e
}

// containerPortProtocol is what a pod's container port carries, by its name.
func containerPortProtocol(pod *corev1.Pod, port int32) controlplanev1.Protocol {
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.ContainerPort == port {
				p, _ := protocolFor(nil, cp.Name)
				return p
			}
		}
	}
	return controlplanev1.Protocol_PROTOCOL_TCP
}

func (ix *Index) computeIn(k objKey) inboundState {
	pod := ix.pods[k]
	if pod == nil {
		return inboundState{}
	}
	st := inboundState{found: true, serviceAccount: pod.Spec.ServiceAccountName, meshed: ix.meshed(k.namespace)}
	if st.serviceAccount == "" {
		st.serviceAccount = "default"
	}
	if !st.meshed {
		return st
	}
	mode := controlplanev1.MTLSMode_MTLS_MODE_PERMISSIVE
	if ix.cfg.MTLSMode == meshv1.MTLSModeStrict {
		mode = controlplanev1.MTLSMode_MTLS_MODE_STRICT
	}
	st.resp = &controlplanev1.InboundResponse{
		Ports:         ix.inboundPorts(k, pod),
		MtlsMode:      mode,
		Authorization: ix.authorization(pod),
	}
	return st
}

// feed hands a view's states to the streams that watch it.
type feed[T any] struct {
	mu   sync.Mutex
	subs map[*sub[T]]struct{}
}

func (f *feed[T]) add(s *sub[T]) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs == nil {
		f.subs = map[*sub[T]]struct{}{}
	}
	f.subs[s] = struct{}{}
}

// remove unsubscribes s and reports whether no stream is left.
func (f *feed[T]) remove(s *sub[T]) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.subs, s)
	return len(f.subs) == 0
}

func (f *feed[T]) publish(version uint64, v T) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		s.offer(version, v)
	}
}

// sub is one stream's mailbox. It holds only the latest state that the
// stream has not taken: a stream that cannot send as fast as states come
// skips the ones in between, and never holds up the others.
type sub[T any] struct {
	mu      sync.Mutex
	version uint64
	value   T
	fresh   bool
	ready   chan struct{}
}

func newSub[T any]() *sub[T] { return &sub[T]{ready: make(chan struct{}, 1)} }

// offer leaves a state unless the mailbox already had this version or a newer one.
func (s *sub[T]) offer(version uint64, v T) {
	s.mu.Lock()
	if version <= s.version {
		s.mu.Unlock()
		return
	}
	s.version, s.value, s.fresh = version, v, true
	s.mu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// take returns the state left since the last take, if any.
func (s *sub[T]) take() (T, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.value, s.fresh
	s.fresh = false
	return v, ok
}

// wait is ready when offer may have left a state.
func (s *sub[T]) wait() <-chan struct{} { return s.ready }
