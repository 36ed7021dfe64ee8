package main

import (
	"errors"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/proxy/redirect"
	"github.com/trellis-mesh/trellis/sidecar"
)

func TestParseInitFlags(t *testing.T) {
	defaults := redirect.Config{OutboundPort: sidecar.OutboundPort, InboundPort: sidecar.InboundPort, ProxyUID: sidecar.ProxyUID}
	tests := map[string]struct {
		args []string
		want redirect.Config
		err  string // in stderr; "" means the flags parse
	}{
		"defaults are the injector's": {args: nil, want: defaults},
		"as the injector writes them": {
			args: []string{"--outbound-port=15001", "--inbound-port=15006", "--proxy-uid=2102", "--exclude-inbound-ports=9090,15020",
				"--exclude-outbound-ports=5432", "--exclude-outbound-cidrs=10.0.0.0/8,fd00::/8"},
			want: redirect.Config{OutboundPort: 15001, InboundPort: 15006, ProxyUID: 2102,
				ExcludeInboundPorts: []uint16{9090, 15020}, ExcludeOutboundPorts: []uint16{5432},
				ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}},
		},
		"other ports": {
			args: []string{"--outbound-port", "25001", "--inbound-port=25006", "--proxy-uid=1000"},
			want: redirect.Config{OutboundPort: 25001, InboundPort: 25006, ProxyUID: 1000},
		},
		"lists with spaces, empty items and repeats": {
			args: []string{"--exclude-inbound-ports= 80, ,443,", "--exclude-inbound-ports=8443"},
			want: with(defaults, func(c *redirect.Config) { c.ExcludeInboundPorts = []uint16{80, 443, 8443} }),
		},
		"an address is a network of one; host bits go": {
			args: []string{"--exclude-outbound-cidrs=169.254.169.254,10.1.2.3/8,fd00::1"},
			want: with(defaults, func(c *redirect.Config) {
				c.ExcludeOutboundCIDRs = []netip.Prefix{
					netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::1/128"),
				}
			}),
		},
		"empty lists": {
			args: []string{"--exclude-outbound-ports=", "--exclude-outbound-cidrs="},
			want: defaults,
		},
		"port 0":           {args: []string{"--outbound-port=0"}, err: `-outbound-port: "0" is not a port number (1-65535)`},
		"port too big":     {args: []string{"--inbound-port=65536"}, err: `-inbound-port: "65536" is not a port number`},
		"port name":        {args: []string{"--exclude-outbound-ports=443,https"}, err: `-exclude-outbound-ports: "https" is not a port number (1-65535); write comma-separated ports such as 15020,9090`},
		"negative UID":     {args: []string{"--proxy-uid=-1"}, err: `-proxy-uid: "-1" is not a user ID; give a number such as 2102`},
		"bad network":      {args: []string{"--exclude-outbound-cidrs=10.0.0.0/33"}, err: `-exclude-outbound-cidrs: "10.0.0.0/33" is not a network; write comma-separated networks such as 10.0.0.0/8`},
		"host name":        {args: []string{"--exclude-outbound-cidrs=metadata.internal"}, err: `"metadata.internal" is not a network`},
		"zone":             {args: []string{"--exclude-outbound-cidrs=fe80::1%eth0"}, err: `"fe80::1%eth0" is not a network`},
		"stray argument":   {args: []string{"--proxy-uid=2102", "iptables"}, err: `unexpected argument "iptables"`},
		"iptables's flags": {args: []string{"-A", "OUTPUT"}, err: "flag provided but not defined: -A"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var stderr strings.Builder
			got, err := parseInitFlags(tc.args, io.Discard, &stderr)
			if tc.err != "" {
				if err == nil || !strings.Contains(stderr.String(), tc.err) {
					t.Errorf("error %v, stderr %q; want stderr to contain %q", err, stderr.String(), tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v: %s", err, stderr.String())
			}
			if !reflect.DeepEqual(got.cfg, tc.want) {
				t.Errorf("config\n got %+v\nwant %+v", got.cfg, tc.want)
			}
		})
	}
}

func with(c redirect.Config, mutate func(*redirect.Config)) redirect.Config {
	mutate(&c)
	return c
}

// install's choice when the kernel refuses the ip6 table. The kernels this
// runs on all have IPv6 nat, so the refusal is played by apply; what the
// kernel writes is tested in TestRedirectInNetns.
func TestInstallWithoutIPv6Nat(t *testing.T) {
	plan, err := redirect.NewPlan(redirect.Config{OutboundPort: 15001, InboundPort: 15006, ProxyUID: 2102})
	if err != nil {
		t.Fatal(err)
	}
	refused := errors.New("conn.Receive: address family not supported by protocol")
	// noIPv6Nat refuses a transaction with an ip6 table, as a kernel
	// without it does, and records what it was asked to write.
	var applied []redirect.Plan
	noIPv6Nat := func(p redirect.Plan) error {
		applied = append(applied, p)
		if len(p.Only(redirect.IPv6).Tables) > 0 {
			return refused
		}
		return nil
	}
	hasIPv6 := func(v6 bool) func() (bool, error) { return func() (bool, error) { return v6, nil } }

	t.Run("IPv4-only pod", func(t *testing.T) {
		applied = nil
		written, note, err := install(plan, noIPv6Nat, hasIPv6(false))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(written, plan.Only(redirect.IPv4)) || len(applied) != 2 {
			t.Errorf("wrote %v after %d attempts, want the IPv4 table after 2", written, len(applied))
		}
		if !strings.Contains(note, "table ip6 trellis not written") || !strings.Contains(note, refused.Error()) {
			t.Errorf("note %q does not say what happened", note)
		}
	})
	t.Run("pod with IPv6", func(t *testing.T) {
		applied = nil
		_, _, err := install(plan, noIPv6Nat, hasIPv6(true))
		if err == nil || !errors.Is(err, refused) || !strings.Contains(err.Error(), "the pod has an IPv6 address") {
			t.Errorf("error %v, want the refusal and why it matters", err)
		}
		if len(applied) != 1 {
			t.Errorf("%d attempts, want 1: nothing is written without IPv6", len(applied))
		}
	})
	t.Run("kernel with IPv6 nat", func(t *testing.T) {
		written, note, err := install(plan, func(redirect.Plan) error { return nil }, hasIPv6(true))
		if err != nil || note != "" || !reflect.DeepEqual(written, plan) {
			t.Errorf("install = %v, %q, %v; want the whole plan", written, note, err)
		}
	})
}

func TestOtherRules(t *testing.T) {
	if got := otherRules(func() []string { return nil }, []string{"ip trellis", "ip6 trellis"}); got != "" {
		t.Errorf("only Trellis's tables: %q, want nothing", got)
	}
	got := otherRules(func() []string { return []string{"ip nat"} }, []string{"ip trellis", "ip nat"})
	if !strings.Contains(got, "nftables ip nat, iptables-legacy ip nat") {
		t.Errorf("got %q", got)
	}
}
