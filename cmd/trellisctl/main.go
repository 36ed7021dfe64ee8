// Command trellisctl is Trellis's command line, also run as the kubectl
// plugin `kubectl trellis` (the same binary installed as kubectl-trellis).
//
//	trellisctl check [--pre]            is the mesh healthy? (exit 1 when not)
//	trellisctl stat [deploy|svc|route]  golden metrics per workload, Service or route
//	trellisctl top                      the busiest routes, live
//	trellisctl edges                    who calls whom, with identities and mTLS
//	trellisctl proxy-status             each proxy's version, certificate and config
//	trellisctl dashboard                the control plane's web page, port-forwarded
//	trellisctl inject -f deploy.yaml    the admission webhook's injection, offline
//
// The traffic commands read the control plane's JSON API (package
// controlplane/traffic) through a port-forward to one of its replicas, as
// kubectl port-forward does: each replica answers for the whole mesh, and
// says when an answer misses another replica.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/version"
)

// pluginName is the binary's name that makes kubectl run it as `kubectl trellis`.
const pluginName = "kubectl-trellis"

// errSilent is returned by a command that has already said what went wrong
// (check's report): main exits 1 without printing it again.
var errSilent = errors.New("")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := newRootCommand(filepath.Base(os.Args[0]), os.Stdin, os.Stdout, os.Stderr)
	if err := cmd.ExecuteContext(ctx); err != nil {
		if !errors.Is(err, errSilent) {
			_, _ = fmt.Fprintln(os.Stderr, "Error:", err)
		}
		os.Exit(1)
	}
}

// displayName is how the usage names the command: `kubectl trellis` when
// kubectl runs the binary as its plugin.
func displayName(argv0 string) string {
	if strings.HasPrefix(argv0, pluginName) {
		return "kubectl trellis"
	}
	return "trellisctl"
}

// newRootCommand builds the command tree. argv0 is the binary's base name;
// tests pass their own streams.
func newRootCommand(argv0 string, stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	o := &options{stdout: stdout, stderr: stderr}
	name := displayName(argv0)
	root := &cobra.Command{
		Use:   "trellisctl",
		Short: "Trellis's command line: check the mesh, see its traffic, inject sidecars",
		Long: `trellisctl checks a Trellis mesh, shows its traffic and injects sidecars offline.

The traffic commands (stat, top, edges, proxy-status, dashboard) read the
golden metrics that the proxies report to the Mesh's control plane. They
port-forward to a ready control plane replica (port 15014) of the Mesh named
by --mesh, as kubectl port-forward does, so they need the rights to list pods
in the mesh namespace and to create pods/portforward there. Each proxy
reports to one replica; the replica asked answers for the whole mesh (it
asks the others), and a warning says when one of them did not answer.

Numbers cover a window (--window, 10s to 5m, default 1m) of what the proxies
reported; they report every 10 seconds, so the last seconds are not yet in.

Every table command also prints JSON with -o json; its shape is the control
plane API's (controlplane/traffic/api.go) and changes only by added fields.`,
		Example: `  # Is the mesh healthy? Exit status 1 when a check fails.
  trellisctl check

  # Success rate, requests per second and latency of the workloads of shop
  trellisctl stat -n shop

  # Who calls whom in shop, with their identities and whether mTLS was used
  trellisctl edges -n shop`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: name},
		// Interspersed flags and args are what kubectl users expect.
		Args: cobra.NoArgs,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)

	pf := root.PersistentFlags()
	pf.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; $KUBECONFIG or ~/.kube/config when empty")
	pf.StringVar(&o.context, "context", "", "kubeconfig context to use instead of the current one")
	pf.StringVarP(&o.namespace, "namespace", "n", "", "namespace to show; the context's namespace, or default, when empty")
	pf.StringVarP(&o.output, "output", "o", "table", "output format: table, wide (more columns) or json")
	pf.StringVar(&o.mesh, "mesh", meshv1.DefaultMeshName, "name of the Mesh whose control plane and webhook to use")
	pf.StringSliceVar(&o.controlPlaneURLs, "control-plane-url", nil,
		"base URL of a control plane replica's HTTP port (http://host:15014); skips finding and port-forwarding to its pods (the first is used when repeated)")
	_ = pf.MarkHidden("control-plane-url")
	pf.DurationVar(&o.requestTimeout, "request-timeout", defaultRequestTimeout, "how long to wait for each answer of the API server or the control plane")

	_ = root.RegisterFlagCompletionFunc("namespace", o.completeNamespaces)
	_ = root.RegisterFlagCompletionFunc("mesh", o.completeMeshes)
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "wide", "json"}, cobra.ShellCompDirectiveNoFileComp))
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		switch o.output {
		case "table", "wide", "json":
			return nil
		}
		return fmt.Errorf("--output %q: use table, wide or json", o.output)
	}

	root.AddCommand(
		newCheckCommand(o),
		newStatCommand(o),
		newTopCommand(o),
		newEdgesCommand(o),
		newProxyStatusCommand(o),
		newDashboardCommand(o),
		newInjectCommand(o),
		newVersionCommand(o),
	)
	// cobra adds `completion bash|zsh|fish|powershell` itself; its help
	// names the command as the user runs it.
	root.CompletionOptions.HiddenDefaultCmd = false
	if name != "trellisctl" {
		renameExamples(root, name)
	}
	return root
}

// renameExamples makes the help's examples read as the user runs the
// command: `kubectl trellis stat`, when run as the kubectl plugin.
func renameExamples(cmd *cobra.Command, name string) {
	cmd.Example = strings.ReplaceAll(cmd.Example, "trellisctl ", name+" ")
	cmd.Long = strings.ReplaceAll(cmd.Long, "trellisctl ", name+" ")
	for _, sub := range cmd.Commands() {
		renameExamples(sub, name)
	}
}

func newVersionCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print trellisctl's version",
		Long: `Print trellisctl's version: the version of the proxies and the control plane
it was released with, against which proxy-status and check judge a proxy old.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(o.stdout, version.Version)
			return err
		},
	}
}
