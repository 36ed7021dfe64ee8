package ociimage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Load imports every image in archive (written by WriteArchive) into the
// containerd listening on the socket address, in namespace: k8s.io is the
// one the kubelet's images live in.
func Load(ctx context.Context, archive, address, namespace string) error {
	_, err := ctr(ctx, address, namespace, "images", "import", "--all-platforms", archive)
	return err
}

// Images returns the images containerd holds in namespace: each reference
// and the digest of its manifest, the digest Image.Digest returns. A caller
// compares the two to skip importing an image containerd already has.
func Images(ctx context.Context, address, namespace string) (map[string]v1.Hash, error) {
	out, err := ctr(ctx, address, namespace, "images", "ls")
	if err != nil {
		return nil, err
	}
	// Columns: REF TYPE DIGEST SIZE PLATFORMS LABELS. SIZE holds a space
	// ("1.2 MiB"), but the three before it do not.
	images := map[string]v1.Hash{}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, line := range lines[1:] {
		fields := strings.Fields(line)
		if len(fields) < 3 {
			return nil, fmt.Errorf("reading `ctr images ls`: unexpected line %q", line)
		}
		digest, err := v1.NewHash(fields[2])
		if err != nil {
			return nil, fmt.Errorf("reading `ctr images ls`: image %s: %w", fields[0], err)
		}
		images[fields[0]] = digest
	}
	return images, nil
}

// ctr runs ctr against containerd's socket and returns its standard output;
// an error carries what ctr printed.
func ctr(ctx context.Context, address, namespace string, args ...string) (string, error) {
	bin, err := exec.LookPath("ctr")
	if err != nil {
		return "", errors.New("ctr is not installed: apt-get install containerd")
	}
	// ctr waits ten seconds for a socket that is not there, then says only
	// "context deadline exceeded"; this names the cause at once.
	if _, err := os.Stat(address); errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("containerd socket %s does not exist: start containerd, or name the socket it listens on", address)
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"--address", address, "--namespace", namespace}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()+"\n"+stdout.String()))
	}
	return stdout.String(), nil
}
