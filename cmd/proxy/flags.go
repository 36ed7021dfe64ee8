package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/trellis-mesh/trellis/sidecar"
)

// newFlagSet is a subcommand's flag set. It returns errors rather than
// exiting; parse reports them.
func newFlagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("proxy "+name, flag.ContinueOnError)
	fs.Usage = func() {
		_, _ = fmt.Fprintf(fs.Output(), "Usage: proxy %s [flags]\n\n%s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args. -h prints the usage to stdout; a bad flag, or an
// argument that is not a flag (which would otherwise be ignored), gets one
// line on stderr that says what is wrong, not the whole usage.
func parse(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fs.Usage()
		return err
	}
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q: this subcommand takes only flags", fs.Arg(0))
	}
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "%s: %v\nRun \"%s -h\" for its flags.\n", fs.Name(), err, fs.Name())
	}
	return err
}

// exitCode is the exit code for a flag parsing error.
func exitCode(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return exitUsage
}

// The flag package reports a Set error as
// `invalid value "x" for flag -name: <error>`, so the errors below say what
// is wrong with the value and how to write it.

// portFlag is a TCP port number.
type portFlag uint16

func (p *portFlag) String() string { return strconv.Itoa(int(*p)) }

func (p *portFlag) Set(s string) error {
	n, err := parsePort(s)
	*p = portFlag(n)
	return err
}

// portList is a comma-separated list of ports; given twice, the lists add up.
type portList []uint16

func (l *portList) String() string {
	s := make([]string, len(*l))
	for i, p := range *l {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

func (l *portList) Set(v string) error {
	for _, s := range sidecar.SplitList(v) {
		p, err := parsePort(s)
		if err != nil {
			return fmt.Errorf("%w; write comma-separated ports such as 15020,9090", err)
		}
		*l = append(*l, p)
	}
	return nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	return uint16(n), nil
}

// uidFlag is a user ID.
type uidFlag uint32

func (u *uidFlag) String() string { return strconv.FormatUint(uint64(*u), 10) }

func (u *uidFlag) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return fmt.Errorf("%q is not a user ID; give a number such as 2102", s)
	}
	*u = uidFlag(n)
	return nil
}

// cidrList is a comma-separated list of networks, IPv4 and IPv6 mixed. As
// in the injector, a bare address is a network of one and host bits are
// dropped (10.1.2.3/8 is 10.0.0.0/8).
type cidrList []netip.Prefix

func (l *cidrList) String() string {
	s := make([]string, len(*l))
	for i, p := range *l {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (l *cidrList) Set(v string) error {
	for _, s := range sidecar.SplitList(v) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil || a.Zone() != "" {
				return fmt.Errorf("%q is not a network; write comma-separated networks such as 10.0.0.0/8,169.254.169.254/32,fd00::/8", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		*l = append(*l, p.Masked())
	}
	return nil
}

// addrList is a comma-separated list of listen addresses, host:port, where
// the host is an IP address or empty for every address of both families.
type addrList []string

func (l *addrList) String() string { return strings.Join(*l, ",") }

func (l *addrList) Set(v string) error {
	var out []string
	for _, s := range sidecar.SplitList(v) {
		host, port, err := net.SplitHostPort(s)
		if err == nil {
			_, err = strconv.ParseUint(port, 10, 16)
		}
		if err == nil && host != "" {
			_, err = netip.ParseAddr(host)
		}
		if err != nil {
			return fmt.Errorf("%q is not a listen address; write ip:port or :port, such as 0.0.0.0:15001,[::]:15001", s)
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return errors.New("no address; write ip:port or :port, such as 0.0.0.0:15001")
	}
	// Unlike the lists above, the default is replaced, not added to.
	*l = out
	return nil
}
