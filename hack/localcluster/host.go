package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// run runs a command and returns its trimmed output; the error carries it.
func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, s)
	}
	return s, nil
}

// preflight says, before anything changes, why this machine cannot run the cluster.
func (c *cluster) preflight() error {
	if os.Geteuid() != 0 {
		return errors.New("the local cluster needs root: it runs the kubelet and containerd, and programs bridges and iptables")
	}
	if _, err := os.Stat("/sys/fs/cgroup/cpu"); err != nil {
		if _, err2 := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err2 != nil {
			return errors.New("no cgroup filesystem under /sys/fs/cgroup: the kubelet cannot run here")
		}
	}
	var missing []string
	for _, b := range []string{"containerd", "runc", "ctr", "iptables", "ip"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	for _, p := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback", "/usr/lib/cni/portmap"} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: run `make cluster-deps` (apt-get install containerd runc containernetworking-plugins iptables iproute2)", strings.Join(missing, ", "))
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"} {
		if _, err := os.Stat(filepath.Join(c.bin, b)); err != nil {
			return fmt.Errorf("%s is not in %s: build it with hack/build-k8s.sh", b, c.bin)
		}
	}
	return nil
}

// sysctls the cluster needs. Their previous values are saved and restored by down.
var sysctls = map[string]string{
	"net/ipv4/ip_forward":                 "1",
	"net/bridge/bridge-nf-call-iptables":  "1",
	"net/bridge/bridge-nf-call-ip6tables": "1",
}

func (c *cluster) setSysctls() error {
	saved := c.path("sysctl.orig")
	if _, err := os.Stat(saved); errors.Is(err, os.ErrNotExist) {
		var b strings.Builder
		for k := range sysctls {
			v, err := os.ReadFile(filepath.Join("/proc/sys", k))
			if err != nil {
				return fmt.Errorf("reading sysctl %s: %w", k, err)
			}
			fmt.Fprintf(&b, "%s=%s\n", k, strings.TrimSpace(string(v)))
		}
		if err := os.WriteFile(saved, []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	for k, v := range sysctls {
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
			return fmt.Errorf("setting sysctl %s: %w", k, err)
		}
	}
	return nil
}

func (c *cluster) restoreSysctls() error {
	saved := c.path("sysctl.orig")
	b, err := os.ReadFile(saved)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
			return fmt.Errorf("restoring sysctl %s: %w", k, err)
		}
	}
	return os.Remove(saved)
}

// setupNetwork puts the node's IP on a bridge of its own, and keeps pod
// traffic on the machine: pods may reach each other, the node and Services,
// and nothing else.
func setupNetwork() error {
	if _, err := run("ip", "link", "show", nodeBridge); err != nil {
		if _, err := run("ip", "link", "add", nodeBridge, "type", "bridge"); err != nil {
			return err
		}
	}
	if out, _ := run("ip", "-4", "addr", "show", "dev", nodeBridge); !strings.Contains(out, nodeIP+"/") {
		if _, err := run("ip", "addr", "add", nodeIP+"/24", "dev", nodeBridge); err != nil {
			return err
		}
	}
	if _, err := run("ip", "link", "set", nodeBridge, "up"); err != nil {
		return err
	}
	const chain = "TRELLIS-FORWARD"
	if _, err := run("iptables", "-w", "-N", chain); err != nil && !strings.Contains(err.Error(), "exists") {
		return err
	}
	if _, err := run("iptables", "-w", "-F", chain); err != nil {
		return err
	}
	for _, rule := range [][]string{
		{"-d", podCIDR, "-j", "ACCEPT"},
		{"-s", podCIDR, "-d", nodeCIDR, "-j", "ACCEPT"},
		{"-s", podCIDR, "-d", serviceCIDR, "-j", "ACCEPT"},
		{"-s", podCIDR, "-j", "DROP"},
	} {
		if _, err := run("iptables", append([]string{"-w", "-A", chain}, rule...)...); err != nil {
			return err
		}
	}
	if _, err := run("iptables", "-w", "-C", "FORWARD", "-j", chain); err != nil {
		if _, err := run("iptables", "-w", "-I", "FORWARD", "1", "-j", chain); err != nil {
			return err
		}
	}
	return nil
}

// ownChainPrefixes are the iptables chains of this cluster: its own, kube-proxy's
// and the kubelet's, and the CNI plugins'. No other Kubernetes runs here.
var ownChainPrefixes = []string{"TRELLIS-", "KUBE-", "CNI-"}

func isOwnChain(name string) bool {
	for _, p := range ownChainPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// cleanIptables removes every rule that jumps to one of the cluster's chains,
// then the chains, in every table, for IPv4 and IPv6.
func cleanIptables() error {
	var errs []error
	for _, bin := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(bin); err != nil {
			continue
		}
		for _, table := range []string{"filter", "nat", "mangle"} {
			out, err := run(bin, "-w", "-t", table, "-S")
			if err != nil {
				errs = append(errs, err)
				continue
			}
			var chains []string
			for _, line := range strings.Split(out, "\n") {
				f := splitRule(line)
				switch {
				case len(f) >= 2 && f[0] == "-N" && isOwnChain(f[1]):
					chains = append(chains, f[1])
				case len(f) >= 2 && f[0] == "-A" && !isOwnChain(f[1]) && jumpsToOwn(f):
					// A rule in a built-in chain that leads into ours.
					f[0] = "-D"
					if _, err := run(bin, append([]string{"-w", "-t", table}, f...)...); err != nil {
						errs = append(errs, err)
					}
				}
			}
			for _, ch := range chains {
				if _, err := run(bin, "-w", "-t", table, "-F", ch); err != nil {
					errs = append(errs, err)
				}
			}
			for _, ch := range chains {
				if _, err := run(bin, "-w", "-t", table, "-X", ch); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// splitRule splits a line of `iptables -S` into arguments, keeping the
// double-quoted ones (comments) whole, so the rule can be deleted with -D.
func splitRule(line string) []string {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == '\\' && inQuote && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case ch == '"':
			inQuote, have = !inQuote, true
		case ch == ' ' && !inQuote:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(ch)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return args
}

func jumpsToOwn(fields []string) bool {
	for i, f := range fields {
		if (f == "-j" || f == "-g") && i+1 < len(fields) && isOwnChain(fields[i+1]) {
			return true
		}
	}
	return false
}

// ownIptablesRules lists what cleanIptables would remove: for the down test.
func ownIptablesRules() []string {
	var left []string
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat", "mangle"} {
			out, err := run(bin, "-w", "-t", table, "-S")
			if err != nil {
				continue
			}
			for _, line := range strings.Split(out, "\n") {
				f := splitRule(line)
				if len(f) >= 2 && (isOwnChain(f[1]) || jumpsToOwn(f)) {
					left = append(left, bin+" -t "+table+" "+line)
				}
			}
		}
	}
	return left
}

// unmountUnder detaches every mount below the given directories, deepest
// first: the kubelet's volumes, containerd's rootfs and shm mounts.
func unmountUnder(dirs ...string) error {
	targets := mountsUnder(dirs...)
	sort.Slice(targets, func(i, j int) bool { return len(targets[i]) > len(targets[j]) })
	var errs []error
	for _, t := range targets {
		if err := unix.Unmount(t, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}

// mountsUnder lists the mount points at or below dirs.
func mountsUnder(dirs ...string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var found []string
	for _, line := range bytes.Split(b, []byte("\n")) {
		fields := strings.Fields(string(line))
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		for _, d := range dirs {
			if mp == d || strings.HasPrefix(mp, d+"/") {
				found = append(found, mp)
			}
		}
	}
	return found
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// removeCgroups removes the kubelet's and containerd's cgroups once their
// processes are gone, deepest first, in every v1 hierarchy.
func removeCgroups() error {
	var dirs []string
	hier, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hier {
		for _, top := range []string{"kubepods", "kubepods.slice"} {
			root := filepath.Join(h, top)
			_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
		}
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var errs []error
	for _, d := range dirs {
		if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}
