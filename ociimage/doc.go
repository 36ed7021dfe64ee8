// Package ociimage builds Trellis's container images from static binaries on
// the host, without a Docker daemon or a registry, and loads them into
// containerd with ctr.
//
// It owns the minimal base layer (users, groups, nsswitch, /tmp, CA bundle),
// the image config, and the OCI image-layout archive that `ctr images import`
// reads. Builds are reproducible: the same files and spec give the same digest,
// which is what lets a caller skip importing an image containerd already holds.
//
// It must not compile code (callers hand it built binaries), pull base images,
// or talk to a registry: the machines it runs on reach none.
package ociimage
