// Package redirect is what trellis-init writes into a pod's network
// namespace so that the pod's TCP traffic reaches the proxy: nftables rules
// that redirect inbound connections to the proxy's inbound port and the
// app's outbound connections to its outbound port, except for the proxy's
// own connections and the ports and networks the pod opts out of.
//
// The rules are computed as a Plan, a plain value with no I/O, so that what
// trellis-init does can be read and tested without a kernel; Apply is the
// only code that talks to netfilter. Trellis's image has no iptables or nft
// binary, so Apply speaks nftables' netlink protocol itself.
//
// This package must not touch anything outside the tables it names (table
// trellis in families ip and ip6): the pod's netns may hold the CNI's rules.
package redirect
