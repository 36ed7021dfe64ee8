package ociimage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// hostCABundle is Debian's CA bundle, copied into every image at the same
// path, which is where Go's crypto/x509 looks first on Linux.
const hostCABundle = "/etc/ssl/certs/ca-certificates.crt"

// The base layer's users. nonroot (65532) is distroless's unprivileged user,
// kept so manifests written for distroless images run unchanged;
// trellis-proxy (2102) is the sidecar proxy's user, which pods and traffic
// rules name by number, so the number must not change. Home
// directories do not exist: every file here is root's, and a program that
// must write uses /tmp.
const (
	passwd = `root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin
trellis-proxy:x:2102:2102:trellis-proxy:/nonexistent:/sbin/nologin
`
	group = `root:x:0:
nonroot:x:65532:
trellis-proxy:x:2102:
`
	// Go's resolver reads nsswitch.conf to decide whether /etc/hosts comes
	// before DNS; without the file it guesses.
	nsswitch = "hosts: files dns\n"
)

// baseLayer is the layer under every image: a root filesystem just big
// enough for a static Go binary. caBundle is copied to hostCABundle when it
// exists; a host without one gives images without one, which only matters to
// programs that dial TLS servers outside the mesh.
func baseLayer(caBundle string) (v1.Layer, error) {
	entries := []entry{
		{name: "/etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "/etc/group", mode: 0o644, data: []byte(group)},
		{name: "/etc/nsswitch.conf", mode: 0o644, data: []byte(nsswitch)},
		{name: "/root", mode: 0o700, dir: true},
		{name: "/tmp", mode: 0o1777, dir: true},
	}
	ca, err := os.ReadFile(caBundle)
	switch {
	case err == nil:
		entries = append(entries, entry{name: hostCABundle, mode: 0o644, data: ca})
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("reading the CA bundle %s for the base layer: %w", caBundle, err)
	}
	return newLayer(entries)
}
