package discovery

import (
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
	"github.com/trellis-mesh/trellis/sidecar"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/membership"
)

// Config is what the control plane knows of the Mesh it serves.
type Config struct {
	// Mesh is the Mesh's name: the namespaces that membership.MeshFor maps
	// to it are served (their pods get identities, their routes, policies
	// and pods are served, their routes and policies get status).
	Mesh string
	// TrustDomain is the Mesh's spec.trustDomain, for endpoints' SPIFFE IDs.
	TrustDomain string
	// MTLSMode is the Mesh's spec.mtls.mode; empty means Permissive.
	MTLSMode meshv1.MTLSMode
	// ClusterDomain is the cluster's DNS domain, for destinations named
	// name.namespace.svc.<domain>; empty means cluster.local.
	ClusterDomain string
	// OptionalKindPoll is how often Watch looks again for a Gateway API or
	// Trellis kind whose CRD is not installed; 0 means 30s.
	OptionalKindPoll time.Duration
}

// objKey names a namespaced object.
type objKey struct{ namespace, name string }

func (k objKey) String() string { return k.namespace + "/" + k.name }

func keyOf(o metav1.Object) objKey { return objKey{o.GetNamespace(), o.GetName()} }

// routeKind tells HTTPRoutes from GRPCRoutes, which share a namespace of names.
type routeKind uint8

const (
	httpRouteKind routeKind = iota + 1
	grpcRouteKind
)

func (k routeKind) String() string {
	if k == grpcRouteKind {
		return "GRPCRoute"
	}
	return "HTTPRoute"
}

// routeKey names an HTTPRoute or a GRPCRoute.
type routeKey struct {
	kind routeKind
	objKey
}

// policyKind tells TrafficPolicies from AuthorizationPolicies.
type policyKind uint8

const (
	trafficPolicyKind policyKind = iota + 1
	authorizationPolicyKind
)

func (k policyKind) String() string {
	if k == authorizationPolicyKind {
		return "AuthorizationPolicy"
	}
	return "TrafficPolicy"
}

// policyKey names a TrafficPolicy or an AuthorizationPolicy.
type policyKey struct {
	kind policyKind
	objKey
}

// statusKey names an object whose status the StatusWriter writes: a route
// or a policy, exactly one of them set.
type statusKey struct {
	route  routeKey
	policy policyKey
}

// Index is the cluster state that discovery answers from, and the views that
// streams watch. Informers call Upsert and Delete; Run recomputes the views
// that a change touches, once per change, and hands them to their streams.
//
// Every field below mu is guarded by it. Objects are the informers' own and
// are never modified.
type Index struct {
	cfg     Config
	metrics *metrics

	kick   chan struct{}
	synced chan struct{}
	once   sync.Once

	mu sync.Mutex

	services   map[objKey]*corev1.Service
	clusterIPs map[string]objKey
	slices     map[objKey]*discoveryv1.EndpointSlice
	// svcSlices are the EndpointSlices of each Service, by the
	// kubernetes.io/service-name label.
	svcSlices map[objKey]map[objKey]struct{}
	// addrSvcs counts, for an endpoint address, the slices of each Service
	// that hold it: how a pod IP finds its Service.
	addrSvcs map[string]svcCounts
	pods     map[objKey]*corev1.Pod
	// podIPs are the IPs of running pods that do not use the node's network.
	podIPs map[string]objKey
	// podSvcs counts, for a pod, the slices of each Service that hold it:
	// whose endpoints change when the pod's identity does.
	podSvcs map[objKey]svcCounts
	// nsMesh is the Mesh of each namespace, "" for none.
	nsMesh          map[string]string
	routes          map[routeKey]client.Object
	routesByParent  map[objKey]map[routeKey]struct{}
	routesByBackend map[objKey]map[routeKey]struct{}
	grants          map[objKey]*gwv1.ReferenceGrant
	trafficPolicies map[objKey]*meshv1.TrafficPolicy
	tpByTarget      map[objKey]map[objKey]struct{}
	authz           map[string]map[string]*meshv1.AuthorizationPolicy

	outViews map[outKey]*outView
	// viewsByRes are the outbound views whose destination resolves through
	// a key: "ip:<address>" or "svc:<namespace>/<name>".
	viewsByRes map[string]map[*outView]struct{}
	// viewsBySvc are the outbound views whose response holds a Service.
	viewsBySvc map[objKey]map[*outView]struct{}
	inViews    map[objKey]*inView
	// backends caches each Service port's Backend until the Service, its
	// slices or its pods change.
	backends map[objKey]map[int32]*controlplanev1.Backend
	dirtyOut map[*outView]struct{}
	dirtyIn  map[*inView]struct{}

	// statusListeners learn of every route and policy whose status may
	// have changed (StatusWriters, normally one). They are called with mu
	// held and must not block.
	statusListeners map[any]func(statusKey)
}

// NewIndex returns an empty Index for the Mesh that cfg describes.
func NewIndex(cfg Config) *Index {
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = "cluster.local"
	}
	if cfg.MTLSMode == "" {
		cfg.MTLSMode = meshv1.MTLSModePermissive
	}
	return &Index{
		cfg:             cfg,
		metrics:         newMetrics(),
		kick:            make(chan struct{}, 1),
		synced:          make(chan struct{}),
		services:        map[objKey]*corev1.Service{},
		clusterIPs:      map[string]objKey{},
		slices:          map[objKey]*discoveryv1.EndpointSlice{},
		svcSlices:       map[objKey]map[objKey]struct{}{},
		addrSvcs:        map[string]svcCounts{},
		pods:            map[objKey]*corev1.Pod{},
		podIPs:          map[string]objKey{},
		podSvcs:         map[objKey]svcCounts{},
		nsMesh:          map[string]string{},
		routes:          map[routeKey]client.Object{},
		routesByParent:  map[objKey]map[routeKey]struct{}{},
		routesByBackend: map[objKey]map[routeKey]struct{}{},
		grants:          map[objKey]*gwv1.ReferenceGrant{},
		trafficPolicies: map[objKey]*meshv1.TrafficPolicy{},
		tpByTarget:      map[objKey]map[objKey]struct{}{},
		authz:           map[string]map[string]*meshv1.AuthorizationPolicy{},
		outViews:        map[outKey]*outView{},
		viewsByRes:      map[string]map[*outView]struct{}{},
		viewsBySvc:      map[objKey]map[*outView]struct{}{},
		inViews:         map[objKey]*inView{},
		backends:        map[objKey]map[int32]*controlplanev1.Backend{},
		dirtyOut:        map[*outView]struct{}{},
		dirtyIn:         map[*inView]struct{}{},
		statusListeners: map[any]func(statusKey){},
	}
}

// MarkSynced says that the Index holds the whole cluster state: until then
// streams wait, rather than call a destination unknown that is only not
// listed yet. Watch calls it once the informers have synced.
func (ix *Index) MarkSynced() { ix.once.Do(func() { close(ix.synced) }) }

// Synced is closed once MarkSynced has been called.
func (ix *Index) Synced() <-chan struct{} { return ix.synced }

// SetMTLSMode changes the Mesh's mTLS mode, as when its spec.mtls.mode is
// edited, and sends every pod's proxy the new mode.
func (ix *Index) SetMTLSMode(mode meshv1.MTLSMode) {
	if mode == "" {
		mode = meshv1.MTLSModePermissive
	}
	ix.mu.Lock()
	changed := ix.cfg.MTLSMode != mode
	ix.cfg.MTLSMode = mode
	if changed {
		addAll(ix.dirtyIn, ix.inViews)
	}
	ix.mu.Unlock()
	if changed {
		select {
		case ix.kick <- struct{}{}:
		default:
		}
	}
}

// Upsert records the current state of a Service, EndpointSlice, Pod,
// Namespace, HTTPRoute, GRPCRoute, ReferenceGrant, TrafficPolicy or
// AuthorizationPolicy; other objects are ignored. The informers call it on
// every add and update.
func (ix *Index) Upsert(obj client.Object) { ix.apply(obj, false) }

// Delete forgets an object that Upsert recorded.
func (ix *Index) Delete(obj client.Object) { ix.apply(obj, true) }

func (ix *Index) apply(obj client.Object, deleted bool) {
	ix.mu.Lock()
	switch o := obj.(type) {
	case *corev1.Service:
		ix.setService(keyOf(o), o, deleted)
	case *discoveryv1.EndpointSlice:
		ix.setSlice(keyOf(o), o, deleted)
	case *corev1.Pod:
		ix.setPod(keyOf(o), o, deleted)
	case *corev1.Namespace:
		ix.setNamespace(o, deleted)
	case *gwv1.HTTPRoute:
		ix.setRoute(routeKey{httpRouteKind, keyOf(o)}, o, deleted)
	case *gwv1.GRPCRoute:
		ix.setRoute(routeKey{grpcRouteKind, keyOf(o)}, o, deleted)
	case *gwv1.ReferenceGrant:
		ix.setGrant(keyOf(o), o, deleted)
	case *meshv1.TrafficPolicy:
		ix.setTrafficPolicy(keyOf(o), o, deleted)
	case *meshv1.AuthorizationPolicy:
		ix.setAuthorizationPolicy(o, deleted)
	}
	work := len(ix.dirtyOut) > 0 || len(ix.dirtyIn) > 0
	ix.mu.Unlock()
	if work {
		select {
		case ix.kick <- struct{}{}:
		default:
		}
	}
}

// unchanged reports an informer resync: the same version again.
func unchanged(old, cur metav1.Object) bool {
	return old != nil && cur != nil && cur.GetResourceVersion() != "" && old.GetResourceVersion() == cur.GetResourceVersion()
}

func (ix *Index) setService(k objKey, svc *corev1.Service, deleted bool) {
	old := ix.services[k]
	if !deleted && old != nil && unchanged(old, svc) {
		ix.services[k] = svc
		return
	}
	for _, ip := range serviceIPs(old) {
		if ix.clusterIPs[ip] == k {
			delete(ix.clusterIPs, ip)
		}
		ix.markRes(ipRes(ip))
	}
	if deleted {
		delete(ix.services, k)
	} else {
		ix.services[k] = svc
		for _, ip := range serviceIPs(svc) {
			ix.clusterIPs[ip] = k
			ix.markRes(ipRes(ip))
		}
	}
	ix.markRes(svcRes(k))
	ix.markSvc(k, true)
	ix.routesOfService(k)
	if old == nil || deleted {
		// A target of these policies appeared or went.
		ix.policiesOfService(k)
	}
}

// serviceIPs are a Service's cluster IPs; none for a headless or
// ExternalName Service.
func serviceIPs(svc *corev1.Service) []string {
	if svc == nil || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		if ip != "" && ip != corev1.ClusterIPNone {
			out = append(out, ip)
		}
	}
	return out
}

// sliceService is the Service that an EndpointSlice belongs to, from its
// kubernetes.io/service-name label.
func sliceService(s *discoveryv1.EndpointSlice) (objKey, bool) {
	name := s.Labels[discoveryv1.LabelServiceName]
	return objKey{s.Namespace, name}, name != ""
}

// podRef is the pod an endpoint points at.
func podRef(sliceNS string, ep *discoveryv1.Endpoint) (objKey, bool) {
	ref := ep.TargetRef
	if ref == nil || ref.Kind != "Pod" || ref.Name == "" {
		return objKey{}, false
	}
	ns := ref.Namespace
	if ns == "" {
		ns = sliceNS
	}
	return objKey{ns, ref.Name}, true
}

func (ix *Index) setSlice(k objKey, s *discoveryv1.EndpointSlice, deleted bool) {
	old := ix.slices[k]
	if !deleted && old != nil && unchanged(old, s) {
		ix.slices[k] = s
		return
	}
	if old != nil {
		ix.indexSlice(k, old, -1)
	}
	if deleted {
		delete(ix.slices, k)
		return
	}
	ix.slices[k] = s
	ix.indexSlice(k, s, +1)
}

// indexSlice adds (delta +1) or removes (-1) what an EndpointSlice
// contributes to the indexes, and marks what it touches.
func (ix *Index) indexSlice(k objKey, s *discoveryv1.EndpointSlice, delta int) {
	svc, ok := sliceService(s)
	if !ok {
		return
	}
	if delta > 0 {
		addTo(ix.svcSlices, svc, k)
	} else {
		removeFrom(ix.svcSlices, svc, k)
	}
	for i := range s.Endpoints {
		ep := &s.Endpoints[i]
		if len(ep.Addresses) > 0 {
			count(ix.addrSvcs, ep.Addresses[0], svc, delta)
			ix.markRes(ipRes(ep.Addresses[0]))
		}
		if pod, ok := podRef(s.Namespace, ep); ok {
			count(ix.podSvcs, pod, svc, delta)
			ix.markIn(pod)
		}
	}
	ix.markSvc(svc, true)
}

func (ix *Index) setPod(k objKey, p *corev1.Pod, deleted bool) {
	old := ix.pods[k]
	if !deleted && old != nil && !podChanged(old, p) {
		ix.pods[k] = p
		return
	}
	if old != nil {
		for _, ip := range podServingIPs(old) {
			if ix.podIPs[ip] == k {
				delete(ix.podIPs, ip)
			}
			ix.markRes(ipRes(ip))
		}
	}
	if deleted {
		delete(ix.pods, k)
	} else {
		ix.pods[k] = p
		for _, ip := range podServingIPs(p) {
			ix.podIPs[ip] = k
			ix.markRes(ipRes(ip))
		}
	}
	for _, c := range ix.podSvcs[k] {
		ix.markSvc(c.svc, true)
	}
	ix.markIn(k)
}

// podServingIPs are the IPs at which a pod, and only it, can be reached.
func podServingIPs(p *corev1.Pod) []string {
	if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return nil
	}
	var ips []string
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = append(ips, p.Status.PodIP)
	}
	return ips
}

// injected reports whether a pod has the sidecar.
func injected(p *corev1.Pod) bool {
	_, ok := p.Annotations[sidecar.AnnotationStatus]
	return ok
}

// podChanged reports whether anything discovery uses of a pod changed; a
// pod's status changes often, and mostly in what discovery does not read.
func podChanged(old, cur *corev1.Pod) bool {
	return old.Spec.ServiceAccountName != cur.Spec.ServiceAccountName ||
		old.Spec.NodeName != cur.Spec.NodeName ||
		old.Spec.HostNetwork != cur.Spec.HostNetwork ||
		injected(old) != injected(cur) ||
		old.Status.PodIP != cur.Status.PodIP ||
		!slices.Equal(podServingIPs(old), podServingIPs(cur)) ||
		!maps.Equal(old.Labels, cur.Labels) ||
		!samePorts(old.Spec.Containers, cur.Spec.Containers) ||
		!samePorts(old.Spec.InitContainers, cur.Spec.InitContainers)
}

func samePorts(a, b []corev1.Container) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || !slices.Equal(a[i].Ports, b[i].Ports) {
			return false
		}
	}
	return true
}

func (ix *Index) setNamespace(ns *corev1.Namespace, deleted bool) {
	mesh := ""
	if !deleted {
		mesh = membership.MeshFor(ns.Name, ns.Labels)
	}
	old, had := ix.nsMesh[ns.Name]
	if deleted {
		delete(ix.nsMesh, ns.Name)
	} else {
		ix.nsMesh[ns.Name] = mesh
	}
	if had && (old == ix.cfg.Mesh) == (mesh == ix.cfg.Mesh) {
		return
	}
	// Membership decides identities, and which routes and policies count:
	// recompute everything, which is rare.
	ix.markAll()
	for rk := range ix.routes {
		if rk.namespace == ns.Name {
			ix.routeStatusChanged(rk)
		}
	}
	for pk := range ix.trafficPolicies {
		if pk.namespace == ns.Name {
			ix.policyStatusChanged(policyKey{trafficPolicyKind, pk})
		}
	}
	for name := range ix.authz[ns.Name] {
		ix.policyStatusChanged(policyKey{authorizationPolicyKind, objKey{ns.Name, name}})
	}
}

// meshed reports whether a namespace belongs to the Mesh.
func (ix *Index) meshed(ns string) bool { return ix.nsMesh[ns] == ix.cfg.Mesh }

func (ix *Index) setRoute(k routeKey, obj client.Object, deleted bool) {
	old := ix.routes[k]
	if !deleted && old != nil && obj.GetGeneration() != 0 && old.GetGeneration() == obj.GetGeneration() {
		// Only metadata or status (ours, often) changed.
		ix.routes[k] = obj
		ix.routeStatusChanged(k)
		return
	}
	if old != nil {
		for _, p := range serviceParents(old) {
			removeFrom(ix.routesByParent, p, k)
			ix.markSvc(p, false)
		}
		for _, b := range backendServices(old) {
			removeFrom(ix.routesByBackend, b, k)
		}
	}
	if deleted {
		delete(ix.routes, k)
	} else {
		ix.routes[k] = obj
		for _, p := range serviceParents(obj) {
			addTo(ix.routesByParent, p, k)
			ix.markSvc(p, false)
		}
		for _, b := range backendServices(obj) {
			addTo(ix.routesByBackend, b, k)
		}
	}
	ix.routeStatusChanged(k)
}

func (ix *Index) setGrant(k objKey, g *gwv1.ReferenceGrant, deleted bool) {
	if deleted {
		delete(ix.grants, k)
	} else {
		ix.grants[k] = g
	}
	// Grants are rare and may open or close any cross-namespace backend.
	for _, v := range ix.outViews {
		ix.dirtyOut[v] = struct{}{}
	}
	for rk := range ix.routes {
		ix.routeStatusChanged(rk)
	}
}

func (ix *Index) setTrafficPolicy(k objKey, tp *meshv1.TrafficPolicy, deleted bool) {
	old := ix.trafficPolicies[k]
	if !deleted && old != nil && tp.Generation != 0 && old.Generation == tp.Generation {
		// Only metadata or status (ours, often) changed.
		ix.trafficPolicies[k] = tp
		ix.policyStatusChanged(policyKey{trafficPolicyKind, k})
		return
	}
	if old != nil {
		for _, t := range policyTargets(old) {
			removeFrom(ix.tpByTarget, t, k)
			ix.markSvc(t, true)
			// Which policy holds t may change.
			ix.policiesOfService(t)
		}
	}
	ix.policyStatusChanged(policyKey{trafficPolicyKind, k})
	if deleted {
		delete(ix.trafficPolicies, k)
		return
	}
	ix.trafficPolicies[k] = tp
	for _, t := range policyTargets(tp) {
		addTo(ix.tpByTarget, t, k)
		ix.markSvc(t, true)
		ix.policiesOfService(t)
	}
}

func (ix *Index) setAuthorizationPolicy(p *meshv1.AuthorizationPolicy, deleted bool) {
	byName := ix.authz[p.Namespace]
	ix.policyStatusChanged(policyKey{authorizationPolicyKind, keyOf(p)})
	if old := byName[p.Name]; !deleted && old != nil && p.Generation != 0 && old.Generation == p.Generation {
		// Only metadata or status (ours, often) changed.
		byName[p.Name] = p
		return
	}
	if deleted {
		delete(byName, p.Name)
		if len(byName) == 0 {
			delete(ix.authz, p.Namespace)
		}
	} else {
		if byName == nil {
			byName = map[string]*meshv1.AuthorizationPolicy{}
			ix.authz[p.Namespace] = byName
		}
		byName[p.Name] = p
	}
	for k, v := range ix.inViews {
		if k.namespace == p.Namespace {
			ix.dirtyIn[v] = struct{}{}
		}
	}
}

// ipRes and svcRes are the keys that destinations resolve through: an IP
// (a ClusterIP or an endpoint's or pod's), or a Service's name.
func ipRes(ip string) string { return "ip:" + ip }
func svcRes(k objKey) string { return "svc:" + k.String() }

// markAll marks every view, and forgets every cached Backend.
func (ix *Index) markAll() {
	addAll(ix.dirtyOut, ix.outViews)
	addAll(ix.dirtyIn, ix.inViews)
	clear(ix.backends)
}

func (ix *Index) markIn(k objKey) {
	if v := ix.inViews[k]; v != nil {
		ix.dirtyIn[v] = struct{}{}
	}
}

func addAll[K comparable, V comparable](dirty map[V]struct{}, views map[K]V) {
	for _, v := range views {
		dirty[v] = struct{}{}
	}
}

// markRes marks the outbound views whose destination resolves through r.
func (ix *Index) markRes(r string) {
	for v := range ix.viewsByRes[r] {
		ix.dirtyOut[v] = struct{}{}
	}
}

// markSvc marks the outbound views that hold Service k; backend says that
// its cached Backends (endpoints or TrafficPolicy) may have changed too.
func (ix *Index) markSvc(k objKey, backend bool) {
	if backend {
		delete(ix.backends, k)
	}
	for v := range ix.viewsBySvc[k] {
		ix.dirtyOut[v] = struct{}{}
	}
}

// routesOfService tells the status writer of the routes whose parent or
// backend is Service k.
func (ix *Index) routesOfService(k objKey) {
	for rk := range ix.routesByParent[k] {
		ix.routeStatusChanged(rk)
	}
	for rk := range ix.routesByBackend[k] {
		ix.routeStatusChanged(rk)
	}
}

func (ix *Index) routeStatusChanged(k routeKey) {
	for _, l := range ix.statusListeners {
		l(statusKey{route: k})
	}
}

// policiesOfService tells the status writer of the TrafficPolicies that
// target Service k.
func (ix *Index) policiesOfService(k objKey) {
	for pk := range ix.tpByTarget[k] {
		ix.policyStatusChanged(policyKey{trafficPolicyKind, pk})
	}
}

func (ix *Index) policyStatusChanged(k policyKey) {
	for _, l := range ix.statusListeners {
		l(statusKey{policy: k})
	}
}

func addTo[K, V comparable](m map[K]map[V]struct{}, k K, v V) {
	set := m[k]
	if set == nil {
		set = map[V]struct{}{}
		m[k] = set
	}
	set[v] = struct{}{}
}

func removeFrom[K, V comparable](m map[K]map[V]struct{}, k K, v V) {
	if set := m[k]; set != nil {
		delete(set, v)
		if len(set) == 0 {
			delete(m, k)
		}
	}
}

// svcCounts counts slices per Service. An address or a pod is nearly always
// in one Service's slices, so a short slice costs far less than a map.
type svcCounts []svcCount

type svcCount struct {
	svc objKey
	n   int
}

// count adds delta to the slices of Service svc that hold key.
func count[K comparable](m map[K]svcCounts, key K, svc objKey, delta int) {
	cs := m[key]
	i := slices.IndexFunc(cs, func(c svcCount) bool { return c.svc == svc })
	switch {
	case i < 0 && delta > 0:
		m[key] = append(cs, svcCount{svc, delta})
	case i < 0:
	case cs[i].n+delta > 0:
		cs[i].n += delta
	case len(cs) == 1:
		delete(m, key)
	default:
		m[key] = slices.Delete(slices.Clone(cs), i, i+1)
	}
}

// services lists the Services, sorted.
func (cs svcCounts) services() []objKey {
	out := make([]objKey, len(cs))
	for i, c := range cs {
		out[i] = c.svc
	}
	slices.SortFunc(out, compareKeys)
	return out
}
