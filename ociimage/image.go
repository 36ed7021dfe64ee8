package ociimage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Spec is one image to build: the base layer, one layer of Files, and the
// config.
type Spec struct {
	// Ref is the full reference the image is imported under, registry and tag
	// included (ghcr.io/trellis-mesh/trellis:v0.1.0): the kubelet asks
	// containerd for exactly that name, and a short name would not match it.
	Ref string
	// Files are copied from the host into the image's one layer.
	Files []File
	// Entrypoint, Cmd, User, Env, WorkingDir and Labels are the image
	// config's fields of the same names. Env gets a default PATH unless it
	// sets one.
	Entrypoint []string
	Cmd        []string
	User       string
	Env        []string
	WorkingDir string
	Labels     map[string]string
}

// File is a host file to put in the image.
type File struct {
	Path   string      // in the image, absolute: /usr/local/bin/manager
	Source string      // on the host
	Mode   fs.FileMode // only the permission bits are kept
}

// Image is a built image and the reference it is imported under.
type Image struct {
	Ref string
	v1.Image
}

// defaultPath is the PATH of an image whose Env sets none, so that
// `kubectl exec pod -- manager` finds /usr/local/bin/manager.
const defaultPath = "PATH=/usr/local/bin:/usr/bin:/bin"

// ValidateRef says whether ref names an image the way containerd and the
// kubelet do: registry, repository and tag, all explicit.
func ValidateRef(ref string) error {
	if _, err := name.NewTag(ref, name.StrictValidation); err != nil {
		return fmt.Errorf("image ref %q: %w; give the registry, repository and tag in full, such as ghcr.io/trellis-mesh/trellis:v0.1.0", ref, err)
	}
	return nil
}

// Build assembles the image that s describes, for linux on this machine's
// architecture. The same spec and file contents give the same digest on the
// same host: the host's CA bundle is part of the base layer.
func Build(s Spec) (Image, error) {
	if err := ValidateRef(s.Ref); err != nil {
		return Image{}, err
	}
	base, err := baseLayer(hostCABundle)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", s.Ref, err)
	}
	files, paths, err := filesLayer(s.Files)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", s.Ref, err)
	}

	env := s.Env
	if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "PATH=") }) {
		env = append([]string{defaultPath}, env...)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      v1.Time{Time: epoch},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Entrypoint: s.Entrypoint,
			Cmd:        s.Cmd,
			User:       s.User,
			Env:        env,
			WorkingDir: s.WorkingDir,
			Labels:     s.Labels,
		},
	})
	if err != nil {
		return Image{}, fmt.Errorf("image %s: setting the config: %w", s.Ref, err)
	}
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "trellis base: users, nsswitch.conf, /tmp, CA bundle"}},
		mutate.Addendum{Layer: files, History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "trellis files: " + strings.Join(paths, " ")}},
	)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: adding the layers: %w", s.Ref, err)
	}
	// mutate computes lazily; computing the digest now reports a broken
	// image here rather than halfway through writing an archive.
	if _, err := img.Digest(); err != nil {
		return Image{}, fmt.Errorf("image %s: %w", s.Ref, err)
	}
	return Image{Ref: s.Ref, Image: img}, nil
}

// filesLayer reads files from the host into a layer, and returns their paths
// in the image, sorted.
func filesLayer(files []File) (v1.Layer, []string, error) {
	entries := make([]entry, 0, len(files))
	paths := make([]string, 0, len(files))
	for _, f := range files {
		info, err := os.Stat(f.Source)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("file %s: host file %s does not exist; build it first or fix the path", f.Path, f.Source)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("file %s: %w", f.Path, err)
		}
		if !info.Mode().IsRegular() {
			return nil, nil, fmt.Errorf("file %s: host file %s is not a regular file; name a file, not a directory", f.Path, f.Source)
		}
		if f.Mode.Perm() == 0 {
			return nil, nil, fmt.Errorf("file %s: mode is 0; give 0755 for a program, 0644 for data", f.Path)
		}
		data, err := os.ReadFile(f.Source)
		if err != nil {
			return nil, nil, fmt.Errorf("file %s: %w", f.Path, err)
		}
		entries = append(entries, entry{name: f.Path, mode: int64(f.Mode.Perm()), data: data})
		paths = append(paths, f.Path)
	}
	slices.Sort(paths)
	l, err := newLayer(entries)
	return l, paths, err
}
