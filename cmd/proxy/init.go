package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"

	"github.com/google/nftables"

	"github.com/trellis-mesh/trellis/proxy/redirect"
	"github.com/trellis-mesh/trellis/sidecar"
)

const initSynopsis = `Redirects the pod's TCP traffic to the proxy: inbound connections to
--inbound-port, the app's outbound connections to --outbound-port, except
the proxy's own (--proxy-uid) and the excluded ports and networks. Writes
nftables tables "ip trellis" and "ip6 trellis", replacing earlier ones, in
one transaction. Needs NET_ADMIN in the pod's network namespace.`

// initFlags are proxy init's command line.
type initFlags struct {
	cfg    redirect.Config
	dryRun bool
}

func parseInitFlags(args []string, stdout, stderr io.Writer) (initFlags, error) {
	out, in, uid := portFlag(sidecar.OutboundPort), portFlag(sidecar.InboundPort), uidFlag(sidecar.ProxyUID)
	var excludeIn, excludeOut portList
	var cidrs cidrList
	var f initFlags

	fs := newFlagSet("init", initSynopsis)
	fs.Var(&out, "outbound-port", "port of the proxy's outbound listener")
	fs.Var(&in, "inbound-port", "port of the proxy's inbound listener")
	fs.Var(&uid, "proxy-uid", "UID the proxy runs as; its connections are not redirected")
	fs.Var(&excludeIn, "exclude-inbound-ports", "comma-separated pod ports whose inbound connections are not redirected (the proxy's admin port is one)")
	fs.Var(&excludeOut, "exclude-outbound-ports", "comma-separated destination ports whose outbound connections are not redirected")
	fs.Var(&cidrs, "exclude-outbound-cidrs", "comma-separated destination networks whose outbound connections are not redirected, such as 169.254.169.254/32")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print the rules, as nft would list them, instead of writing them")
	if err := parse(fs, args, stdout, stderr); err != nil {
		return initFlags{}, err
	}
	f.cfg = redirect.Config{
		OutboundPort:         uint16(out),
		InboundPort:          uint16(in),
		ProxyUID:             uint32(uid),
		ExcludeInboundPorts:  excludeIn,
		ExcludeOutboundPorts: excludeOut,
		ExcludeOutboundCIDRs: cidrs,
	}
	return f, nil
}

func initCmd(args []string, stdout, stderr io.Writer) int {
	f, err := parseInitFlags(args, stdout, stderr)
	if err != nil {
		return exitCode(err)
	}
	plan, err := redirect.NewPlan(f.cfg)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "proxy init: %v\n", err)
		return exitUsage
	}
	if f.dryRun {
		_, _ = fmt.Fprint(stdout, plan)
		return 0
	}
	conn, err := nftables.New()
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "proxy init: opening netlink: %v\n", err)
		return exitFailure
	}
	apply := func(p redirect.Plan) error { return redirect.Apply(conn, p) }
	written, note, err := install(plan, apply, podHasIPv6)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "proxy init: %v\n", err)
		return exitFailure
	}
	for _, line := range written.Summary() {
		_, _ = fmt.Fprintln(stdout, line)
	}
	if note != "" {
		_, _ = fmt.Fprintln(stdout, note)
	}
	tables, _ := conn.ListTables()
	var nft []string
	for _, t := range tables {
		nft = append(nft, familyName(t.Family)+" "+t.Name)
	}
	if line := otherRules(readLegacyTables, nft); line != "" {
		_, _ = fmt.Fprintln(stdout, line)
	}
	return 0
}

// otherRules says which other packet rules the pod's network namespace
// holds besides Trellis's: iptables-legacy tables (x_tables, which the
// kernel lists per namespace in /proc/net/ip*_tables_names) and nftables
// tables, such as iptables-nft's. Trellis writes nftables directly (the
// image has no iptables binary); legacy and nftables rules both run, so a
// rule of another init container that redirects the same traffic elsewhere
// may take it first. Empty when there are none.
func otherRules(legacy func() []string, nftTables []string) string {
	var others []string
	for _, t := range nftTables {
		if !strings.HasSuffix(t, " "+redirect.TableName) {
			others = append(others, "nftables "+t)
		}
	}
	for _, t := range legacy() {
		others = append(others, "iptables-legacy "+t)
	}
	if len(others) == 0 {
		return ""
	}
	return "other packet rules in this network namespace run alongside Trellis's (one that redirects the same traffic elsewhere may take it first): " + strings.Join(others, ", ")
}

// readLegacyTables lists the iptables-legacy tables of this network
// namespace, as "ip nat" or "ip6 filter".
func readLegacyTables() []string {
	var out []string
	for family, file := range map[string]string{"ip": "/proc/net/ip_tables_names", "ip6": "/proc/net/ip6_tables_names"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, name := range strings.Fields(string(b)) {
			out = append(out, family+" "+name)
		}
	}
	sort.Strings(out)
	return out
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	default:
		return fmt.Sprintf("family-%d", f)
	}
}

// install applies plan and returns what it wrote. A kernel without IPv6
// nat refuses the ip6 table, and with it the whole transaction; when the
// pod has no IPv6 address that costs nothing, so the IPv4 table alone is
// written and note says why. A pod with IPv6 must have both, or its IPv6
// traffic would bypass the proxy.
func install(plan redirect.Plan, apply func(redirect.Plan) error, hasIPv6 func() (bool, error)) (written redirect.Plan, note string, err error) {
	err = apply(plan)
	if err == nil {
		return plan, "", nil
	}
	if errors.Is(err, os.ErrPermission) {
		return redirect.Plan{}, "", fmt.Errorf("%w: writing nftables rules needs the NET_ADMIN capability in the pod's network namespace, which the injector gives %s", err, sidecar.InitContainerName)
	}
	v4 := plan.Only(redirect.IPv4)
	if len(v4.Tables) == len(plan.Tables) {
		return redirect.Plan{}, "", err
	}
	v6, v6err := hasIPv6()
	switch {
	case v6err != nil:
		return redirect.Plan{}, "", fmt.Errorf("%w (and listing the pod's addresses to see whether IPv6 matters failed: %w)", err, v6err)
	case v6:
		return redirect.Plan{}, "", fmt.Errorf("%w; the pod has an IPv6 address, so IPv6 must be redirected too: does the node's kernel have nf_tables IPv6 nat?", err)
	}
	if err4 := apply(v4); err4 != nil {
		return redirect.Plan{}, "", err4
	}
	note = fmt.Sprintf("table ip6 %s not written: the kernel refused it (%v); the pod has no IPv6 address, so only IPv4 is redirected", redirect.TableName, err)
	return v4, note, nil
}

// podHasIPv6 reports whether the pod has an IPv6 address that traffic can
// use: not loopback and not link-local, which every interface gets when the
// kernel has IPv6 at all.
func podHasIPv6() (bool, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if ok && n.IP.To4() == nil && n.IP.IsGlobalUnicast() {
			return true, nil
		}
	}
	return false, nil
}
