// Package webhookcert gives the operator's admission webhooks a serving
// certificate when nothing else does: no cert-manager (kustomize's default
// overlay) and no OLM (which mounts its own). It keeps a CA and a serving
// certificate in a Secret in the operator's namespace, writes them where the
// webhook server reads them, and puts the CA into the webhook configurations'
// caBundle.
//
// It must not touch a certificate that cert-manager or OLM provides: the
// operator uses it only when its certificate directory is empty at start.
package webhookcert
