// Package controlplane is the mesh's control plane server. It holds the
// signing intermediate that the operator (or cert-manager) provides and the
// trust bundle the operator publishes, signs workload certificates for
// proxies that prove their ServiceAccount with a token (the Identity
// service, Certify), serves the proxies' gRPC API over TLS with a
// certificate it signs for itself, and serves health and metrics. It reads
// the signer from files the kubelet keeps up to date, so a rotated
// intermediate is picked up without a restart.
//
// It must not write the CA: rotation is the operator's job. Discovery lives
// in controlplane/discovery and registers on the same gRPC server; who a
// caller is comes from controlplane/auth.
package controlplane
