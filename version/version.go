// Package version holds the build's version and the image it deploys. The
// Makefile and Dockerfile set them with -ldflags -X; nothing else writes them.
package version

var (
	// Version of this build; also the default tag of the image the operator deploys.
	Version = "v0.1.0"
	// Image is the default repository of the one image that holds every Trellis binary.
	Image = "ghcr.io/trellis-mesh/trellis"
)

// DefaultImage is Image at Version.
func DefaultImage() string { return Image + ":" + Version }
