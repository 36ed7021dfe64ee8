package ociimage

import (
	"archive/tar"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// writeFile writes a host file for an image to copy.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuildConfig(t *testing.T) {
	bin := writeFile(t, t.TempDir(), "manager", "#!binary")
	manager := []File{{Path: "/usr/local/bin/manager", Source: bin, Mode: 0o755}}
	for name, tc := range map[string]struct {
		spec Spec
		want v1.Config
	}{
		"entrypoint, user and env": {
			spec: Spec{Ref: "ghcr.io/trellis-mesh/trellis:v0.1.0", Files: manager,
				Entrypoint: []string{"/usr/local/bin/manager"}, User: "65532", Env: []string{"LOG=debug"}},
			want: v1.Config{Entrypoint: []string{"/usr/local/bin/manager"}, User: "65532",
				Env: []string{defaultPath, "LOG=debug"}},
		},
		"env that sets PATH keeps it": {
			spec: Spec{Ref: "ghcr.io/trellis-mesh/trellis:v0.1.0", Files: manager, Env: []string{"PATH=/opt/bin"}},
			want: v1.Config{Env: []string{"PATH=/opt/bin"}},
		},
		"cmd, working dir and labels": {
			spec: Spec{Ref: "registry.k8s.io/pause:3.10", Files: manager,
				Entrypoint: []string{"/pause"}, Cmd: []string{"-v"}, User: "65535:65535", WorkingDir: "/tmp",
				Labels: map[string]string{"org.opencontainers.image.version": "3.10"}},
			want: v1.Config{Entrypoint: []string{"/pause"}, Cmd: []string{"-v"}, User: "65535:65535",
				Env: []string{defaultPath}, WorkingDir: "/tmp",
				Labels: map[string]string{"org.opencontainers.image.version": "3.10"}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			img, err := Build(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			if img.Ref != tc.spec.Ref {
				t.Errorf("Ref %q; want %q", img.Ref, tc.spec.Ref)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cf.Config, tc.want) {
				t.Errorf("config\n%+v\nwant\n%+v", cf.Config, tc.want)
			}
			if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
				t.Errorf("platform %s/%s; want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
			}
			if !cf.Created.Equal(time.Unix(0, 0)) {
				t.Errorf("created %v; want the Unix epoch", cf.Created.Time)
			}
			if len(cf.RootFS.DiffIDs) != 2 || len(cf.History) != 2 {
				t.Errorf("%d layers, %d history entries; want 2 of each (base, files)", len(cf.RootFS.DiffIDs), len(cf.History))
			}

			m, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
				t.Errorf("manifest %s with config %s; want OCI media types", m.MediaType, m.Config.MediaType)
			}
			layers, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			files, _ := readLayer(t, layers[len(layers)-1])
			for name, mode := range map[string]int64{"usr/": 0o755, "usr/local/": 0o755, "usr/local/bin/": 0o755, "usr/local/bin/manager": 0o755} {
				if f, ok := files[name]; !ok || f.hdr.Mode != mode {
					t.Errorf("files layer: %s missing or not mode %o", name, mode)
				}
			}
			if f := files["usr/local/bin/manager"]; f.data != "#!binary" || f.hdr.Typeflag != tar.TypeReg {
				t.Errorf("files layer: usr/local/bin/manager holds %q; want the host file's contents", f.data)
			}
		})
	}
}

func TestBuildIsReproducible(t *testing.T) {
	dir := t.TempDir()
	bin := writeFile(t, dir, "manager", "v1")
	other := writeFile(t, dir, "other", "v2")
	base := Spec{
		Ref:        "ghcr.io/trellis-mesh/trellis:v0.1.0",
		Files:      []File{{Path: "/usr/local/bin/manager", Source: bin, Mode: 0o755}},
		Entrypoint: []string{"/usr/local/bin/manager"},
		User:       "65532",
	}
	first, err := Build(base)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := first.Digest()

	for name, tc := range map[string]struct {
		change func(s *Spec)
		same   bool // whether the digest must equal the first build's
	}{
		"the same spec again": {change: func(*Spec) {}, same: true},
		"the host file touched, not changed": {change: func(*Spec) {
			later := epoch.AddDate(40, 0, 0)
			if err := os.Chtimes(bin, later, later); err != nil {
				t.Fatal(err)
			}
		}, same: true},
		"another ref": {change: func(s *Spec) { s.Ref = "ghcr.io/trellis-mesh/trellis:v0.2.0" }, same: true},
		"other file contents": {change: func(s *Spec) {
			s.Files = []File{{Path: "/usr/local/bin/manager", Source: other, Mode: 0o755}}
		}},
		"another mode": {change: func(s *Spec) {
			s.Files = []File{{Path: "/usr/local/bin/manager", Source: bin, Mode: 0o700}}
		}},
		"another user": {change: func(s *Spec) { s.User = "2102" }},
	} {
		t.Run(name, func(t *testing.T) {
			s := base
			tc.change(&s)
			img, err := Build(s)
			if err != nil {
				t.Fatal(err)
			}
			got, err := img.Digest()
			if err != nil {
				t.Fatal(err)
			}
			if (got == want) != tc.same {
				t.Errorf("digest %s, first build %s; want same=%v", got, want, tc.same)
			}
		})
	}
}

func TestBuildRejects(t *testing.T) {
	dir := t.TempDir()
	bin := writeFile(t, dir, "manager", "x")
	good := []File{{Path: "/manager", Source: bin, Mode: 0o755}}
	for name, tc := range map[string]struct {
		spec Spec
		hint string // a part of the error that tells the fix
	}{
		"ref without registry":   {Spec{Ref: "trellis:dev", Files: good}, "registry, repository and tag in full"},
		"ref without tag":        {Spec{Ref: "ghcr.io/trellis-mesh/trellis", Files: good}, "registry, repository and tag in full"},
		"ref by digest":          {Spec{Ref: "ghcr.io/trellis-mesh/trellis@sha256:" + strings.Repeat("0", 64), Files: good}, "registry, repository and tag in full"},
		"missing host file":      {Spec{Ref: "ghcr.io/a/b:c", Files: []File{{Path: "/m", Source: filepath.Join(dir, "nope"), Mode: 0o755}}}, "does not exist; build it first"},
		"host directory":         {Spec{Ref: "ghcr.io/a/b:c", Files: []File{{Path: "/m", Source: dir, Mode: 0o755}}}, "not a regular file"},
		"mode 0":                 {Spec{Ref: "ghcr.io/a/b:c", Files: []File{{Path: "/m", Source: bin}}}, "mode is 0"},
		"relative path in image": {Spec{Ref: "ghcr.io/a/b:c", Files: []File{{Path: "m", Source: bin, Mode: 0o755}}}, "clean absolute path"},
		"same path twice":        {Spec{Ref: "ghcr.io/a/b:c", Files: []File{{Path: "/usr/bin/x", Source: bin, Mode: 0o755}, {Path: "/usr/bin/x", Source: bin, Mode: 0o755}}}, "given twice"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Build(tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.hint) {
				t.Errorf("Build: %v; want an error saying %q", err, tc.hint)
			}
		})
	}
}
