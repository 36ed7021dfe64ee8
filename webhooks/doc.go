// Package webhooks holds the operator's admission handlers. Each is a thin
// adapter: it decodes the request, looks up what it needs from the cluster, and
// hands it to a package that decides (validation for Mesh, inject for pods).
package webhooks
