package redirect

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// TableName names the table trellis-init owns in each family. Applying a
// plan replaces the whole table, so nothing else may write to it.
const TableName = "trellis"

// Config is what trellis-init is told on its command line (proxy init):
// where the proxy listens and which traffic it must leave alone. Its errors
// name the flags, since that is where a wrong value comes from.
type Config struct {
	// OutboundPort receives the app's redirected outbound connections.
	OutboundPort uint16
	// InboundPort receives the pod's redirected inbound connections.
	InboundPort uint16
	// ProxyUID owns the proxy's sockets; its connections are never
	// redirected, which is how the proxy reaches the destinations it was
	// redirected from.
	ProxyUID uint32
	// ExcludeInboundPorts are pod ports whose inbound connections go
	// straight to the app (the proxy's admin port is one).
	ExcludeInboundPorts []uint16
	// ExcludeOutboundPorts are destination ports the app reaches directly.
	ExcludeOutboundPorts []uint16
	// ExcludeOutboundCIDRs are destination networks the app reaches
	// directly, IPv4 and IPv6 mixed.
	ExcludeOutboundCIDRs []netip.Prefix
}

// Validate reports the first thing in c that would make rules that do not
// work, naming the flag and the fix.
func (c Config) Validate() error {
	switch {
	case c.OutboundPort == 0:
		return fmt.Errorf("--outbound-port is 0; give the port the proxy's outbound listener uses, such as 15001")
	case c.InboundPort == 0:
		return fmt.Errorf("--inbound-port is 0; give the port the proxy's inbound listener uses, such as 15006")
	case c.OutboundPort == c.InboundPort:
		return fmt.Errorf("--outbound-port and --inbound-port are both %d; the proxy tells the two directions apart by port, so give two ports", c.OutboundPort)
	case c.ProxyUID == 0:
		// Every root process would bypass the proxy, silently.
		return fmt.Errorf("--proxy-uid is 0 (root), which would let every root process bypass the proxy; give the UID the proxy runs as, such as 2102")
	}
	for _, p := range slices.Concat(c.ExcludeInboundPorts, c.ExcludeOutboundPorts) {
		if p == 0 {
			return fmt.Errorf("port 0 in --exclude-inbound-ports or --exclude-outbound-ports; ports are 1-65535")
		}
	}
	for _, p := range c.ExcludeOutboundCIDRs {
		if !p.IsValid() {
			return fmt.Errorf("--exclude-outbound-cidrs holds an invalid network; write networks such as 10.0.0.0/8 or fd00::/8")
		}
	}
	return nil
}

// Family is a netfilter address family; each has its own table.
type Family uint8

const (
	IPv4 Family = iota + 1
	IPv6
)

// String is the family as nft names it.
func (f Family) String() string {
	switch f {
	case IPv4:
		return "ip"
	case IPv6:
		return "ip6"
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// Hook is where in the kernel's packet path a chain runs.
type Hook uint8

const (
	// Prerouting sees packets arriving from the network: inbound.
	Prerouting Hook = iota + 1
	// Output sees packets that local processes send: outbound.
	Output
)

func (h Hook) String() string {
	switch h {
	case Prerouting:
		return "prerouting"
	case Output:
		return "output"
	}
	return fmt.Sprintf("hook(%d)", uint8(h))
}

// natPriority is nft's "dstnat": the nat chains run after conntrack, which
// records the original destination that the proxy reads back with
// SO_ORIGINAL_DST.
const natPriority = -100

// Plan is the rules trellis-init writes: a table per family.
type Plan struct {
	Tables []Table
}

// Table is one family's table, named TableName.
type Table struct {
	Family Family
	Chains []Chain
}

// Chain is a nat base chain. Its rules are tried in order: the first
// matching one that returns leaves the connection alone, and the last
// redirects what is left. Only a connection's first packet passes through
// nat chains (conntrack handles the rest), so the rules cost nothing per
// packet and each exception gets its own rule rather than a set: that reads
// plainly in `nft list table` and needs no set bookkeeping.
type Chain struct {
	Hook     Hook
	Priority int32
	Rules    []Rule
}

// Name is the chain's name in its table; one chain per hook.
func (c Chain) Name() string { return c.Hook.String() }

// Rule matches on one thing and then returns or redirects. Every rule
// counts what it matched, as iptables did, so `nft list table ip trellis`
// on the node shows which rules a pod's traffic takes.
type Rule struct {
	Match Match
	// RedirectTo is the local port the matched connections go to; 0
	// returns them from the chain unchanged.
	RedirectTo uint16
}

// Match is what a rule matches; the types below are all there is.
type Match interface {
	// String is the match in nft's syntax.
	String() string
	// describe is the match as an exception in trellis-init's log.
	describe() string
}

// AnyTCP matches every TCP packet.
type AnyTCP struct{}

// InputInterface matches packets that arrive on the named interface.
type InputInterface struct{ Name string }

// SocketUID matches packets sent by sockets that UID owns.
type SocketUID struct{ UID uint32 }

// DestinationPort matches TCP packets to a port.
type DestinationPort struct{ Port uint16 }

// DestinationNet matches packets to a network of the table's family.
type DestinationNet struct{ Prefix netip.Prefix }

// OutputInterface matches packets that leave on the named interface.
type OutputInterface struct{ Name string }

// SourceNet matches packets from a network of the table's family.
type SourceNet struct{ Prefix netip.Prefix }

// All matches packets that every one of its matches matches.
type All []Match

func (AnyTCP) String() string            { return "meta l4proto tcp" }
func (m InputInterface) String() string  { return fmt.Sprintf("iifname %q", m.Name) }
func (m SocketUID) String() string       { return fmt.Sprintf("meta skuid %d", m.UID) }
func (m DestinationPort) String() string { return fmt.Sprintf("tcp dport %d", m.Port) }
func (m DestinationNet) String() string  { return addrMatch("daddr", m.Prefix) }
func (m OutputInterface) String() string { return fmt.Sprintf("oifname %q", m.Name) }
func (m SourceNet) String() string       { return addrMatch("saddr", m.Prefix) }
func (m All) String() string {
	s := make([]string, len(m))
	for i, x := range m {
		s[i] = x.String()
	}
	return strings.Join(s, " ")
}

func addrMatch(field string, p netip.Prefix) string {
	fam := IPv4
	if p.Addr().Is6() {
		fam = IPv6
	}
	if p.IsSingleIP() {
		return fmt.Sprintf("%s %s %s", fam, field, p.Addr())
	}
	return fmt.Sprintf("%s %s %s", fam, field, p)
}

func (AnyTCP) describe() string            { return "all TCP" }
func (m InputInterface) describe() string  { return "from interface " + m.Name }
func (m SocketUID) describe() string       { return fmt.Sprintf("from UID %d", m.UID) }
func (m DestinationPort) describe() string { return fmt.Sprintf("to port %d", m.Port) }
func (m DestinationNet) describe() string  { return "to " + m.Prefix.String() }
func (m OutputInterface) describe() string { return "out of interface " + m.Name }
func (m SourceNet) describe() string       { return "from " + m.Prefix.String() }
func (m All) describe() string {
	s := make([]string, len(m))
	for i, x := range m {
		s[i] = x.describe()
	}
	return strings.Join(s, " and ")
}

// String is the rule in nft's syntax.
func (r Rule) String() string {
	if r.RedirectTo == 0 {
		return r.Match.String() + " counter return"
	}
	return fmt.Sprintf("%s counter redirect to :%d", r.Match, r.RedirectTo)
}

// InboundSource is the address the proxy dials its pod's app from over
// IPv4, as Istio's does, so that the output chain tells those connections
// from the outbound proxy's calls to the pod itself (see DialApp).
var InboundSource = netip.MustParseAddr("127.0.0.6")

// DialApp dials addr, an address of the proxy's own pod, with d: over IPv4
// from InboundSource, which the output chain lets by. Every connection of
// the proxy to its app (inbound requests, relayed connections, probes) must
// be dialed so: from the pod's own address, the chain would send it to the
// inbound proxy, round and round.
func DialApp(ctx context.Context, d net.Dialer, network, addr string) (net.Conn, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().Unmap().Is4() {
		d.LocalAddr = &net.TCPAddr{IP: InboundSource.AsSlice()}
	}
	return d.DialContext(ctx, network, addr)
}

// loopback is each family's loopback network. Connections to it stay in the
// pod and are not the mesh's business; redirecting them would also catch
// the app's connections to the proxy's own admin port.
var loopback = map[Family]netip.Prefix{
	IPv4: netip.MustParsePrefix("127.0.0.0/8"),
	IPv6: netip.MustParsePrefix("::1/128"),
}

// NewPlan computes the rules for c: the same rules for IPv4 and IPv6, each
// with the excluded networks of its family. Lists are sorted and deduplicated,
// so the same flags in any order make the same plan.
func NewPlan(c Config) (Plan, error) {
	if err := c.Validate(); err != nil {
		return Plan{}, err
	}
	inPorts := sortedUnique(c.ExcludeInboundPorts, cmp.Compare[uint16])
	outPorts := sortedUnique(c.ExcludeOutboundPorts, cmp.Compare[uint16])
	masked := make([]netip.Prefix, len(c.ExcludeOutboundCIDRs))
	for i, p := range c.ExcludeOutboundCIDRs {
		masked[i] = p.Masked()
	}
	nets := sortedUnique(masked, comparePrefixes)

	var plan Plan
	for _, fam := range []Family{IPv4, IPv6} {
		// Inbound: everything that arrives from the network. Connections
		// over lo were sent by a process in the pod, and the output chain
		// has had its say about them.
		in := []Rule{{Match: InputInterface{Name: "lo"}}}
		for _, p := range inPorts {
			in = append(in, Rule{Match: DestinationPort{Port: p}})
		}
		in = append(in, Rule{Match: AnyTCP{}, RedirectTo: c.InboundPort})

		// Outbound: everything the pod's processes send, except the
		// proxy's own connections, which would otherwise come back to it.
		var out []Rule
		if fam == IPv4 {
			// A call of the pod to itself (its own Service, whose balancer
			// picked this pod): the outbound proxy's connection to the
			// pod's own address leaves on lo, where the prerouting chain
			// lets it by; it goes to the inbound proxy instead, as a peer
			// proxy's would. The inbound proxy dials the app from
			// InboundSource, which is let by rather than sent round again.
			out = append(out,
				Rule{Match: SourceNet{Prefix: netip.PrefixFrom(InboundSource, 32)}},
				Rule{Match: DestinationNet{Prefix: loopback[fam]}},
				Rule{Match: All{SocketUID{UID: c.ProxyUID}, OutputInterface{Name: "lo"}}, RedirectTo: c.InboundPort},
				Rule{Match: SocketUID{UID: c.ProxyUID}},
			)
		} else {
			out = append(out,
				Rule{Match: SocketUID{UID: c.ProxyUID}},
				Rule{Match: DestinationNet{Prefix: loopback[fam]}},
			)
		}
		for _, p := range outPorts {
			out = append(out, Rule{Match: DestinationPort{Port: p}})
		}
		for _, n := range nets {
			if n.Addr().Is4() == (fam == IPv4) {
				out = append(out, Rule{Match: DestinationNet{Prefix: n}})
			}
		}
		out = append(out, Rule{Match: AnyTCP{}, RedirectTo: c.OutboundPort})

		plan.Tables = append(plan.Tables, Table{Family: fam, Chains: []Chain{
			{Hook: Prerouting, Priority: natPriority, Rules: in},
			{Hook: Output, Priority: natPriority, Rules: out},
		}})
	}
	return plan, nil
}

// Only is the plan with only the table of family f.
func (p Plan) Only(f Family) Plan {
	var out Plan
	for _, t := range p.Tables {
		if t.Family == f {
			out.Tables = append(out.Tables, t)
		}
	}
	return out
}

// String is the plan as `nft list table` would print it, and as `nft -f`
// reads it.
func (p Plan) String() string {
	var b strings.Builder
	for _, t := range p.Tables {
		_, _ = fmt.Fprintf(&b, "table %s %s {\n", t.Family, TableName)
		for i, c := range t.Chains {
			if i > 0 {
				b.WriteString("\n")
			}
			_, _ = fmt.Fprintf(&b, "\tchain %s {\n", c.Name())
			_, _ = fmt.Fprintf(&b, "\t\ttype nat hook %s priority %d; policy accept;\n", c.Hook, c.Priority)
			for _, r := range c.Rules {
				_, _ = fmt.Fprintf(&b, "\t\t%s\n", r)
			}
			b.WriteString("\t}\n")
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// Summary is one line per chain for trellis-init's log, so that
// `kubectl logs -c trellis-init` says what was redirected and what was not.
func (p Plan) Summary() []string {
	var lines []string
	for _, t := range p.Tables {
		for _, c := range t.Chains {
			var to uint16
			var except, elsewhere []string
			for i, r := range c.Rules {
				switch {
				case i == len(c.Rules)-1:
					to = r.RedirectTo
				case r.RedirectTo != 0:
					elsewhere = append(elsewhere, fmt.Sprintf("%s to port %d", r.Match.describe(), r.RedirectTo))
				default:
					except = append(except, r.Match.describe())
				}
			}
			dir := "inbound"
			if c.Hook == Output {
				dir = "outbound"
			}
			line := fmt.Sprintf("table %s %s, chain %s: %s TCP goes to port %d", t.Family, TableName, c.Name(), dir, to)
			if len(except) > 0 {
				line += ", except " + strings.Join(except, ", ")
			}
			if len(elsewhere) > 0 {
				line += "; " + strings.Join(elsewhere, "; ")
			}
			lines = append(lines, line)
		}
	}
	return lines
}

func sortedUnique[T comparable](s []T, compare func(a, b T) int) []T {
	s = slices.Clone(s)
	slices.SortFunc(s, compare)
	return slices.Compact(s)
}

// comparePrefixes orders IPv4 before IPv6, then by address and length.
func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}
