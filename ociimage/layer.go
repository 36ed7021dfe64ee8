package ociimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch is every file's mtime and every image's creation time: a clock in
// either would change the digest on every build.
var epoch = time.Unix(0, 0).UTC()

// entry is one file or directory of a layer.
type entry struct {
	name string // path in the image, absolute and clean
	mode int64  // permission bits with the sticky bit, as tar stores them
	dir  bool
	data []byte
}

// newLayer writes entries into an uncompressed tar layer, adding any missing
// parent directory (0755) so that no directory's mode is left to the runtime.
// Entries are sorted and owned by root with a fixed mtime, so the same entries
// always give the same digest.
//
// The layer is not gzipped: images go from this process to a local containerd,
// never over a network, and a compressor's output could change with the Go
// version and so change the digest.
func newLayer(entries []entry) (v1.Layer, error) {
	byName := map[string]entry{}
	for _, e := range entries {
		if !path.IsAbs(e.name) || path.Clean(e.name) != e.name || e.name == "/" {
			return nil, fmt.Errorf("image path %q: give a clean absolute path such as /usr/local/bin/manager", e.name)
		}
		if _, dup := byName[e.name]; dup {
			return nil, fmt.Errorf("image path %s is given twice: give each path once", e.name)
		}
		byName[e.name] = e
	}
	for _, e := range entries {
		for dir := path.Dir(e.name); dir != "/"; dir = path.Dir(dir) {
			if p, ok := byName[dir]; ok {
				if !p.dir {
					return nil, fmt.Errorf("image path %s is a file, but %s needs it to be a directory", dir, e.name)
				}
				continue
			}
			byName[dir] = entry{name: dir, mode: 0o755, dir: true}
		}
	}
	names := make([]string, 0, len(byName))
	for name := range byName {
		names = append(names, name)
	}
	slices.Sort(names) // a parent sorts before its children

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range names {
		e := byName[name]
		hdr := &tar.Header{
			Name:     strings.TrimPrefix(name, "/"),
			Mode:     e.mode,
			ModTime:  epoch,
			Typeflag: tar.TypeReg,
			Size:     int64(len(e.data)),
		}
		if e.dir {
			hdr.Name += "/"
			hdr.Typeflag = tar.TypeDir
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("writing %s into the layer: %w", name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("writing %s into the layer: %w", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing the layer: %w", err)
	}
	return static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer), nil
}
