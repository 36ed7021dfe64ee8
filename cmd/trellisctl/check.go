package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// The outcome of one check.
type checkStatus string

const (
	statusOK      checkStatus = "ok"
	statusWarning checkStatus = "warning"
	statusError   checkStatus = "error"
)

// mark is how a status starts its line, as linkerd check prints them.
func (s checkStatus) mark() string {
	switch s {
	case statusOK:
		return "✓"
	case statusWarning:
		return "‼"
	}
	return "×"
}

// checkResult is one line of check's report, and its -o json.
type checkResult struct {
	// Name says what is checked, as a statement that holds when it passes.
	Name   string      `json:"name"`
	Status checkStatus `json:"status"`
	// Message says what was found.
	Message string `json:"message,omitempty"`
	// Details name the objects concerned, one per line.
	Details []string `json:"details,omitempty"`
	// Hint says how to fix a warning or an error.
	Hint string `json:"hint,omitempty"`
}

type checkGroup struct {
	Name   string        `json:"name"`
	Checks []checkResult `json:"checks"`
}

// checkReport is check's -o json.
type checkReport struct {
	Groups []checkGroup `json:"groups"`
	// Success is false when any check has status error; warnings do not count.
	Success  bool `json:"success"`
	Errors   int  `json:"errors"`
	Warnings int  `json:"warnings"`
}

// checker runs checks and reports them as they end.
type checker struct {
	o      *options
	ctx    context.Context
	now    time.Time
	report checkReport
	// live gets each line as it is decided; nil for -o json.
	live io.Writer

	minRequests uint64
	window      time.Duration

	// Learned by earlier checks, used by later ones.
	cl       *clients
	operator string // namespace/name of the operator's Deployment, for hints
}

func (c *checker) group(name string) {
	c.report.Groups = append(c.report.Groups, checkGroup{Name: name, Checks: []checkResult{}})
	if c.live != nil {
		if len(c.report.Groups) > 1 {
			_, _ = fmt.Fprintln(c.live)
		}
		_, _ = fmt.Fprintf(c.live, "%s\n%s\n", name, strings.Repeat("-", len([]rune(name))))
	}
}

func (c *checker) add(r checkResult) {
	g := &c.report.Groups[len(c.report.Groups)-1]
	g.Checks = append(g.Checks, r)
	switch r.Status {
	case statusError:
		c.report.Errors++
	case statusWarning:
		c.report.Warnings++
	}
	if c.live == nil {
		return
	}
	line := r.Status.mark() + " " + r.Name
	if r.Message != "" {
		line += ": " + r.Message
	}
	_, _ = fmt.Fprintln(c.live, line)
	for _, d := range r.Details {
		_, _ = fmt.Fprintln(c.live, "    "+d)
	}
	if r.Hint != "" && r.Status != statusOK {
		_, _ = fmt.Fprintln(c.live, "    fix: "+r.Hint)
	}
}

func (c *checker) ok(name, msg string) {
	c.add(checkResult{Name: name, Status: statusOK, Message: msg})
}

func (c *checker) warn(name, msg, hint string, details ...string) {
	c.add(checkResult{Name: name, Status: statusWarning, Message: msg, Hint: hint, Details: details})
}

func (c *checker) fail(name, msg, hint string, details ...string) {
	c.add(checkResult{Name: name, Status: statusError, Message: msg, Hint: hint, Details: details})
}

func newCheckCommand(o *options) *cobra.Command {
	var (
		pre         bool
		minRequests uint64
		window      string
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that the cluster can run Trellis, or that the installed mesh is healthy",
		Long: `Run health checks, grouped, one line each:

  ✓  the check passed
  ‼  a warning: the mesh works, but something needs attention soon
  ×  an error: something does not work

Under each warning and error, "fix:" says what to do about it.
The exit status is 1 when any check is an error; warnings do not fail.

With --pre, before installing: the API server is reachable and its version is
one Trellis supports, its clock agrees with this machine's, and you may
create what the installation creates (CRDs, namespaces, cluster roles,
webhook configurations).

Without --pre, after installing, for each Mesh (or the one named by --mesh):
  kubernetes-api  reachable, a supported version, clocks within 5s
  trellis-crds    Trellis's CRDs installed and established; the Gateway API's
                  route CRDs (a warning when missing: routing needs them)
  trellis-operator  the operator's Deployment is available
  mesh NAME       the Mesh's conditions (Ready, CAReady, ControlPlaneReady,
                  InjectorReady, DataPlaneUpToDate) with the reason of any
                  that is not True; the CA's root and issuer (intermediate)
                  certificates: an error when expired, a warning 60 days
                  before (or a sixth of their life, for shorter-lived ones);
                  the injection webhook: its caBundle parses and is valid,
                  and a TLS handshake with the webhook verifies against it
  data plane of mesh NAME
                  pods in namespaces labeled for the Mesh that have no
                  sidecar (created before the label, or while the webhook
                  was down): restart them; pods and proxies on another
                  proxy version than the Mesh's; and, from the control
                  plane's traffic API, every workload whose success rate
                  over the last --window is below 95% with at least
                  --min-requests requests, named with its namespace

-o json prints {"groups": [{"name", "checks": [{"name", "status" (ok,
warning or error), "message", "details", "hint"}]}], "success", "errors",
"warnings"}, in the order the checks ran.`,
		Example: `  # Before installing
  trellisctl check --pre

  # After installing: every Mesh, the data plane included
  trellisctl check

  # In a script
  trellisctl check -o json | jq '.groups[].checks[] | select(.status != "ok")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w, err := parseWindow(window)
			if err != nil {
				return err
			}
			c := &checker{o: o, ctx: cmd.Context(), now: time.Now(), minRequests: minRequests, window: w}
			if o.output != "json" {
				c.live = o.stdout
			}
			if pre {
				c.runPre()
			} else {
				c.runPost(cmd.Flags().Changed("mesh"))
			}
			c.report.Success = c.report.Errors == 0
			if o.output == "json" {
				if err := writeJSON(o.stdout, c.report); err != nil {
					return err
				}
			} else {
				_, _ = fmt.Fprintln(o.stdout)
				_, _ = fmt.Fprintln(o.stdout, summary(c.report))
			}
			if !c.report.Success {
				return errSilent
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&pre, "pre", false, "check that the cluster is ready for Trellis to be installed")
	cmd.Flags().Uint64Var(&minRequests, "min-requests", 10, "fewest requests in the window for a workload's success rate to count")
	cmd.Flags().StringVar(&window, "window", "1m", "how far back the workloads' success rates look: 10s to 5m")
	return cmd
}

func summary(r checkReport) string {
	switch {
	case r.Errors > 0:
		return fmt.Sprintf("Status check results are × (%d %s, %d %s)", r.Errors, plural(r.Errors, "error", "errors"), r.Warnings, plural(r.Warnings, "warning", "warnings"))
	case r.Warnings > 0:
		return fmt.Sprintf("Status check results are ✓ with %d %s", r.Warnings, plural(r.Warnings, "warning", "warnings"))
	}
	return "Status check results are ✓"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
