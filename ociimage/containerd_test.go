package ociimage

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLoadIntoContainerd imports an archive into a containerd of its own and
// checks containerd names each image by its ref, at its digest: what the
// kubelet will ask for.
func TestLoadIntoContainerd(t *testing.T) {
	for _, bin := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed, so there is no containerd to load into: apt-get install containerd", bin)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root to run: run this test as root to load into a real containerd")
	}
	address := startContainerd(t)
	const namespace = "k8s.io"

	images := testImages(t)
	archive := filepath.Join(t.TempDir(), "images.tar")
	if err := os.WriteFile(archive, writeArchive(t, images), 0o644); err != nil {
		t.Fatal(err)
	}

	held, err := Images(t.Context(), address, namespace)
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 0 {
		t.Fatalf("a new containerd holds %v; want no images", held)
	}
	// Twice: importing what containerd already holds must not fail.
	for range 2 {
		if err := Load(t.Context(), archive, address, namespace); err != nil {
			t.Fatal(err)
		}
	}

	held, err = Images(t.Context(), address, namespace)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ctr", "--address", address, "-n", namespace, "images", "ls").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr images ls: %v: %s", err, out)
	}
	for _, img := range images {
		want, _ := img.Digest()
		if held[img.Ref] != want {
			t.Errorf("Images: %s at %s; want %s", img.Ref, held[img.Ref], want)
		}
		// Read ctr's own words too, so a parser bug in Images cannot hide a
		// misnamed image.
		if !slices.ContainsFunc(strings.Split(string(out), "\n"), func(line string) bool {
			f := strings.Fields(line)
			return len(f) > 2 && f[0] == img.Ref && f[2] == want.String()
		}) {
			t.Errorf("ctr images ls has no line for %s at %s:\n%s", img.Ref, want, out)
		}
	}
	if len(held) != len(images) {
		t.Errorf("containerd holds %v; want only the %d imported images", held, len(images))
	}

	// A failed import's error must carry ctr's own words, which say why.
	broken := filepath.Join(t.TempDir(), "broken.tar")
	if err := os.WriteFile(broken, []byte("not a tar"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = Load(t.Context(), broken, address, namespace)
	if err == nil || !strings.Contains(err.Error(), "ctr images import") || !strings.Contains(err.Error(), "ctr: ") {
		t.Errorf("Load of a broken archive: %v; want an error with ctr's output", err)
	}
}

// startContainerd runs a containerd with its root, state and socket in a
// temporary directory, without the CRI plugin, until the test ends, and
// returns its socket.
func startContainerd(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	address := filepath.Join(dir, "containerd.sock")
	config := filepath.Join(dir, "config.toml")
	// opt is disabled because it would write to /opt/containerd.
	err := os.WriteFile(config, fmt.Appendf(nil, `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt"]

[grpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), address), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "containerd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = logFile.Close() }()
	log := func() string { b, _ := os.ReadFile(logPath); return string(b) }

	cmd := exec.Command("containerd", "--config", config)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// If the test binary dies, containerd goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting containerd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		// Stop this containerd by its PID, never by name: the machine may
		// run another, for the local cluster.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			t.Logf("containerd stopped: %v", err)
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Logf("containerd killed: %v", <-exited)
		}
		unmountUnder(t, dir)
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", address); err == nil {
			_ = c.Close()
			return address
		}
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("containerd exited before serving: %v\n%s", err, log())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not serve %s within 30s:\n%s", address, log())
		}
	}
}

// unmountUnder unmounts whatever containerd left mounted under dir (its
// snapshotter's or a failed unpack's), deepest first, so the test's
// directories can be removed.
func unmountUnder(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Errorf("listing mounts: %v", err)
		return
	}
	defer func() { _ = f.Close() }()
	var mounts []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		// Field 5 is the mount point. mountinfo escapes spaces in it, but
		// t.TempDir's paths have none.
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		p := fields[4]
		if p == dir || strings.HasPrefix(p, dir+"/") {
			mounts = append(mounts, p)
		}
	}
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", m, err)
		}
	}
}
