package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/controlplane/traffic"
	"github.com/trellis-mesh/trellis/version"
)

// certWarning is how close to its expiry a proxy's certificate is called
// out. Workload certificates live 24 h and are renewed at half life, so one
// with less than an hour left has missed its renewal many times.
const certWarning = time.Hour

// proxyStatusJSON is proxy-status's -o json.
type proxyStatusJSON struct {
	// ExpectedVersion is the proxy version the Mesh asks for, against which
	// outdated is judged.
	ExpectedVersion string `json:"expectedVersion"`
	// ExpectedFrom says where it came from: "Mesh spec.proxy.version",
	// "Mesh control plane image", "--proxy-version" or "trellisctl".
	ExpectedFrom string       `json:"expectedFrom"`
	Proxies      []proxyEntry `json:"proxies"`
}

type proxyEntry struct {
	traffic.ProxyStatus
	// Outdated is true when the proxy runs another version than expected.
	Outdated bool `json:"outdated"`
	// Problems says what is wrong with the proxy, one sentence each; empty when nothing is.
	Problems []string `json:"problems"`
}

func newProxyStatusCommand(o *options) *cobra.Command {
	var (
		allNamespaces bool
		want          string
	)
	cmd := &cobra.Command{
		Use:     "proxy-status",
		Aliases: []string{"ps"},
		Short:   "Each proxy's version, certificate expiry and config freshness",
		Long: `Show every proxy that reported to the Mesh's control plane in the last
5 minutes, or is connected to it now:

  POD, WORKLOAD  the proxy's pod and the workload that owns it
  VERSION        the proxy's version
  CERT_EXPIRES   how long its workload certificate stays valid (24h
                 certificates, renewed at half life: under 12h means renewal
                 is late; under 1h, STATUS says it was not renewed)
  CONFIG_AGE     how long since the control plane last sent it configuration
                 on any of its discovery streams (STREAMS); "-" when never
  LAST_REPORT    how long since its last traffic report (every 10s)
  STATUS         ok, or what is wrong: an outdated version, a certificate
                 about to expire, a proxy no longer connected

A proxy is outdated when its version differs from the one the Mesh asks for:
spec.proxy.version, else the version of the Mesh's control plane image (the
operator deploys proxies and control plane at one version), else trellisctl's
own version; --proxy-version overrides all. Restart an outdated workload with
kubectl rollout restart (or set the Mesh's updateStrategy to RollingRestart).

-o json prints {"expectedVersion", "expectedFrom", "proxies": [the control
plane API's ProxyStatus ("namespace", "pod", "workload", "workloadKind",
"identity", "version", "certNotAfter", "lastConfigAt", "streams",
"lastReportAt", "connected", "droppedReports") with "outdated" and
"problems" added]}, sorted by namespace and pod.`,
		Example: `  # The proxies of shop
  trellisctl proxy-status -n shop

  # Every proxy, judged against v0.2.0
  trellisctl proxy-status -A --proxy-version v0.2.0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cp, err := o.connectControlPlane(ctx)
			if err != nil {
				return err
			}
			defer cp.Close()
			ns := o.ns()
			if allNamespaces {
				ns = ""
			}
			proxies, _, err := cp.proxies(ctx, ns)
			if err != nil {
				return err
			}
			expected, from := want, "--proxy-version"
			if want == "" {
				expected, from = o.expectedProxyVersion(ctx)
			}
			out := proxyStatusJSON{ExpectedVersion: expected, ExpectedFrom: from, Proxies: judgeProxies(proxies, expected, time.Now())}
			if o.output == "json" {
				return writeJSON(o.stdout, out)
			}
			return o.printProxies(out, allNamespaces, time.Now())
		},
	}
	cmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, "show every namespace (adds a NAMESPACE column)")
	cmd.Flags().StringVar(&want, "proxy-version", "", "the version proxies should run; by default the Mesh's")
	return cmd
}

// expectedProxyVersion is the proxy version the Mesh asks for, and where
// that came from. Without a cluster (--control-plane-url alone), it is
// trellisctl's own version.
func (o *options) expectedProxyVersion(ctx context.Context) (string, string) {
	cl, err := o.clients()
	if err != nil {
		return version.Version, "trellisctl"
	}
	mesh, err := cl.getMesh(ctx, o.mesh)
	if err != nil {
		return version.Version, "trellisctl"
	}
	return meshProxyVersion(mesh)
}

// meshProxyVersion is the proxy version mesh asks for: spec.proxy.version,
// else the tag of the control plane image the operator deployed (one image
// and one version for all of Trellis), else trellisctl's.
func meshProxyVersion(mesh *meshv1.Mesh) (string, string) {
	if v := mesh.Spec.Proxy.Version; v != "" {
		return v, "Mesh spec.proxy.version"
	}
	if tag := imageTag(mesh.Status.ControlPlane.Image); tag != "" {
		return tag, "Mesh control plane image"
	}
	return version.Version, "trellisctl"
}

// imageTag is the tag of an image reference; "" for none or a digest.
func imageTag(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		return ref[i+1:]
	}
	return ""
}

func judgeProxies(proxies []traffic.ProxyStatus, expected string, now time.Time) []proxyEntry {
	out := make([]proxyEntry, 0, len(proxies))
	for _, p := range proxies {
		e := proxyEntry{ProxyStatus: p, Problems: []string{}}
		if expected != "" && p.Version != expected {
			e.Outdated = true
			e.Problems = append(e.Problems, fmt.Sprintf("outdated: runs %s, the Mesh wants %s", p.Version, expected))
		}
		switch left := p.CertNotAfter.Sub(now); {
		case p.CertNotAfter.IsZero():
		case left <= 0:
			e.Problems = append(e.Problems, fmt.Sprintf("certificate expired %s ago", fmtAge(-left)))
		case left < certWarning:
			e.Problems = append(e.Problems, fmt.Sprintf("certificate expires in %s and was not renewed", fmtAge(left)))
		}
		if !p.Connected {
			e.Problems = append(e.Problems, fmt.Sprintf("not connected; last report %s ago", fmtAge(now.Sub(p.LastReportAt))))
		}
		out = append(out, e)
	}
	return out
}

func (o *options) printProxies(out proxyStatusJSON, allNamespaces bool, now time.Time) error {
	if len(out.Proxies) == 0 {
		_, err := fmt.Fprintln(o.stderr, "No proxy has reported to the control plane.")
		return err
	}
	header := []string{"POD", "WORKLOAD", "VERSION", "CERT_EXPIRES", "CONFIG_AGE", "STREAMS", "LAST_REPORT", "STATUS"}
	if allNamespaces {
		header = append([]string{"NAMESPACE"}, header...)
	}
	if o.output == "wide" {
		header = append(header, "IDENTITY", "DROPPED_REPORTS")
	}
	t := newTable(o.stdout, header...)
	for _, p := range out.Proxies {
		cert := "-"
		if !p.CertNotAfter.IsZero() {
			cert = fmtAge(p.CertNotAfter.Sub(now))
		}
		cfg := "-"
		if p.LastConfigAt != nil {
			cfg = fmtAge(now.Sub(*p.LastConfigAt))
		}
		status := "ok"
		if len(p.Problems) > 0 {
			status = strings.Join(p.Problems, "; ")
		}
		cells := []string{p.Pod, orDash(p.Workload), orDash(p.Version), cert, cfg, fmt.Sprint(p.Streams), fmtAge(now.Sub(p.LastReportAt)), status}
		if allNamespaces {
			cells = append([]string{p.Namespace}, cells...)
		}
		if o.output == "wide" {
			cells = append(cells, orDash(p.Identity), fmtCount(p.DroppedReports))
		}
		t.row(cells...)
	}
	if err := t.flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(o.stderr, "\nExpected proxy version %s (from %s).\n", out.ExpectedVersion, out.ExpectedFrom)
	return err
}
