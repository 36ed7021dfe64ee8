// Package controllers holds the operator's reconcilers.
//
// The Mesh reconciler owns everything a Mesh installs: the mesh namespace, the
// certificate authority (builtin Secret or cert-manager Certificate), the trust
// bundle ConfigMaps in the mesh namespace and in every namespace labeled for the
// mesh, and the control plane's ServiceAccount, RBAC, Deployment, Service and
// PodDisruptionBudget. It writes them with server-side apply under one field
// owner, and reports on them in the Mesh's status. Under updateStrategy
// RollingRestart it also restarts the users' workloads whose pods run an
// outdated proxy, a few at a time, touching nothing of them but their pod
// template's restart annotations.
//
// It must not make certificate decisions itself (package ca does, as pure
// functions), nor decide which Mesh serves a namespace (package membership).
package controllers
