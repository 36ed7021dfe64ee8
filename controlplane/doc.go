// Package controlplane is the mesh's control plane server: it holds the
// signing intermediate that the operator (or cert-manager) provides, and
// serves health and metrics. It reads the signer from files the kubelet
// keeps up to date, so a rotated intermediate is picked up without a restart.
//
// It must not write the CA: rotation is the operator's job.
package controlplane
