// Package sidecar holds the names and numbers an injected pod and its proxy
// share: the containers, volumes, paths, ports and UID that the injector
// (package inject) writes into the pod, the labels and annotations on it,
// and the environment variables through which the proxy binary (cmd/proxy)
// learns about its pod.
//
// It must not import Kubernetes' packages, or anything that does: the proxy
// imports it, and every package the proxy imports is in every sidecar's
// memory. Names that need Kubernetes types stay in package inject.
package sidecar
