package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"runtime"
	"time"

	"github.com/spf13/cobra"
)

func newDashboardCommand(o *options) *cobra.Command {
	var (
		port      int
		noBrowser bool
	)
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Open the mesh's web dashboard: the service graph and its golden metrics",
		Long: `Port-forward to a replica of the Mesh's control plane (its HTTP port, 15014),
print the dashboard's local URL and open it in the default browser (xdg-open
or open), then keep the port-forward until Ctrl-C.

The page draws the service graph: workloads as nodes, their calls as edges
labeled with requests per second, success rate and p99 latency, green at 99%
success or more, amber from 95%, red below; tables of workloads and proxies
under it; it refreshes itself every 2 seconds. It needs no Prometheus: it
reads the same API as trellisctl stat.

The replica that serves the page answers for the whole mesh: it asks the
other replicas for their proxies' traffic. When one does not answer, the page
says so above the graph, and shows the rest.`,
		Example: `  # Open the dashboard
  trellisctl dashboard

  # On a machine without a browser, on a fixed port
  trellisctl dashboard --no-browser --port 50750`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cp, err := o.connectControlPlaneOn(ctx, port)
			if err != nil {
				return err
			}
			defer cp.Close()
			url := cp.base + "/"
			if err := waitAnswers(ctx, url); err != nil {
				return err
			}
			_, _ = fmt.Fprintf(o.stdout, "Trellis dashboard: %s\n", url)
			if !noBrowser {
				if err := openBrowser(url); err != nil {
					_, _ = fmt.Fprintf(o.stderr, "Could not open a browser (%v): open the URL yourself.\n", err)
				}
			}
			_, _ = fmt.Fprintln(o.stderr, "Press Ctrl-C to stop.")
			<-ctx.Done()
			return nil
		},
	}
	cmd.Flags().IntVar(&port, "port", 0, "local port to listen on (0: any free port)")
	cmd.Flags().BoolVar(&noBrowser, "no-browser", false, "print the URL without opening a browser")
	return cmd
}

// waitAnswers checks that the page answers before the URL is handed out.
func waitAnswers(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("the dashboard at %s does not answer: %w", url, err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the dashboard at %s answered %s: the control plane may predate the dashboard; upgrade the Mesh", url, resp.Status)
	}
	return nil
}

// openBrowser opens url in the desktop's default browser, without waiting.
func openBrowser(url string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", url)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", url)
	default:
		cmd = exec.Command("xdg-open", url)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }()
	return nil
}
