// Package validation checks what a Mesh refers to in the cluster, which its
// CRD's CEL rules cannot see: that no other Mesh claims its namespace, and that
// the cert-manager issuer it names exists. The Mesh webhook refuses a spec
// that fails them; the reconciler checks again, because webhooks can be
// bypassed or down. Messages name the field and the fix.
//
// It reads; it never writes.
package validation
