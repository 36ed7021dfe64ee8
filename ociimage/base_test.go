package ociimage

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// tarFile is one entry of a tar, as the tests look at it.
type tarFile struct {
	hdr  *tar.Header
	data string
}

// readTar reads every entry of a tar, by name, and their order.
func readTar(t *testing.T, r io.Reader) (map[string]tarFile, []string) {
	t.Helper()
	files := map[string]tarFile{}
	var order []string
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, order
		}
		if err != nil {
			t.Fatalf("reading tar: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading %s from tar: %v", hdr.Name, err)
		}
		files[hdr.Name] = tarFile{hdr: hdr, data: string(data)}
		order = append(order, hdr.Name)
	}
}

func readLayer(t *testing.T, l v1.Layer) (map[string]tarFile, []string) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatalf("opening layer: %v", err)
	}
	defer func() { _ = rc.Close() }()
	return readTar(t, rc)
}

func TestBaseLayer(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\ntest\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	type want struct {
		mode     int64
		dir      bool
		contains []string // lines the file must hold
	}
	common := map[string]want{
		"etc/": {mode: 0o755, dir: true},
		"etc/passwd": {mode: 0o644, contains: []string{
			"root:x:0:0:", "nonroot:x:65532:65532:", "trellis-proxy:x:2102:2102:"}},
		"etc/group": {mode: 0o644, contains: []string{
			"root:x:0:", "nonroot:x:65532:", "trellis-proxy:x:2102:"}},
		"etc/nsswitch.conf": {mode: 0o644, contains: []string{"hosts: files dns"}},
		"root/":             {mode: 0o700, dir: true},
		"tmp/":              {mode: 0o1777, dir: true},
	}
	withCA := map[string]want{
		"etc/ssl/":                          {mode: 0o755, dir: true},
		"etc/ssl/certs/":                    {mode: 0o755, dir: true},
		"etc/ssl/certs/ca-certificates.crt": {mode: 0o644, contains: []string{"-----BEGIN CERTIFICATE-----", "test"}},
	}
	for name, tc := range map[string]struct {
		caBundle string
		want     map[string]want
	}{
		"host has a CA bundle":  {caBundle: ca, want: merge(common, withCA)},
		"host has no CA bundle": {caBundle: filepath.Join(t.TempDir(), "missing.crt"), want: common},
	} {
		t.Run(name, func(t *testing.T) {
			l, err := baseLayer(tc.caBundle)
			if err != nil {
				t.Fatal(err)
			}
			files, order := readLayer(t, l)
			if len(files) != len(tc.want) {
				t.Errorf("layer has %v; want exactly %d entries", order, len(tc.want))
			}
			for name, w := range tc.want {
				f, ok := files[name]
				if !ok {
					t.Errorf("layer has no %s", name)
					continue
				}
				if f.hdr.Mode != w.mode {
					t.Errorf("%s: mode %o; want %o", name, f.hdr.Mode, w.mode)
				}
				if isDir := f.hdr.Typeflag == tar.TypeDir; isDir != w.dir {
					t.Errorf("%s: directory %v; want %v", name, isDir, w.dir)
				}
				if f.hdr.Uid != 0 || f.hdr.Gid != 0 || f.hdr.Uname != "" || f.hdr.Gname != "" {
					t.Errorf("%s: owner %d:%d (%q:%q); want 0:0 and no names", name, f.hdr.Uid, f.hdr.Gid, f.hdr.Uname, f.hdr.Gname)
				}
				if !f.hdr.ModTime.Equal(time.Unix(0, 0)) {
					t.Errorf("%s: mtime %v; want the Unix epoch", name, f.hdr.ModTime)
				}
				lines := strings.Split(f.data, "\n")
				for _, c := range w.contains {
					if !hasPrefixLine(lines, c) {
						t.Errorf("%s has no line starting %q:\n%s", name, c, f.data)
					}
				}
			}
			for i := 1; i < len(order); i++ {
				if order[i-1] >= order[i] {
					t.Errorf("entries out of order: %s before %s", order[i-1], order[i])
				}
			}
		})
	}
}

func hasPrefixLine(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

func merge[K comparable, V any](ms ...map[K]V) map[K]V {
	out := map[K]V{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func TestNewLayerRejects(t *testing.T) {
	for name, entries := range map[string][]entry{
		"relative path":     {{name: "usr/bin/x", mode: 0o755}},
		"unclean path":      {{name: "/usr//bin/x", mode: 0o755}},
		"root itself":       {{name: "/", mode: 0o755, dir: true}},
		"same path twice":   {{name: "/x", mode: 0o755}, {name: "/x", mode: 0o644}},
		"file under a file": {{name: "/x", mode: 0o755}, {name: "/x/y", mode: 0o644}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := newLayer(entries); err == nil {
				t.Errorf("newLayer(%v) succeeded; want an error", entries)
			}
		})
	}
}

// TestLayerIsReproducible pins one layer's digest, so that anything host- or
// time-dependent in the tar headers fails here, across processes and not
// only within one. A new Go release that writes tar headers differently
// would fail it too, and would change every image's digest: update the
// digest then, knowing that.
func TestLayerIsReproducible(t *testing.T) {
	const want = "sha256:b905d21fec9f35dd9aecc7d030ca336f198acf67550c048a9a8bb5104beb6bef"
	for name, entries := range map[string][]entry{
		"in order":      {{name: "/a", mode: 0o755, data: []byte("a")}, {name: "/b/c", mode: 0o644, data: []byte("c")}},
		"another order": {{name: "/b/c", mode: 0o644, data: []byte("c")}, {name: "/a", mode: 0o755, data: []byte("a")}},
	} {
		t.Run(name, func(t *testing.T) {
			l, err := newLayer(entries)
			if err != nil {
				t.Fatal(err)
			}
			got, err := l.Digest()
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != want {
				t.Errorf("digest %s; want %s", got, want)
			}
		})
	}
}
