// Package membership decides which Mesh, if any, serves a namespace, from the
// namespace's labels alone. The operator (trust bundles, status counts) and the
// injector use it, so that they never disagree. It reads no cluster state.
package membership
