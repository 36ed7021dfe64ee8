package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/controlplane/traffic"
)

func newEdgesCommand(o *options) *cobra.Command {
	var tf trafficFlags
	cmd := &cobra.Command{
		Use:   "edges",
		Short: "Who calls whom, with their identities and whether mTLS was used",
		Long: `Show each pair of workloads that talked over the last --window: the caller
(SRC in SRC_NS) and the callee (DST in DST_NS), the Service the caller
addressed, whether the traffic went in the mesh's mutual TLS (MTLS), and the
requests' rate, success and p99 latency.

CLIENT_ID and SERVER_ID are the SPIFFE identities the two proxies proved in
the TLS handshake: spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
An edge with traffic both in and out of mTLS is two rows, one for each.

A caller outside the mesh shows as SRC "-" with no CLIENT_ID: only the
callee's proxy saw it, and MTLS is "no". A callee outside the mesh has no
SERVER_ID. Check those rows when the Mesh's mTLS mode is Strict: they are
refused. -o wide adds the requests, the bytes of the request and response
bodies, and the opaque TCP connections.

-o json prints the control plane API's EdgesResponse (controlplane/traffic):
{"window": "1m0s", "edges": [{"source": {"namespace", "workload", "identity"},
"destination": {"namespace", "workload", "identity", "service"}, "requests",
"rps", "successRate", "latencyMs": {"p50", "p95", "p99"}, "mtls",
"bytesIn", "bytesOut", "tcpConnections"}]}, sorted by source, then destination.`,
		Example: `  # The calls into and out of shop
  trellisctl edges -n shop

  # Every namespace, as JSON
  trellisctl edges -A -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			window, err := parseWindow(tf.window)
			if err != nil {
				return err
			}
			cp, err := o.connectControlPlane(cmd.Context())
			if err != nil {
				return err
			}
			defer cp.Close()
			resp, err := cp.edges(cmd.Context(), tf.namespace(o), window)
			if err != nil {
				return err
			}
			return o.printEdges(resp)
		},
	}
	tf.register(cmd, shortDuration(traffic.DefaultWindow))
	return cmd
}

func (o *options) printEdges(resp traffic.EdgesResponse) error {
	if o.output == "json" {
		return writeJSON(o.stdout, resp)
	}
	if len(resp.Edges) == 0 {
		_, err := fmt.Fprintln(o.stderr, "No calls in the window.")
		return err
	}
	header := []string{"SRC", "DST", "SRC_NS", "DST_NS", "SERVICE", "MTLS", "RPS", "SUCCESS", "LATENCY_P99", "CLIENT_ID", "SERVER_ID"}
	wide := o.output == "wide"
	if wide {
		header = append(header, "REQUESTS", "REQUEST_BYTES", "RESPONSE_BYTES", "TCP_CONN")
	}
	t := newTable(o.stdout, header...)
	for _, e := range resp.Edges {
		_, _, p99 := fmtLatency(e.LatencyMs)
		mtls := "no"
		if e.MTLS {
			mtls = "yes"
		}
		cells := []string{
			orDash(e.Source.Workload), orDash(e.Destination.Workload), orDash(e.Source.Namespace), orDash(e.Destination.Namespace),
			orDash(e.Destination.Service), mtls, fmtRPS(e.RPS, e.Requests), fmtSuccess(e.SuccessRate), p99,
			orDash(e.Source.Identity), orDash(e.Destination.Identity),
		}
		if wide {
			cells = append(cells, fmtCount(e.Requests), fmtCount(e.BytesIn), fmtCount(e.BytesOut), fmtCount(e.TCPConnections))
		}
		t.row(cells...)
	}
	return t.flush()
}
