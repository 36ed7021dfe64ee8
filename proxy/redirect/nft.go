package redirect

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Apply writes the plan's tables in one netlink transaction: either every
// table is replaced or nothing changes. Running it again with the same plan
// leaves the same rules, not twice as many, so a restarted trellis-init is
// harmless.
func Apply(c *nftables.Conn, p Plan) error {
	for _, t := range p.Tables {
		table := &nftables.Table{Name: TableName, Family: t.Family.nft()}
		// Adding a table that exists is no error but deleting one that
		// does not is, and one error aborts the whole transaction: so add,
		// delete, then add again, nft's own idiom for "replace".
		c.AddTable(table)
		c.DelTable(table)
		c.AddTable(table)
		for _, ch := range t.Chains {
			chain := c.AddChain(&nftables.Chain{
				Name:     ch.Name(),
				Table:    table,
				Type:     nftables.ChainTypeNAT,
				Hooknum:  ch.Hook.nft(),
				Priority: nftables.ChainPriorityRef(nftables.ChainPriority(ch.Priority)),
			})
			for _, r := range ch.Rules {
				c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: r.Exprs(t.Family)})
			}
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("writing tables %s to netfilter: %w", familyNames(p), err)
	}
	return nil
}

// Exprs are the rule's nftables expressions in a table of family f, as nft
// itself would write the rule (see String).
func (r Rule) Exprs(f Family) []expr.Any {
	e := append(matchExprs(f, r.Match), &expr.Counter{})
	if r.RedirectTo == 0 {
		return append(e, &expr.Verdict{Kind: expr.VerdictReturn})
	}
	return append(e,
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(r.RedirectTo)},
		&expr.Redir{RegisterProtoMin: 1, RegisterProtoMax: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
	)
}

func matchExprs(f Family, m Match) []expr.Any {
	switch m := m.(type) {
	case AnyTCP:
		return tcp()
	case InputInterface:
		return ifname(expr.MetaKeyIIFNAME, m.Name)
	case OutputInterface:
		return ifname(expr.MetaKeyOIFNAME, m.Name)
	case SocketUID:
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(m.UID)},
		}
	case DestinationPort:
		return append(tcp(),
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(m.Port)},
		)
	case DestinationNet:
		return addr(f, true, m.Prefix)
	case SourceNet:
		return addr(f, false, m.Prefix)
	case All:
		var e []expr.Any
		for _, x := range m {
			e = append(e, matchExprs(f, x)...)
		}
		return e
	}
	panic(fmt.Sprintf("redirect: no expressions for match %T", m))
}

// ifname compares an interface name; the kernel compares the whole
// IFNAMSIZ buffer, NUL-padded.
func ifname(key expr.MetaKey, n string) []expr.Any {
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, n)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
	}
}

func tcp() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
}

// addr loads the destination (or source) address and compares its first
// Bits bits.
func addr(f Family, destination bool, prefix netip.Prefix) []expr.Any {
	offset, size := uint32(12), uint32(4) // in the IPv4 header
	if f == IPv6 {
		offset, size = 8, 16
	}
	if destination {
		offset += size
	}
	p := prefix.Masked()
	e := []expr.Any{&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size}}
	if p.Bits() < int(size*8) {
		mask := make([]byte, size)
		for i := range p.Bits() {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: mask, Xor: make([]byte, size)})
	}
	return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()})
}

func (f Family) nft() nftables.TableFamily {
	if f == IPv6 {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

func (h Hook) nft() *nftables.ChainHook {
	if h == Output {
		return nftables.ChainHookOutput
	}
	return nftables.ChainHookPrerouting
}

func familyNames(p Plan) string {
	s := ""
	for i, t := range p.Tables {
		if i > 0 {
			s += " and "
		}
		s += t.Family.String() + " " + TableName
	}
	return s
}
