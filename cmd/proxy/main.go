// Command proxy is Trellis's sidecar, installed in the image as
// /usr/local/bin/proxy. The injector runs it twice in every meshed pod:
//
//	proxy init        in the trellis-init container: redirect the pod's TCP
//	                  traffic to the proxy's ports with nftables, then exit
//	proxy run         in the trellis-proxy container: the proxy itself
//	proxy wait-ready  the trellis-proxy container's postStart hook when the
//	                  app must wait for its proxy (sidecars as regular containers)
//
// proxy run gets the pod's certificate from the control plane, asks it
// about each destination the app dials, and carries mesh traffic in mutual
// TLS; see package proxy for its parts.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/trellis-mesh/trellis/version"
)

func main() {
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage: proxy <subcommand> [flags]

Trellis's sidecar proxy. Subcommands:
  init        write the pod's traffic redirection (nftables), then exit
  run         run the proxy: outbound and inbound forwarding and the admin endpoint
  wait-ready  wait until the proxy's /ready answers 200
  version     print the version

"proxy <subcommand> -h" lists a subcommand's flags.
`

// Exit codes: 2 for a command line that cannot be used, 1 for a failure.
const (
	exitFailure = 1
	exitUsage   = 2
)

// cli runs the subcommand that args name and returns the exit code.
func cli(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		_, _ = fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch sub, rest := args[0], args[1:]; sub {
	case "init":
		return initCmd(rest, stdout, stderr)
	case "run":
		return runCmd(rest, stdout, stderr)
	case "wait-ready":
		return waitReadyCmd(rest, stdout, stderr)
	case "version":
		_, _ = fmt.Fprintln(stdout, version.Version)
		return 0
	case "help", "-h", "-help", "--help":
		_, _ = fmt.Fprint(stdout, usage)
		return 0
	default:
		_, _ = fmt.Fprintf(stderr, "proxy: unknown subcommand %q\n\n%s", sub, usage)
		return exitUsage
	}
}
