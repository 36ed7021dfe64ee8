package ociimage

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// testImages builds two small images, as the project's are: a program and
// the pause image.
func testImages(t *testing.T) []Image {
	t.Helper()
	dir := t.TempDir()
	var images []Image
	for _, s := range []Spec{
		{Ref: "ghcr.io/trellis-mesh/trellis:v0.1.0", Entrypoint: []string{"/usr/local/bin/manager"}, User: "65532",
			Files: []File{{Path: "/usr/local/bin/manager", Source: writeFile(t, dir, "manager", "manager binary"), Mode: 0o755}}},
		{Ref: "registry.k8s.io/pause:3.10", Entrypoint: []string{"/pause"}, User: "65535",
			Files: []File{{Path: "/pause", Source: writeFile(t, dir, "pause", "pause binary"), Mode: 0o755}}},
	} {
		img, err := Build(s)
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, img)
	}
	return images
}

func writeArchive(t *testing.T, images []Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteArchive(&buf, images); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteArchive(t *testing.T) {
	images := testImages(t)
	archive := writeArchive(t, images)
	if again := writeArchive(t, images); !bytes.Equal(archive, again) {
		t.Errorf("two archives of the same images differ")
	}
	files, _ := readTar(t, bytes.NewReader(archive))
	if _, ok := files["oci-layout"]; !ok {
		t.Fatalf("archive has no oci-layout")
	}
	var index v1.IndexManifest
	if err := json.Unmarshal([]byte(files["index.json"].data), &index); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if len(index.Manifests) != len(images) {
		t.Fatalf("index.json has %d manifests; want %d", len(index.Manifests), len(images))
	}

	// blob checks that the archive holds the blob d names, of its size and
	// digest, and returns it.
	blob := func(d v1.Descriptor) []byte {
		t.Helper()
		f, ok := files["blobs/sha256/"+d.Digest.Hex]
		if !ok {
			t.Fatalf("archive has no blob %s (%s)", d.Digest, d.MediaType)
		}
		sum := sha256.Sum256([]byte(f.data))
		if got := hex.EncodeToString(sum[:]); got != d.Digest.Hex || int64(len(f.data)) != d.Size {
			t.Errorf("blob %s: sha256 %s, %d bytes; want %s, %d bytes", d.Digest, got, len(f.data), d.Digest.Hex, d.Size)
		}
		return []byte(f.data)
	}
	for i, img := range images {
		desc := index.Manifests[i]
		t.Run(img.Ref, func(t *testing.T) {
			for _, a := range []string{"org.opencontainers.image.ref.name", "io.containerd.image.name"} {
				if got := desc.Annotations[a]; got != img.Ref {
					t.Errorf("annotation %s = %q; want %q", a, got, img.Ref)
				}
			}
			if want, _ := img.Digest(); desc.Digest != want {
				t.Errorf("manifest digest %s; want the image's, %s", desc.Digest, want)
			}
			if p := desc.Platform; p == nil || p.OS != "linux" || p.Architecture != runtime.GOARCH {
				t.Errorf("platform %+v; want linux/%s", p, runtime.GOARCH)
			}
			var m v1.Manifest
			if err := json.Unmarshal(blob(desc), &m); err != nil {
				t.Fatalf("manifest: %v", err)
			}
			blob(m.Config)
			for _, l := range m.Layers {
				blob(l)
			}
		})
	}
}

// TestArchiveReadsBack: go-containerregistry's own reader, given the
// unpacked archive, must find the same images.
func TestArchiveReadsBack(t *testing.T) {
	images := testImages(t)
	files, _ := readTar(t, bytes.NewReader(writeArchive(t, images)))
	dir := t.TempDir()
	for name, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range images {
		d, _ := want.Digest()
		img, err := lp.Image(d)
		if err != nil {
			t.Fatalf("%s: reading %s from the layout: %v", want.Ref, d, err)
		}
		got, err := img.Digest()
		if err != nil || got != d {
			t.Errorf("%s: read back as %s (%v); want %s", want.Ref, got, err, d)
		}
		wantCfg, _ := want.ConfigName()
		if gotCfg, err := img.ConfigName(); err != nil || gotCfg != wantCfg {
			t.Errorf("%s: config %s (%v); want %s", want.Ref, gotCfg, err, wantCfg)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			diffID, err := l.DiffID()
			if err != nil {
				t.Fatal(err)
			}
			rc, err := l.Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			h, _, err := v1.SHA256(rc)
			_ = rc.Close()
			if err != nil || h != diffID {
				t.Errorf("%s: layer reads back as %s (%v); want its diff ID %s", want.Ref, h, err, diffID)
			}
		}
	}
}

func TestWriteArchiveRejects(t *testing.T) {
	images := testImages(t)
	for name, tc := range map[string]struct {
		images []Image
		hint   string
	}{
		"no images":      {nil, "no images"},
		"same ref twice": {[]Image{images[0], {Ref: images[0].Ref, Image: images[1].Image}}, "given twice"},
		"short ref":      {[]Image{{Ref: "pause:3.10", Image: images[1].Image}}, "in full"},
	} {
		t.Run(name, func(t *testing.T) {
			err := WriteArchive(&bytes.Buffer{}, tc.images)
			if err == nil || !strings.Contains(err.Error(), tc.hint) {
				t.Errorf("WriteArchive: %v; want an error saying %q", err, tc.hint)
			}
		})
	}
}
