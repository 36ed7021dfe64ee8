package redirect

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/google/nftables/expr"
)

// injected is what the injector passes for a pod with one excluded inbound
// port beside the admin port, one excluded outbound port and two networks.
func injected() Config {
	return Config{
		OutboundPort:         15001,
		InboundPort:          15006,
		ProxyUID:             2102,
		ExcludeInboundPorts:  []uint16{15020, 9090},
		ExcludeOutboundPorts: []uint16{5432},
		ExcludeOutboundCIDRs: []netip.Prefix{
			netip.MustParsePrefix("fd00::/8"),
			netip.MustParsePrefix("169.254.169.254/32"),
			netip.MustParsePrefix("10.1.2.3/8"), // host bits are dropped
		},
	}
}

func TestPlanString(t *testing.T) {
	p, err := NewPlan(injected())
	if err != nil {
		t.Fatal(err)
	}
	want := `table ip trellis {
	chain prerouting {
		type nat hook prerouting priority -100; policy accept;
		iifname "lo" counter return
		tcp dport 9090 counter return
		tcp dport 15020 counter return
		meta l4proto tcp counter redirect to :15006
	}

	chain output {
		type nat hook output priority -100; policy accept;
		ip saddr 127.0.0.6 counter return
		ip daddr 127.0.0.0/8 counter return
		meta skuid 2102 oifname "lo" counter redirect to :15006
		meta skuid 2102 counter return
		tcp dport 5432 counter return
		ip daddr 10.0.0.0/8 counter return
		ip daddr 169.254.169.254 counter return
		meta l4proto tcp counter redirect to :15001
	}
}
table ip6 trellis {
	chain prerouting {
		type nat hook prerouting priority -100; policy accept;
		iifname "lo" counter return
		tcp dport 9090 counter return
		tcp dport 15020 counter return
		meta l4proto tcp counter redirect to :15006
	}

	chain output {
		type nat hook output priority -100; policy accept;
		meta skuid 2102 counter return
		ip6 daddr ::1 counter return
		tcp dport 5432 counter return
		ip6 daddr fd00::/8 counter return
		meta l4proto tcp counter redirect to :15001
	}
}
`
	if got := p.String(); got != want {
		t.Errorf("plan:\n%s\nwant:\n%s", got, want)
	}
}

func TestPlanSummary(t *testing.T) {
	p, err := NewPlan(Config{OutboundPort: 15001, InboundPort: 15006, ProxyUID: 2102, ExcludeInboundPorts: []uint16{15020}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"table ip trellis, chain prerouting: inbound TCP goes to port 15006, except from interface lo, to port 15020",
		"table ip trellis, chain output: outbound TCP goes to port 15001, except from 127.0.0.6/32, to 127.0.0.0/8, from UID 2102; from UID 2102 and out of interface lo to port 15006",
		"table ip6 trellis, chain prerouting: inbound TCP goes to port 15006, except from interface lo, to port 15020",
		"table ip6 trellis, chain output: outbound TCP goes to port 15001, except from UID 2102, to ::1/128",
	}
	if got := p.Summary(); !reflect.DeepEqual(got, want) {
		t.Errorf("summary:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The same flags in another order, or repeated, make the same plan: a
// re-run of trellis-init must write the same rules.
func TestPlanIsCanonical(t *testing.T) {
	a, err := NewPlan(injected())
	if err != nil {
		t.Fatal(err)
	}
	c := injected()
	c.ExcludeInboundPorts = []uint16{9090, 15020, 9090}
	c.ExcludeOutboundCIDRs = []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("169.254.169.254/32"),
		netip.MustParsePrefix("fd00::/8"),
		netip.MustParsePrefix("10.9.9.9/8"),
	}
	b, err := NewPlan(c)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("plans differ:\n%s\n%s", a, b)
	}
}

func TestPlanOnly(t *testing.T) {
	p, err := NewPlan(injected())
	if err != nil {
		t.Fatal(err)
	}
	v4 := p.Only(IPv4)
	if len(v4.Tables) != 1 || v4.Tables[0].Family != IPv4 {
		t.Fatalf("Only(IPv4) = %v", v4)
	}
	if strings.Contains(v4.String(), "ip6") {
		t.Errorf("IPv4 plan mentions ip6:\n%s", v4)
	}
}

func TestValidate(t *testing.T) {
	tests := map[string]struct {
		mutate func(*Config)
		want   string // in the error; "" means valid
	}{
		"injected":             {func(*Config) {}, ""},
		"no outbound port":     {func(c *Config) { c.OutboundPort = 0 }, "--outbound-port is 0"},
		"no inbound port":      {func(c *Config) { c.InboundPort = 0 }, "--inbound-port is 0"},
		"same ports":           {func(c *Config) { c.InboundPort = c.OutboundPort }, "--outbound-port and --inbound-port are both 15001"},
		"root":                 {func(c *Config) { c.ProxyUID = 0 }, "--proxy-uid is 0"},
		"excluded port 0":      {func(c *Config) { c.ExcludeOutboundPorts = []uint16{0} }, "port 0"},
		"zero-value network":   {func(c *Config) { c.ExcludeOutboundCIDRs = []netip.Prefix{{}} }, "--exclude-outbound-cidrs"},
		"everything excluded":  {func(c *Config) { c.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")} }, ""},
		"no exclusions at all": {func(c *Config) { *c = Config{OutboundPort: 1, InboundPort: 2, ProxyUID: 3} }, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := injected()
			tc.mutate(&c)
			_, err := NewPlan(c)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestRuleExprs(t *testing.T) {
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	count := &expr.Counter{}
	tcp := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{6}},
	}
	tests := map[string]struct {
		rule   Rule
		family Family
		want   []expr.Any
	}{
		"redirect": {
			rule: Rule{Match: AnyTCP{}, RedirectTo: 15001}, family: IPv4,
			want: append(tcp[:2:2], count,
				&expr.Immediate{Register: 1, Data: []byte{0x3a, 0x99}},
				&expr.Redir{RegisterProtoMin: 1, RegisterProtoMax: 1, Flags: 2}),
		},
		"port": {
			rule: Rule{Match: DestinationPort{Port: 15020}}, family: IPv6,
			want: append(tcp[:2:2],
				&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x3a, 0xac}},
				count, ret),
		},
		"interface": {
			rule: Rule{Match: InputInterface{Name: "lo"}}, family: IPv4,
			want: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte("lo\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")},
				count, ret,
			},
		},
		"IPv4 network": {
			rule: Rule{Match: DestinationNet{Prefix: netip.MustParsePrefix("10.128.0.0/9")}}, family: IPv4,
			want: []expr.Any{
				&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{0xff, 0x80, 0, 0}, Xor: []byte{0, 0, 0, 0}},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{10, 128, 0, 0}},
				count, ret,
			},
		},
		"IPv6 address": {
			// A whole address needs no mask.
			rule: Rule{Match: DestinationNet{Prefix: netip.MustParsePrefix("::1/128")}}, family: IPv6,
			want: []expr.Any{
				&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: netip.MustParseAddr("::1").AsSlice()},
				count, ret,
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tc.rule.Exprs(tc.family); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s:\n got %#v\nwant %#v", tc.rule, got, tc.want)
			}
		})
	}
}
