package traffic

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"

	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// EndpointSlicePeers finds the other ready replicas of the control plane
// in the EndpointSlices of its Service (service in namespace), read from
// r, which should be an informer cache (the discovery cache watches every
// EndpointSlice). An endpoint is a replica when it is ready (its pod
// passes /readyz: the caches have synced) and its pod is not self; its
// URL is http://<address>:port, the HTTP port.
func EndpointSlicePeers(r client.Reader, namespace, service, self string, port int) PeerLookup {
	return func() ([]Peer, error) {
		var list discoveryv1.EndpointSliceList
		if err := r.List(context.Background(), &list, client.InNamespace(namespace),
			client.MatchingLabels{discoveryv1.LabelServiceName: service}); err != nil {
			return nil, fmt.Errorf("listing the EndpointSlices of Service %s/%s: %w", namespace, service, err)
		}
		seen := map[string]bool{}
		var peers []Peer
		for _, slice := range list.Items {
			if slice.AddressType != discoveryv1.AddressTypeIPv4 && slice.AddressType != discoveryv1.AddressTypeIPv6 {
				continue
			}
			for _, ep := range slice.Endpoints {
				ref := ep.TargetRef
				if ref == nil || ref.Kind != "Pod" || ref.Name == self || seen[ref.Name] || len(ep.Addresses) == 0 {
					continue
				}
				// Ready unset means ready (the EndpointSlice API's rule);
				// terminating pods are not ready.
				if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
					continue
				}
				seen[ref.Name] = true
				peers = append(peers, Peer{Name: ref.Name, URL: "http://" + net.JoinHostPort(ep.Addresses[0], strconv.Itoa(port))})
			}
		}
		slices.SortFunc(peers, func(a, b Peer) int { return cmp.Compare(a.Name, b.Name) })
		return peers, nil
	}
}
