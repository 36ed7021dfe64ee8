// Command bundlevalidate validates Trellis's OLM bundle (registry+v1: manifests/,
// metadata/annotations.yaml, tests/scorecard/) the way
//
//	operator-sdk bundle validate <dir> --select-optional suite=operatorframework \
//	    --optional-values=k8s-version=<version>
//
// does, with operator-framework/api's validation library, since the
// operator-sdk binary cannot be installed here. It checks the bundle's format
// and annotations (as operator-registry does), the objects in manifests/ (as
// operator-sdk does), then runs the library's default bundle validators and the
// operatorframework suite. It prints one ERROR or WARNING line per finding,
// grouped by object, and a summary.
//
//	bundlevalidate [--k8s-version 1.37] <bundle dir>
//
// It exits 0 when there is no error and no warning, 1 when there is any (the
// bundle is to have neither), and 2 on bad usage or a bundle it cannot read.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/util/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the command without the process around it: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	// complain writes to stderr; when that fails there is nowhere to say so.
	complain := func(format string, a ...any) { _, _ = fmt.Fprintf(stderr, format+"\n", a...) }
	fs := flag.NewFlagSet("bundlevalidate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	k8sVersion := fs.String("k8s-version", defaultK8sVersion,
		"Kubernetes version the bundle must install on: APIs removed by then are errors (the validators' k8s-version optional value)")
	fs.Usage = func() {
		complain("usage: bundlevalidate [--k8s-version 1.37] <bundle dir>")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	if _, err := version.ParseGeneric(*k8sVersion); err != nil {
		complain("bundlevalidate: --k8s-version %q is not a Kubernetes version (e.g. 1.37 or v1.37.2): %v", *k8sVersion, err)
		return 2
	}
	report, err := Validate(fs.Arg(0), Options{K8sVersion: *k8sVersion})
	if err != nil {
		complain("bundlevalidate: %v", err)
		return 2
	}
	if err := report.Write(stdout); err != nil {
		complain("bundlevalidate: %v", err)
		return 2
	}
	if report.Errors() > 0 || report.Warnings() > 0 {
		return 1
	}
	return 0
}
