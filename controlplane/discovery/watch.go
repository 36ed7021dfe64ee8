package discovery

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/sidecar"
)

// Scheme knows the types that discovery reads: Kubernetes', the Gateway
// API's v1 and Trellis's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(gwv1.Install(s))
	utilruntime.Must(meshv1.AddToScheme(s))
	return s
}

// NewCache returns an informer cache for Watch. It drops managed fields
// from every object and keeps of pods only what discovery reads (about a
// tenth of a pod), so it is not for other readers.
//
// Discovery uses controller-runtime's cache rather than client-go's
// SharedInformerFactory because it serves the Gateway API's and Trellis's
// own types from one scheme, without generated clientsets, with the same
// transforms, and can be shared with a manager; its informers are
// client-go's, so event handlers behave the same.
func NewCache(cfg *rest.Config) (cache.Cache, error) {
	return cache.New(cfg, cache.Options{
		Scheme:           Scheme(),
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Transform: slimPod},
		},
	})
}

// watched are the kinds the Index reads; optional ones may have no CRD.
var watched = []struct {
	obj      client.Object
	optional bool
}{
	{&corev1.Namespace{}, false},
	{&corev1.Service{}, false},
	{&discoveryv1.EndpointSlice{}, false},
	{&corev1.Pod{}, false},
	{&gwv1.HTTPRoute{}, true},
	{&gwv1.GRPCRoute{}, true},
	{&gwv1.ReferenceGrant{}, true},
	{&meshv1.TrafficPolicy{}, true},
	{&meshv1.AuthorizationPolicy{}, true},
}

// Watch has c's informers feed the Index, and marks the Index synced once
// each has delivered its initial list. A Gateway API or Trellis policy kind
// whose CRD is not installed is looked for again every
// Config.OptionalKindPoll until it is, so that installing the Gateway API
// after the mesh needs no restart; until then discovery works without it.
// Call Watch before starting c.
func (ix *Index) Watch(ctx context.Context, c cache.Cache) error {
	log := logr.FromContextOrDiscard(ctx).WithName("discovery")
	var synced []toolscache.InformerSynced
	var missing []client.Object
	for _, w := range watched {
		reg, err := ix.watchKind(ctx, c, w.obj)
		if err != nil {
			if w.optional && meta.IsNoMatchError(err) {
				log.Info("Kind not installed in the cluster; discovery works without it until its CRD is", "kind", kindName(w.obj))
				missing = append(missing, w.obj)
				continue
			}
			return fmt.Errorf("watching %s: %w", kindName(w.obj), err)
		}
		synced = append(synced, reg.HasSynced)
	}
	go func() {
		if toolscache.WaitForCacheSync(ctx.Done(), synced...) {
			log.Info("Discovery has the cluster state")
			ix.MarkSynced()
		}
	}()
	if len(missing) > 0 {
		go ix.watchLateKinds(ctx, c, missing)
	}
	return nil
}

// watchLateKinds looks for the kinds whose CRDs were missing until each is
// installed, and watches it from then on. The cache's REST mapper finds a
// new kind on its own once the API server serves it.
func (ix *Index) watchLateKinds(ctx context.Context, c cache.Cache, missing []client.Object) {
	log := logr.FromContextOrDiscard(ctx).WithName("discovery")
	poll := ix.cfg.OptionalKindPoll
	if poll <= 0 {
		poll = 30 * time.Second
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for len(missing) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		still := missing[:0]
		for _, obj := range missing {
			if _, err := ix.watchKind(ctx, c, obj); err != nil {
				if !meta.IsNoMatchError(err) {
					log.Error(err, "Watching a newly installed kind failed; trying again", "kind", kindName(obj))
				}
				still = append(still, obj)
				continue
			}
			log.Info("Kind now installed in the cluster; discovery watches it", "kind", kindName(obj))
		}
		missing = still
	}
}

// watchKind has the informer of obj's kind feed the Index.
func (ix *Index) watchKind(ctx context.Context, c cache.Cache, obj client.Object) (toolscache.ResourceEventHandlerRegistration, error) {
	inf, err := c.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
	if err != nil {
		return nil, err
	}
	return inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if o, ok := obj.(client.Object); ok {
				ix.Upsert(o)
			}
		},
		UpdateFunc: func(_, obj any) {
			if o, ok := obj.(client.Object); ok {
				ix.Upsert(o)
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if o, ok := obj.(client.Object); ok {
				ix.Delete(o)
			}
		},
	})
}

// kindName is the Go type's name of obj, which is its kind.
func kindName(obj client.Object) string {
	t := reflect.TypeOf(obj)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Name()
}

// slimPod keeps of a pod what discovery reads: identity (ServiceAccount,
// whether it is injected), place (node, IPs), labels for policy selectors
// and container ports. The injection status annotation is kept without its
// value, which only its presence matters for.
func slimPod(in any) (any, error) {
	p, ok := in.(*corev1.Pod)
	if !ok {
		return in, nil
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			Labels: p.Labels, CreationTimestamp: p.CreationTimestamp, DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: p.Spec.ServiceAccountName,
			NodeName:           p.Spec.NodeName,
			HostNetwork:        p.Spec.HostNetwork,
		},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
	if injected(p) {
		out.Annotations = map[string]string{sidecar.AnnotationStatus: ""}
	}
	for _, c := range p.Spec.Containers {
		out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: c.Name, Ports: c.Ports})
	}
	for _, c := range p.Spec.InitContainers {
		if c.RestartPolicy != nil {
			out.Spec.InitContainers = append(out.Spec.InitContainers, corev1.Container{Name: c.Name, Ports: c.Ports, RestartPolicy: c.RestartPolicy})
		}
	}
	return out, nil
}
