package forward

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h,
// which x/sys/unix does not export; it has SO_ORIGINAL_DST's number, at
// level SOL_IPV6.
const ip6tSOOriginalDst = 80

// ErrNoOriginalDestination means conntrack has no record of c's original
// destination: c was not redirected, or conntrack is not running in the
// network namespace (no nat rules load it).
var ErrNoOriginalDestination = errors.New("conntrack has no original destination for the connection")

// OriginalDestination is where c was going before netfilter redirected it
// to the proxy. Conntrack keeps the connection's original tuple, and
// getsockopt SO_ORIGINAL_DST (IP6T_SO_ORIGINAL_DST for IPv6) reads it back.
// A connection that was not redirected has its own local address as its
// original destination, or none at all.
func OriginalDestination(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("a %T has no socket to ask for its original destination", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	// An IPv4 connection accepted on a dual-stack socket has an
	// IPv4-mapped local address; conntrack tracks it as IPv4.
	v4 := addrPortOf(c.LocalAddr()).Addr().Is4()
	var dst netip.AddrPort
	var sockErr error
	err = raw.Control(func(fd uintptr) {
		if v4 {
			var sa unix.RawSockaddrInet4
			sockErr = getsockopt(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), unsafe.Sizeof(sa))
			dst = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port))
			return
		}
		var sa unix.RawSockaddrInet6
		sockErr = getsockopt(fd, unix.SOL_IPV6, ip6tSOOriginalDst, unsafe.Pointer(&sa), unsafe.Sizeof(sa))
		dst = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), ntohs(sa.Port))
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	if errors.Is(sockErr, unix.ENOENT) {
		return netip.AddrPort{}, ErrNoOriginalDestination
	}
	if sockErr != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w", sockErr)
	}
	return dst, nil
}

func getsockopt(fd uintptr, level, name int, val unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), uintptr(name), uintptr(val), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// ntohs reads a port as the kernel stores it in a sockaddr: big-endian.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// addrPortOf is a TCP address as a netip.AddrPort, IPv4-mapped IPv6
// addresses unmapped; the zero value for anything else.
func addrPortOf(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
