// Package discovery serves the proxies' DiscoveryService: for a destination
// that an app dials, the Service behind it, its ready endpoints with their
// mesh identities, its compiled HTTPRoute/GRPCRoute rules (GAMMA) and its
// TrafficPolicy; for a proxy's own pod, its ports, the Mesh's mTLS mode and
// its compiled AuthorizationPolicies. Each stream carries a whole state, then
// a new whole state each time it changes.
//
// One Index, fed by informers, holds the cluster state and the views that
// streams watch. A change marks the views it touches; one worker recomputes
// each marked view once and hands the result to its streams, each of which
// keeps only the latest state it has not sent, so a slow proxy never holds
// up the others.
//
// StatusWriter writes the status of the routes attached to Services in the
// Mesh's namespaces (Accepted, ResolvedRefs) and of the TrafficPolicies and
// AuthorizationPolicies there (Accepted). Only one replica must run it.
//
// The package reads the cluster and writes only the status of routes and
// policies; it must not sign certificates or authenticate callers
// (PeerIdentity is given to it).
package discovery
