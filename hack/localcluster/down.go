package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// down stops the cluster and undoes what up changed on the host. It keeps
// the certificates and containerd's images, so the next up is fast; it drops
// etcd's data and the kubelet's, so the next cluster starts empty.
func (c *cluster) down(ctx context.Context) error {
	pr := newProgress()
	comps := c.components(nil)
	var errs []error

	// Nothing may restart pods while they are removed.
	for _, name := range []string{"kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager"} {
		if err := c.stop(name, comps[name].bin, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	pr.step("node components stopped")

	netns, err := c.removeContainers()
	if err != nil {
		errs = append(errs, err)
	}
	pr.step("containers removed")

	for _, name := range []string{"containerd", "kube-apiserver", "etcd"} {
		if err := c.stop(name, comps[name].bin, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	pr.step("containerd, kube-apiserver and etcd stopped")

	for _, ns := range netns {
		if _, err := os.Stat(ns); err == nil {
			if _, err := run("ip", "netns", "delete", filepath.Base(ns)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := unmountUnder(c.state, runDir); err != nil {
		errs = append(errs, err)
	}
	if err := cleanIptables(); err != nil {
		errs = append(errs, err)
	}
	for _, br := range []string{podBridge, nodeBridge} {
		if _, err := run("ip", "link", "show", br); err == nil {
			if _, err := run("ip", "link", "delete", br); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := removeCgroups(); err != nil {
		errs = append(errs, err)
	}
	if err := c.restoreSysctls(); err != nil {
		errs = append(errs, err)
	}
	for _, d := range []string{runDir, c.path("etcd"), c.path("kubelet", "root"), c.path("cni", "ipam")} {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	pr.step("network namespaces, mounts, iptables rules, bridges, cgroups and sysctls undone")
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return c.checkClean()
}

// removeContainers kills and deletes every container of the cluster's
// containerd, so its shims exit, and returns the network namespaces of the
// pod sandboxes for deletion.
func (c *cluster) removeContainers() ([]string, error) {
	if _, ok := c.running("containerd", "containerd"); !ok {
		return nil, nil
	}
	out, err := c.ctr("containers", "ls", "-q")
	if err != nil {
		return nil, err
	}
	var netns []string
	var errs []error
	for _, id := range strings.Fields(out) {
		if info, err := c.ctr("containers", "info", id); err == nil {
			netns = append(netns, networkNamespace(info)...)
		}
		_, _ = c.ctr("tasks", "kill", "--signal", "SIGKILL", id)
		for i := 0; i < 20; i++ {
			if _, err := c.ctr("tasks", "delete", id); err == nil || strings.Contains(err.Error(), "not found") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := c.ctr("containers", "delete", id); err != nil {
			errs = append(errs, err)
		}
	}
	return netns, errors.Join(errs...)
}

// networkNamespace reads the network namespace path from `ctr containers info`.
func networkNamespace(info string) []string {
	var ci struct {
		Spec struct {
			Linux struct {
				Namespaces []struct {
					Type string `json:"type"`
					Path string `json:"path"`
				} `json:"namespaces"`
			} `json:"linux"`
		} `json:"Spec"`
	}
	if json.Unmarshal([]byte(info), &ci) != nil {
		return nil
	}
	var paths []string
	for _, ns := range ci.Spec.Linux.Namespaces {
		if ns.Type == "network" && strings.HasPrefix(ns.Path, "/var/run/netns/") {
			paths = append(paths, ns.Path)
		}
	}
	return paths
}

// checkClean lists what of the cluster is left on the host; none is the goal.
func (c *cluster) checkClean() error {
	var left []string
	comps := c.components(nil)
	for _, name := range startOrder {
		if pid, ok := c.running(name, comps[name].bin); ok {
			left = append(left, fmt.Sprintf("process %s (pid %d)", name, pid))
		}
	}
	for _, m := range mountsUnder(c.state, runDir) {
		left = append(left, "mount "+m)
	}
	for _, br := range []string{podBridge, nodeBridge} {
		if _, err := run("ip", "link", "show", br); err == nil {
			left = append(left, "bridge "+br)
		}
	}
	if out, err := run("ip", "-o", "link", "show", "type", "veth"); err == nil && strings.TrimSpace(out) != "" {
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "master "+podBridge) {
				left = append(left, "veth "+l)
			}
		}
	}
	// Pod sandboxes' namespaces: containerd's CRI names them cni-<uuid>, and
	// no other container runtime runs on these machines.
	if entries, err := os.ReadDir("/var/run/netns"); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "cni-") {
				left = append(left, "network namespace "+e.Name())
			}
		}
	}
	if cg, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods"); len(cg) > 0 {
		left = append(left, "cgroups "+strings.Join(cg, " "))
	}
	for _, r := range ownIptablesRules() {
		left = append(left, "iptables "+r)
	}
	if _, err := os.Stat(runDir); err == nil {
		left = append(left, "directory "+runDir)
	}
	if _, err := os.Stat(c.path("sysctl.orig")); err == nil {
		left = append(left, "sysctls not restored")
	}
	if len(left) > 0 {
		return fmt.Errorf("left on the host after down:\n  %s", strings.Join(left, "\n  "))
	}
	fmt.Println("nothing of the cluster is left on the host")
	return nil
}
