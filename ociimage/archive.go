package ociimage

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// The annotations that name a manifest in index.json: ctr names an imported
// image after its own; the OCI one is the spec's, which other tools read.
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationOCIRefName     = "org.opencontainers.image.ref.name"
)

// WriteArchive writes images to w as a tar of an OCI image layout
// (oci-layout, index.json, blobs/sha256/...), which `ctr images import`
// reads. Each manifest in index.json is annotated with its image's Ref. The
// same images give the same bytes.
func WriteArchive(w io.Writer, images []Image) error {
	if len(images) == 0 {
		return fmt.Errorf("no images to write: give at least one")
	}
	dir, err := os.MkdirTemp("", "ociimage-layout-")
	if err != nil {
		return fmt.Errorf("making a directory for the image layout: %w", err)
	}
	defer func() { _ = os.RemoveAll(dir) }()

	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("writing the image layout in %s: %w", dir, err)
	}
	seen := map[string]bool{}
	for _, img := range images {
		if err := ValidateRef(img.Ref); err != nil {
			return err
		}
		if seen[img.Ref] {
			return fmt.Errorf("image %s is given twice: give each ref once", img.Ref)
		}
		seen[img.Ref] = true
		cf, err := img.ConfigFile()
		if err != nil {
			return fmt.Errorf("image %s: reading its config: %w", img.Ref, err)
		}
		err = lp.AppendImage(img.Image,
			layout.WithAnnotations(map[string]string{annotationContainerdName: img.Ref, annotationOCIRefName: img.Ref}),
			layout.WithPlatform(v1.Platform{OS: cf.OS, Architecture: cf.Architecture}))
		if err != nil {
			return fmt.Errorf("image %s: writing it into the image layout: %w", img.Ref, err)
		}
	}
	return tarDir(w, dir)
}

// tarDir writes the tree under dir to w, in lexical order, with fixed modes,
// owners and times, so the archive depends only on the tree's contents.
func tarDir(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, ModTime: epoch, Typeflag: tar.TypeReg}
		if d.IsDir() {
			hdr.Name += "/"
			hdr.Mode = 0o755
			hdr.Typeflag = tar.TypeDir
			return tw.WriteHeader(hdr)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		info, err := f.Stat()
		if err != nil {
			return err
		}
		hdr.Size = info.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("writing the image archive: %w", err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("writing the image archive: %w", err)
	}
	return nil
}
