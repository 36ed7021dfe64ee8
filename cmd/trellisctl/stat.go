package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/trellis-mesh/trellis/controlplane/traffic"
)

// resourceKinds maps what users type (kubectl's names and short names) to
// the stat API's by parameter.
var resourceKinds = map[string]string{
	"workload": traffic.KindWorkload, "workloads": traffic.KindWorkload, "wl": traffic.KindWorkload,
	"deploy": traffic.KindWorkload, "deployment": traffic.KindWorkload, "deployments": traffic.KindWorkload,
	"sts": traffic.KindWorkload, "statefulset": traffic.KindWorkload, "statefulsets": traffic.KindWorkload,
	"ds": traffic.KindWorkload, "daemonset": traffic.KindWorkload, "daemonsets": traffic.KindWorkload,
	"svc": traffic.KindService, "service": traffic.KindService, "services": traffic.KindService,
	"route": traffic.KindRoute, "routes": traffic.KindRoute, "rt": traffic.KindRoute,
	"httproute": traffic.KindRoute, "httproutes": traffic.KindRoute, "grpcroute": traffic.KindRoute, "grpcroutes": traffic.KindRoute,
}

// trafficFlags are the flags every traffic table takes.
type trafficFlags struct {
	allNamespaces bool
	window        string
}

func (f *trafficFlags) register(cmd *cobra.Command, window string) {
	cmd.Flags().BoolVarP(&f.allNamespaces, "all-namespaces", "A", false, "show every namespace (adds a NAMESPACE column)")
	cmd.Flags().StringVar(&f.window, "window", window, "how far back to look: 10s to 5m, in steps of 10s")
}

// namespace is the API's namespace parameter: empty for all.
func (f *trafficFlags) namespace(o *options) string {
	if f.allNamespaces {
		return ""
	}
	return o.ns()
}

func newStatCommand(o *options) *cobra.Command {
	var (
		tf trafficFlags
		by string
	)
	cmd := &cobra.Command{
		Use:   "stat [deploy|svc|route] [NAME]",
		Short: "Success rate, requests per second and latency per workload, Service or route",
		Long: `Show the golden metrics of each workload (the default), Service or route of a
namespace over the last --window, as the mesh's proxies measured them.

  NAME         the Deployment (StatefulSet, DaemonSet, or bare pod), the
               Service, or the HTTPRoute/GRPCRoute
  MESHED       for a workload, how many of its pods' proxies reported; for a
               Service or route, how many pods answered its requests
  SUCCESS      share of requests that succeeded: not 5xx for HTTP; for gRPC
               not UNKNOWN, DEADLINE_EXCEEDED, INTERNAL or UNAVAILABLE
  RPS          requests per second over the window
  LATENCY_P50  median time from the request's arrival at the proxy to the end
  LATENCY_P95  of its response; 95th and 99th percentiles next to it
  LATENCY_P99
  TCP_CONN     opaque TCP connections relayed (not counted as requests)

Whose view counts: a workload's row is what its own proxies served, from every
caller, meshed or not; a Service's or a route's is what the meshed callers'
proxies sent to it. "-" means no requests in the window. -o wide adds the
workload's kind, the requests and the body bytes in each direction.

Percentiles are read from the proxies' latency histograms, added up across
the mesh: within 5% of the requests' own. With several control plane
replicas, the one asked answers for all (each proxy reports to one); a
warning says when a replica did not answer and its proxies are missing.

-o json prints the control plane API's StatResponse (controlplane/traffic):
{"window": "1m0s", "rows": [{"kind", "namespace", "name", "workloadKind",
"meshedPods", "requests", "rps", "successRate" (0 to 1, absent without
requests), "latencyMs": {"p50", "p95", "p99"}, "latencyHistogram":
{"boundsMs", "counts", "overflow"}, "bytesIn", "bytesOut",
"tcpConnections"}], "replicas": [{"name", "answered", "error"}], "partial",
"message"}, rows sorted by namespace and name.`,
		Example: `  # The workloads of shop
  trellisctl stat -n shop

  # One Deployment, over the last 5 minutes
  trellisctl stat deploy converter -n shop --window 5m

  # Services and routes of every namespace
  trellisctl stat svc -A
  trellisctl stat route -A -o json`,
		Args: cobra.MaximumNArgs(2),
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return []string{"deploy", "svc", "route"}, cobra.ShellCompDirectiveNoFileComp
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			kind := traffic.KindWorkload
			if by != "" {
				k, ok := resourceKinds[strings.ToLower(by)]
				if !ok {
					return fmt.Errorf("--by %q: use workload, service or route", by)
				}
				kind = k
			}
			var name string
			if len(args) > 0 {
				k, ok := resourceKinds[strings.ToLower(args[0])]
				if !ok {
					return fmt.Errorf("%q is not a kind stat knows: use deploy (workload), svc or route", args[0])
				}
				if by != "" && k != kind {
					return fmt.Errorf("stat %s and --by %s disagree: give one", args[0], by)
				}
				kind = k
			}
			if len(args) > 1 {
				name = args[1]
			}
			window, err := parseWindow(tf.window)
			if err != nil {
				return err
			}
			cp, err := o.connectControlPlane(cmd.Context())
			if err != nil {
				return err
			}
			defer cp.Close()
			resp, err := cp.stat(cmd.Context(), tf.namespace(o), kind, window)
			if err != nil {
				return err
			}
			if name != "" {
				resp.Rows = filterRows(resp.Rows, name)
				if len(resp.Rows) == 0 && o.output != "json" {
					return fmt.Errorf("no traffic of %s %s in the last %s (the name is the Deployment's, Service's or route's)", kind, name, window)
				}
			}
			return o.printStat(resp, tf.allNamespaces, kind)
		},
	}
	tf.register(cmd, shortDuration(traffic.DefaultWindow))
	cmd.Flags().StringVar(&by, "by", "", "what a row is: workload (default), service or route; same as the first argument")
	return cmd
}

func filterRows(rows []traffic.StatRow, name string) []traffic.StatRow {
	var out []traffic.StatRow
	for _, r := range rows {
		if r.Name == name {
			out = append(out, r)
		}
	}
	return out
}

// printStat prints stat rows; a row's kind picks its NAME's meaning.
func (o *options) printStat(resp traffic.StatResponse, allNamespaces bool, kind string) error {
	rows := resp.Rows
	if o.output == "json" {
		if resp.Rows == nil {
			resp.Rows = []traffic.StatRow{}
		}
		return writeJSON(o.stdout, resp)
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintf(o.stderr, "No traffic of any %s in the window.\n", kind)
		return err
	}
	wide := o.output == "wide"
	header := []string{"NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN"}
	if allNamespaces {
		header = append([]string{"NAMESPACE"}, header...)
	}
	if wide {
		header = append(header, "KIND", "REQUESTS", "BYTES_IN", "BYTES_OUT")
	}
	t := newTable(o.stdout, header...)
	for _, r := range rows {
		p50, p95, p99 := fmtLatency(r.LatencyMs)
		cells := []string{r.Name, fmt.Sprint(r.MeshedPods), fmtSuccess(r.SuccessRate), fmtRPS(r.RPS, r.Requests), p50, p95, p99, fmtCount(r.TCPConnections)}
		if allNamespaces {
			cells = append([]string{r.Namespace}, cells...)
		}
		if wide {
			k := r.WorkloadKind
			if r.Kind != traffic.KindWorkload {
				k = r.Kind
			}
			cells = append(cells, orDash(k), fmtCount(r.Requests), fmtCount(r.BytesIn), fmtCount(r.BytesOut))
		}
		t.row(cells...)
	}
	return t.flush()
}

func newTopCommand(o *options) *cobra.Command {
	var (
		tf       trafficFlags
		once     bool
		interval time.Duration
		limit    int
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "The busiest routes, refreshed live",
		Long: `Show the routes (HTTPRoutes and GRPCRoutes) that carry the most requests,
busiest first, with their success rate and latency, and redraw the table
every --interval until Ctrl-C, like top.

The proxies do not record paths (a map per path on the hot path would cost
every request), so a row is a route, not a path; use the route's matches to
split the traffic you want to see.

--window defaults to 10s here, so that the table follows what happens now.
With --once, or when standard output is not a terminal, the table is printed
once. Columns are stat's (see trellisctl stat --help), plus REQUESTS.

-o json prints, once, the control plane API's TopResponse:
{"window": "10s", "rows": [stat's rows, busiest first]}.`,
		Example: `  # Live, in shop
  trellisctl top -n shop

  # Once, every namespace, as JSON
  trellisctl top -A --once -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			window, err := parseWindow(tf.window)
			if err != nil {
				return err
			}
			if interval < time.Second {
				return fmt.Errorf("--interval %s: refresh at most once a second", interval)
			}
			ctx := cmd.Context()
			cp, err := o.connectControlPlane(ctx)
			if err != nil {
				return err
			}
			defer cp.Close()
			live := !once && o.output != "json" && isTerminal(o.stdout)
			for {
				resp, err := cp.top(ctx, tf.namespace(o), window)
				if err != nil {
					return err
				}
				if limit > 0 && len(resp.Rows) > limit {
					resp.Rows = resp.Rows[:limit]
				}
				if o.output == "json" {
					return writeJSON(o.stdout, resp)
				}
				if live {
					// Clear the screen and go home, then draw.
					_, _ = fmt.Fprint(o.stdout, "\x1b[H\x1b[2J")
					_, _ = fmt.Fprintf(o.stdout, "Busiest routes in %s over the last %s, at %s (Ctrl-C to quit)\n\n",
						nsLabel(tf.namespace(o)), window, time.Now().Format(time.TimeOnly))
				}
				if err := o.printTop(resp.Rows, tf.allNamespaces); err != nil {
					return err
				}
				if !live {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
	tf.register(cmd, shortDuration(traffic.MinWindow))
	cmd.Flags().BoolVar(&once, "once", false, "print the table once instead of refreshing it")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "how often to refresh")
	cmd.Flags().IntVar(&limit, "limit", 20, "show at most this many routes (0: all)")
	return cmd
}

func nsLabel(ns string) string {
	if ns == "" {
		return "all namespaces"
	}
	return "namespace " + ns
}

func (o *options) printTop(rows []traffic.StatRow, allNamespaces bool) error {
	if len(rows) == 0 {
		_, err := fmt.Fprintln(o.stdout, "No requests in the window.")
		return err
	}
	header := []string{"ROUTE", "REQUESTS", "RPS", "SUCCESS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"}
	if allNamespaces {
		header = append([]string{"NAMESPACE"}, header...)
	}
	t := newTable(o.stdout, header...)
	for _, r := range rows {
		p50, p95, p99 := fmtLatency(r.LatencyMs)
		cells := []string{r.Name, fmtCount(r.Requests), fmtRPS(r.RPS, r.Requests), fmtSuccess(r.SuccessRate), p50, p95, p99}
		if allNamespaces {
			cells = append([]string{r.Namespace}, cells...)
		}
		t.row(cells...)
	}
	return t.flush()
}

// isTerminal says whether w is a terminal, where top redraws.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
