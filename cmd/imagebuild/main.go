// Command imagebuild builds Trellis's container images from the project's Go
// packages, with no Docker engine and no registry, writes them to one OCI
// archive, and can import them into a local containerd.
//
//	imagebuild --out images.tar [--ldflags '-X ...'] \
//	    [--load --address /run/containerd/containerd.sock --namespace k8s.io] \
//	    --image 'ref=registry.k8s.io/pause:3.10,entrypoint=/pause,user=65535,go=./cmd/pause:/pause' ...
//
// Each --image is a comma-separated list of key=value pairs; -h lists the keys.
// Run it from the module's root: Go packages are built as `go build` names
// them from the current directory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/trellis-mesh/trellis/ociimage"
)

const imageUsage = `an image, as comma-separated key=value pairs (repeat the flag for more images):
  ref=REF          full reference, required: ghcr.io/trellis-mesh/trellis:v0.1.0
  go=PKG:PATH      build Go package PKG (static, stripped) to PATH in the image
  file=HOST:PATH   copy a prebuilt host file to PATH (mode 0755 if executable, else 0644)
  entrypoint=ARG   one element of the entrypoint; repeat for more, in order
  cmd=ARG          one element of the command; repeat for more, in order
  user=USER        user[:group] the image runs as, by number: 65532
  workdir=DIR      working directory
  env=NAME=VALUE   an environment variable; repeat for more
  label=KEY=VALUE  a label; repeat for more
Values cannot hold commas.`

// options are the command's flags other than --image.
type options struct {
	out, ldflags       string
	load               bool
	address, namespace string
}

func main() {
	var (
		o      options
		images imageFlags
	)
	flag.StringVar(&o.out, "out", "", "OCI archive to write (required)")
	flag.StringVar(&o.ldflags, "ldflags", "", "more -ldflags for go build, after -s -w: -X github.com/trellis-mesh/trellis/version.Version=v0.1.0")
	flag.BoolVar(&o.load, "load", false, "import the images into containerd, skipping those it already holds")
	flag.StringVar(&o.address, "address", "/run/containerd/containerd.sock", "containerd's socket, with --load")
	flag.StringVar(&o.namespace, "namespace", "k8s.io", "containerd namespace, with --load; the kubelet's is k8s.io")
	flag.Var(&images, "image", imageUsage)
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "imagebuild: unexpected argument %q: every image is an --image flag\n", flag.Arg(0))
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o, images)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

// image is one --image flag: the spec and the Go packages to build into it,
// then what became of it.
type image struct {
	spec   ociimage.Spec
	gos    []goBinary
	built  ociimage.Image
	digest v1.Hash
	loaded string // with --load: "imported" or "unchanged"
}

// goBinary is a Go package to build and where its binary goes in the image.
type goBinary struct {
	pkg  string
	path string
}

type imageFlags []*image

func (f *imageFlags) String() string { return fmt.Sprint(len(*f), " images") }

func (f *imageFlags) Set(s string) error {
	img, err := parseImage(s)
	if err != nil {
		return err
	}
	*f = append(*f, img)
	return nil
}

// parseImage reads one --image value. Keys that may repeat append, in order.
func parseImage(s string) (*image, error) {
	img := &image{}
	for _, kv := range strings.Split(s, ",") {
		key, value, ok := strings.Cut(kv, "=")
		if !ok || value == "" {
			return nil, fmt.Errorf("%q is not key=value; an --image is comma-separated key=value pairs, such as ref=ghcr.io/trellis-mesh/trellis:v0.1.0,go=.:/usr/local/bin/manager", kv)
		}
		switch key {
		case "ref":
			if img.spec.Ref != "" {
				return nil, fmt.Errorf("ref is given twice (%s, %s): give one ref per --image", img.spec.Ref, value)
			}
			if err := ociimage.ValidateRef(value); err != nil {
				return nil, err
			}
			img.spec.Ref = value
		case "go", "file":
			src, path, err := splitPath(key, value)
			if err != nil {
				return nil, err
			}
			if key == "go" {
				img.gos = append(img.gos, goBinary{pkg: src, path: path})
			} else {
				img.spec.Files = append(img.spec.Files, ociimage.File{Path: path, Source: src})
			}
		case "entrypoint":
			img.spec.Entrypoint = append(img.spec.Entrypoint, value)
		case "cmd":
			img.spec.Cmd = append(img.spec.Cmd, value)
		case "user":
			img.spec.User = value
		case "workdir":
			img.spec.WorkingDir = value
		case "env":
			if !strings.Contains(value, "=") {
				return nil, fmt.Errorf("env=%s: give NAME=VALUE", value)
			}
			img.spec.Env = append(img.spec.Env, value)
		case "label":
			k, v, ok := strings.Cut(value, "=")
			if !ok {
				return nil, fmt.Errorf("label=%s: give KEY=VALUE", value)
			}
			if img.spec.Labels == nil {
				img.spec.Labels = map[string]string{}
			}
			img.spec.Labels[k] = v
		default:
			return nil, fmt.Errorf("unknown key %q in --image; the keys are ref, go, file, entrypoint, cmd, user, workdir, env, label", key)
		}
	}
	if img.spec.Ref == "" {
		return nil, fmt.Errorf("--image %q has no ref: add ref=REGISTRY/REPOSITORY:TAG", s)
	}
	if len(img.gos)+len(img.spec.Files) == 0 {
		return nil, fmt.Errorf("image %s has no files: add go=PKG:PATH or file=HOST:PATH", img.spec.Ref)
	}
	return img, nil
}

// splitPath splits SOURCE:PATH at its last colon: a path in the image has
// none, and must be absolute.
func splitPath(key, value string) (src, path string, err error) {
	i := strings.LastIndex(value, ":")
	if i <= 0 || !strings.HasPrefix(value[i+1:], "/") {
		return "", "", fmt.Errorf("%s=%s: give SOURCE:PATH with an absolute path in the image, such as %s=./cmd/pause:/pause", key, value, key)
	}
	return value[:i], value[i+1:], nil
}

// run builds the Go binaries and the images, writes the archive, loads what
// containerd lacks, and prints one line per image.
func run(ctx context.Context, o options, images []*image) error {
	if o.out == "" || len(images) == 0 {
		return errors.New("give --out FILE and at least one --image; -h lists the flags")
	}
	work, err := os.MkdirTemp("", "imagebuild-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(work) }()

	if err := build(ctx, work, o.ldflags, images); err != nil {
		return err
	}
	if err := writeArchive(o.out, images); err != nil {
		return err
	}
	if o.load {
		if err := loadChanged(ctx, o, work, images); err != nil {
			return err
		}
	}
	for _, img := range images {
		line := img.spec.Ref + " " + img.digest.String()
		if img.loaded != "" {
			line += " " + img.loaded
		}
		fmt.Println(line)
	}
	return nil
}

// build builds the Go binaries into work, then the images.
func build(ctx context.Context, work, ldflags string, images []*image) error {
	// A package named by several images is built once.
	built := map[string]string{}
	for _, img := range images {
		for _, g := range img.gos {
			host, ok := built[g.pkg]
			if !ok {
				host = filepath.Join(work, fmt.Sprint("bin", len(built)))
				if err := goBuild(ctx, g.pkg, host, ldflags); err != nil {
					return fmt.Errorf("image %s: %w", img.spec.Ref, err)
				}
				built[g.pkg] = host
			}
			img.spec.Files = append(img.spec.Files, ociimage.File{Path: g.path, Source: host, Mode: 0o755})
		}
		for i, f := range img.spec.Files {
			if f.Mode == 0 {
				img.spec.Files[i].Mode = hostMode(f.Source)
			}
		}
		var err error
		if img.built, err = ociimage.Build(img.spec); err != nil {
			return err
		}
		if img.digest, err = img.built.Digest(); err != nil {
			return fmt.Errorf("image %s: %w", img.spec.Ref, err)
		}
	}
	return nil
}

// goBuild builds pkg into a static, stripped linux binary at out. The
// grpcnotrace tag leaves out gRPC's golang.org/x/net/trace, which nothing
// serves and which brings html/template into every binary: 1.8 MB of the
// sidecar's memory. The Dockerfile builds the same way.
func goBuild(ctx context.Context, pkg, out, ldflags string) error {
	fmt.Fprintf(os.Stderr, "building %s\n", pkg)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "grpcnotrace", "-ldflags", strings.TrimSpace("-s -w "+ldflags), "-o", out, pkg)
	// The image's config says linux and this machine's architecture; the
	// binary must match it whatever GOOS or GOARCH the caller has set.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w (its output is above)", pkg, err)
	}
	return nil
}

// hostMode is the mode a prebuilt file gets in the image: executable or
// not, as on the host, but never the host's umask or owner bits.
func hostMode(path string) os.FileMode {
	info, err := os.Stat(path)
	if err == nil && info.Mode()&0o100 != 0 {
		return 0o755
	}
	return 0o644 // a missing file is reported by ociimage.Build
}

// writeArchive writes images to path, through a temporary file so that a
// failed build leaves no half-written archive for a later import.
func writeArchive(path string, images []*image) error {
	built := make([]ociimage.Image, 0, len(images))
	for _, img := range images {
		built = append(built, img.built)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := ociimage.WriteArchive(tmp, built); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	// CreateTemp's 0600 would keep the archive from a non-root user.
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// loadChanged imports into containerd the images whose ref it does not
// already hold at the same digest, and marks each image with what it did.
func loadChanged(ctx context.Context, o options, work string, images []*image) error {
	held, err := ociimage.Images(ctx, o.address, o.namespace)
	if err != nil {
		return err
	}
	var changed []*image
	for _, img := range images {
		if held[img.spec.Ref] == img.digest {
			img.loaded = "unchanged"
			continue
		}
		changed = append(changed, img)
	}
	if len(changed) == 0 {
		return nil
	}
	archive := o.out
	if len(changed) < len(images) {
		// ctr imports every image in an archive: give it only the changed.
		archive = filepath.Join(work, "changed.tar")
		if err := writeArchive(archive, changed); err != nil {
			return err
		}
	}
	if err := ociimage.Load(ctx, archive, o.address, o.namespace); err != nil {
		return err
	}
	for _, img := range changed {
		img.loaded = "imported"
	}
	return nil
}
